"""The Kubernetes manifests (deploy/kubernetes) and docker-compose.yml, checked against the code.

What a person editing them would break: a file not listed in a kustomization, a probe on the
wrong port, a grace period shorter than the router's own shutdown bound, a topic a workspace
needs with no KafkaTopic, a KEDA trigger on a consumer group the router does not use. The
workspace, topic names, consumer groups and CLI flags come from the project's own code, so a
change there that the manifests do not follow fails here. When kubectl (or kustomize) is on the
PATH, the base and the production overlay are also built and their output checked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.broker.topics import Topics
from router.cli import build_parser
from router.config import Workspace
from router.ops.console import state_path
from router.workspace import ENV_REF, load_workspace

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
PRODUCTION = K8S / "overlays" / "production"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
#: Every workload of the base: (kind, name) -> the router command it runs.
ROLES = {
    ("StatefulSet", "event-router-processor"): "process",
    ("Deployment", "event-router-deliver"): "deliver",
    ("Deployment", "event-router-gateway"): "gateway",
    ("StatefulSet", "event-router-ops"): "ops",
}
OPS_PORT = 9300
DAY_MS = 86_400_000
ISOLATED_BEGIN = "# --- BEGIN isolated-destination example"
ISOLATED_END = "# --- END isolated-destination example"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

Doc = dict[str, Any]


# ---------------------------------------------------------------- loading


def load_docs(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


@cache
def kustomization(folder: Path) -> Doc:
    doc: Doc = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return doc


@cache
def base_docs() -> tuple[Doc, ...]:
    """Every object the base's `resources` files hold (generated ConfigMaps aside)."""
    docs: list[Doc] = []
    for entry in kustomization(BASE)["resources"]:
        docs += load_docs((BASE / entry).read_text())
    return tuple(docs)


@cache
def isolated_example_docs() -> tuple[Doc, ...]:
    """The commented per-destination Deployment of deliver.yaml, uncommented and parsed."""
    text = (BASE / "deliver.yaml").read_text()
    start, end = text.index(ISOLATED_BEGIN), text.index(ISOLATED_END)
    lines = text[start:end].splitlines()[1:]
    stray = [line for line in lines if line.strip() and not line.startswith("#")]
    assert not stray, f"uncommented lines inside the isolated-destination example: {stray}"
    first = lines.index("# ---")  # the prose before the first document is left out
    body = "\n".join(line.removeprefix("# ").removeprefix("#") for line in lines[first:])
    return tuple(load_docs(body))


def credentials_example() -> Doc:
    (secret,) = load_docs((BASE / "credentials.example.yaml").read_text())
    return secret


@pytest.fixture
def workspace(monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """base/workspace.yaml loaded by the router, with the example Secret's keys as env vars."""
    for key in credentials_example()["stringData"]:
        value = "https://hooks.example.com/test" if key.endswith("_URL") else f"test-{key.lower()}"
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    return load_workspace(BASE / "workspace.yaml")


def of_kind(docs: tuple[Doc, ...] | list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc.get("kind") == kind]


def named(docs: tuple[Doc, ...] | list[Doc], kind: str, name: str) -> Doc:
    matches = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def containers(workload: Doc) -> list[Doc]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def workloads_of(docs: tuple[Doc, ...] | list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def scaled_workloads(docs: tuple[Doc, ...] | list[Doc]) -> set[tuple[str, str]]:
    """(kind, name) of every workload a ScaledObject scales."""
    return {
        (s["spec"]["scaleTargetRef"]["kind"], s["spec"]["scaleTargetRef"]["name"])
        for s in of_kind(docs, "ScaledObject")
    }


def replica_problems(docs: tuple[Doc, ...] | list[Doc]) -> list[str]:
    """KEDA owns the replica count of what it scales; everything else runs exactly one pod."""
    scaled = scaled_workloads(docs)
    problems = []
    for workload in workloads_of(docs):
        key = (workload["kind"], workload["metadata"]["name"])
        replicas = workload["spec"].get("replicas")
        if key in scaled and replicas is not None:
            problems.append(f"{key[1]}: spec.replicas is set, but KEDA owns the replica count")
        if key not in scaled and replicas != 1:
            problems.append(f"{key[1]}: not autoscaled, so spec.replicas must be 1")
    return problems


def mount_of(container: Doc, path: str) -> str | None:
    """The volume whose mount holds ``path`` (the deepest mount point above it)."""
    best: tuple[int, str] | None = None
    for mount in container.get("volumeMounts", []):
        point = Path(mount["mountPath"])
        if Path(path) == point or point in Path(path).parents:
            depth = len(point.parts)
            if best is None or depth > best[0]:
                best = (depth, mount["name"])
    return best[1] if best else None


def router_args(container: Doc) -> Any:
    """The container's args as the router's own CLI parses them (unknown flags fail here)."""
    assert "command" not in container, "the image's ENTRYPOINT is `router`; set args only"
    return build_parser().parse_args([str(a) for a in container["args"]])


def port_number(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for entry in container.get("ports", []):
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def topic_name(topic: Doc) -> str:
    return str(topic["spec"].get("topicName") or topic["metadata"]["name"])


def strings(node: Any) -> Iterator[str]:
    """Every string value of a parsed YAML document (where the router interpolates `${VAR}`)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def walk_files(folder: Path) -> Iterator[str]:
    """Every file a kustomization refers to: resources, patches, generator files."""
    doc = kustomization(folder)
    yield from doc.get("resources", [])
    for patch in doc.get("patches", []):
        if "path" in patch:
            yield patch["path"]
    for generator in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
        for entry in generator.get("files", []):
            yield entry.split("=", 1)[-1]
        yield from generator.get("envs", [])


# ---------------------------------------------------------------- workload rules


def workload_problems(workload: Doc) -> list[str]:
    """Probes, shutdown, security and resources of one Deployment/StatefulSet."""
    name = workload["metadata"]["name"]
    problems: list[str] = []
    pod = workload["spec"]["template"]["spec"]
    pod_security = pod.get("securityContext", {})
    if pod_security.get("runAsNonRoot") is not True or pod_security.get("runAsUser") != 10001:
        problems.append(f"{name}: pod securityContext must run as non-root uid 10001")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    grace = pod.get("terminationGracePeriodSeconds", 30)
    for container in containers(workload):
        where = f"{name}/{container['name']}"
        args = router_args(container)
        if args.ops_host != "0.0.0.0":
            problems.append(f"{where}: --ops-host must be 0.0.0.0 or the kubelet cannot probe")
        if args.ops_port != OPS_PORT:
            problems.append(f"{where}: --ops-port is {args.ops_port}, expected {OPS_PORT}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = container.get(probe, {}).get("httpGet")
            if not http:
                problems.append(f"{where}: no {probe} (httpGet {path})")
                continue
            if http.get("path") != path or port_number(container, http["port"]) != args.ops_port:
                problems.append(f"{where}: {probe} must be GET {path} on port {args.ops_port}")
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        sleep = 0.0
        if pre_stop.get("command", [None])[0] == "sleep":
            sleep = float(pre_stop["command"][1])
        if not grace > args.shutdown_grace + sleep:
            problems.append(
                f"{where}: terminationGracePeriodSeconds {grace} must exceed --shutdown-grace "
                f"{args.shutdown_grace} + preStop {sleep}"
            )
        security = container.get("securityContext", {})
        expected = {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
        }
        for key, value in expected.items():
            if security.get(key) != value:
                problems.append(f"{where}: securityContext.{key} must be {value}")
        if security.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{where}: securityContext.capabilities.drop must be [ALL]")
        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(section, {}):
                    problems.append(f"{where}: resources.{section}.{resource} missing")
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        if "emptyDir" not in volumes.get(mounts.get("/tmp", ""), {}):
            problems.append(f"{where}: /tmp must be an emptyDir (the root filesystem is read-only)")
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        config = env.get("ROUTER_CONFIG", "")
        mount = mounts.get(str(Path(config).parent))
        if not mount or "configMap" not in volumes.get(mount, {}):
            problems.append(f"{where}: ROUTER_CONFIG {config!r} is not in a mounted ConfigMap")
        if not env.get("APP_DATADIR", "").startswith("/tmp/"):
            problems.append(f"{where}: APP_DATADIR (faust's data dir) must be under /tmp")
    return problems


# ---------------------------------------------------------------- kustomizations


@pytest.mark.parametrize("folder", [BASE, PRODUCTION], ids=["base", "production"])
def test_every_file_a_kustomization_names_exists(folder: Path) -> None:
    missing = [entry for entry in walk_files(folder) if not (folder / entry).exists()]
    assert not missing, f"{folder.relative_to(ROOT)} refers to missing files: {missing}"
    bases = [e for e in kustomization(folder).get("resources", []) if (folder / e).is_dir()]
    for entry in bases:
        assert (folder / entry / "kustomization.yaml").is_file(), entry


def test_every_base_manifest_is_listed() -> None:
    """A manifest added to base/ but not to `resources` would silently never be applied."""
    listed = set(kustomization(BASE)["resources"])
    not_manifests = {"kustomization.yaml", "workspace.yaml", "credentials.example.yaml"}
    on_disk = {p.name for p in BASE.glob("*.yaml")} - not_manifests
    assert on_disk == listed


def test_no_hand_written_hpa() -> None:
    assert not of_kind(base_docs(), "HorizontalPodAutoscaler"), "KEDA owns scaling"


# Fields of the custom resources used here (KEDA 2.x, Strimzi v1beta2, Prometheus Operator v1):
# no offline schema covers them, so a typo would reach the cluster, or be silently ignored.
CR_FIELDS: dict[str, dict[str, set[str]]] = {
    "ScaledObject": {
        "spec": {
            "scaleTargetRef",
            "pollingInterval",
            "cooldownPeriod",
            "initialCooldownPeriod",
            "idleReplicaCount",
            "minReplicaCount",
            "maxReplicaCount",
            "advanced",
            "triggers",
            "fallback",
        },
        "triggers": {
            "type",
            "name",
            "metadata",
            "authenticationRef",
            "metricType",
            "useCachedMetrics",
        },
    },
    "KafkaTopic": {"spec": {"topicName", "partitions", "replicas", "config"}},
    "ServiceMonitor": {
        "spec": {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels"},
    },
    "PrometheusRule": {"spec": {"groups"}},
}


def test_custom_resources_use_known_fields() -> None:
    docs = [*base_docs(), *isolated_example_docs()]
    for doc in docs:
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec", "data", "type"}, doc
        fields = CR_FIELDS.get(doc["kind"])
        if fields is None:
            continue
        where = f"{doc['kind']} {doc['metadata']['name']}"
        assert set(doc["spec"]) <= fields["spec"], f"{where}: {set(doc['spec']) - fields['spec']}"
        for trigger in doc["spec"].get("triggers", []):
            assert set(trigger) <= fields["triggers"], f"{where}: {set(trigger)}"


# ---------------------------------------------------------------- workloads


def test_workloads_probe_shut_down_and_run_locked_down() -> None:
    workloads = workloads_of(base_docs())
    assert {(w["kind"], w["metadata"]["name"]) for w in workloads} == set(ROLES)
    problems = [p for w in workloads for p in workload_problems(w)]
    problems += replica_problems(base_docs())
    assert not problems, "\n".join(problems)


def test_each_role_runs_its_router_command(workspace: Workspace) -> None:
    for (kind, name), command in ROLES.items():
        (container,) = containers(named(base_docs(), kind, name))
        args = router_args(container)
        assert args.command == command, name
        if command == "deliver":
            assert args.destination == [], "the shared Deployment delivers every destination"


def test_processor_keeps_its_dedup_state_on_a_volume(workspace: Workspace) -> None:
    processor = named(base_docs(), "StatefulSet", "event-router-processor")
    claims = {c["metadata"]["name"] for c in processor["spec"]["volumeClaimTemplates"]}
    (container,) = containers(processor)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts.get(workspace.processor.state_dir) in claims, (
        f"processor.state_dir {workspace.processor.state_dir} is not on a volumeClaimTemplate"
    )
    governing = named(base_docs(), "Service", processor["spec"]["serviceName"])
    assert governing["spec"].get("clusterIP") == "None", "a StatefulSet needs a headless Service"


def test_console_runs_once_with_its_fold_on_a_volume(workspace: Workspace) -> None:
    console = named(base_docs(), "StatefulSet", "event-router-ops")
    assert ("StatefulSet", "event-router-ops") not in scaled_workloads(base_docs())
    assert console["spec"]["replicas"] == 1, "one console: each would fold everything again"
    (container,) = containers(console)
    database = state_path(workspace)  # where `router ops` keeps its fold, as the code says
    claims = {c["metadata"]["name"] for c in console["spec"]["volumeClaimTemplates"]}
    assert mount_of(container, str(database)) in claims, f"{database} is not on a volume claim"
    governing = named(base_docs(), "Service", console["spec"]["serviceName"])
    assert governing["spec"].get("clusterIP") == "None", "a StatefulSet needs a headless Service"
    assert selects(governing["spec"]["selector"], console["spec"]["template"]["metadata"]["labels"])


def test_console_token_comes_from_the_secret(workspace: Workspace) -> None:
    raw = yaml.safe_load((BASE / "workspace.yaml").read_text())
    (reference,) = ENV_REF.finditer(raw["ops"]["admin_token"])
    assert reference.group(2) is None, "no default: a missing token must stop the pod, not open it"
    variable = reference.group(1)
    secret = credentials_example()
    assert variable in secret["stringData"]
    assert workspace.ops.admin_token is not None  # loaded from the Secret's variable
    (container,) = containers(named(base_docs(), "StatefulSet", "event-router-ops"))
    refs = {s.get("secretRef", {}).get("name") for s in container["envFrom"]}
    assert secret["metadata"]["name"] in refs


def test_console_page_and_api_are_served_in_the_cluster() -> None:
    console = named(base_docs(), "StatefulSet", "event-router-ops")
    (container,) = containers(console)
    args = router_args(container)
    pod_labels = console["spec"]["template"]["metadata"]["labels"]
    (service,) = [
        s
        for s in of_kind(base_docs(), "Service")
        if s["spec"].get("clusterIP") != "None" and selects(s["spec"]["selector"], pod_labels)
    ]
    assert service["metadata"]["name"] == "event-router-ops"  # the name the README tells
    (port,) = service["spec"]["ports"]
    assert port_number(container, port["targetPort"]) == args.ops_port


def test_processor_replicas_never_exceed_partitions(workspace: Workspace) -> None:
    scaled = named(base_docs(), "ScaledObject", "event-router-processor")
    assert scaled["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    assert scaled["spec"]["maxReplicaCount"] <= workspace.kafka.partitions


def test_gateway_serves_the_tracking_api_on_8080() -> None:
    gateway = named(base_docs(), "Deployment", "event-router-gateway")
    (container,) = containers(gateway)
    args = router_args(container)
    assert (args.host, args.port) == ("0.0.0.0", 8080)
    service = named(base_docs(), "Service", "event-router-gateway")
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8080
    assert port_number(container, port["targetPort"]) == args.port
    assert selects(service["spec"]["selector"], gateway["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("component", ["processor", "deliver", "gateway", "ops"])
def test_each_role_has_metrics_service_monitor_and_pdb(component: str) -> None:
    docs = base_docs()
    (workload,) = [
        d
        for d in workloads_of(docs)
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    (container,) = containers(workload)
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    metrics = [
        (s, p)
        for s in of_kind(docs, "Service")
        if selects(s["spec"]["selector"], pod_labels)
        for p in s["spec"].get("ports", [])
        if port_number(container, p["targetPort"]) == OPS_PORT
    ]
    assert len(metrics) == 1, f"{component}: one Service port to the ops port {OPS_PORT}"
    ((service, port),) = metrics
    assert service["metadata"]["labels"].get("event-router/metrics") == "true", component
    monitors = [
        m
        for m in of_kind(docs, "ServiceMonitor")
        if selects(m["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    ]
    assert len(monitors) == 1, f"{component}: one ServiceMonitor selecting {service['metadata']}"
    assert [(e["port"], e["path"]) for e in monitors[0]["spec"]["endpoints"]] == [
        (port["name"], "/metrics")
    ]
    assert monitors[0]["apiVersion"] == "monitoring.coreos.com/v1"
    budgets = [
        p
        for p in of_kind(docs, "PodDisruptionBudget")
        if selects(p["spec"]["selector"]["matchLabels"], pod_labels)
    ]
    if workload["spec"].get("replicas") == 1:
        # One pod, never scaled: a budget could only block every drain or allow everything.
        assert not budgets, f"{component}: a PodDisruptionBudget on a single pod"
        return
    assert len(budgets) == 1, f"{component}: one PodDisruptionBudget"
    assert "minAvailable" not in budgets[0]["spec"], "minAvailable: 1 blocks drains at 1 replica"


# ---------------------------------------------------------------- workspace, secret


def test_workspace_takes_bootstrap_and_secrets_from_the_environment(workspace: Workspace) -> None:
    raw = yaml.safe_load((BASE / "workspace.yaml").read_text())
    assert "bootstrap_servers" not in raw.get("kafka", {}), "bootstrap comes from the env"
    without_default = {
        m.group(1) for value in strings(raw) for m in ENV_REF.finditer(value) if m.group(2) is None
    }
    secret = credentials_example()
    assert set(secret["stringData"]) == without_default
    assert all(v.startswith("<placeholder") for v in secret["stringData"].values())
    generators = {g["name"]: g for g in kustomization(BASE)["configMapGenerator"]}
    literals = dict(x.split("=", 1) for x in generators["event-router-env"]["literals"])
    assert "KAFKA_BOOTSTRAP_SERVERS" in literals
    assert generators["event-router-workspace"]["files"] == ["workspace.yaml"]
    for workload in (d for d in base_docs() if d["kind"] in WORKLOAD_KINDS):
        for container in containers(workload):
            sources = container.get("envFrom", [])
            refs = {s.get("secretRef", {}).get("name") for s in sources}
            refs |= {s.get("configMapRef", {}).get("name") for s in sources}
            assert {secret["metadata"]["name"], "event-router-env"} <= refs, workload["metadata"]


# ---------------------------------------------------------------- topics and KEDA


def test_kafka_topics_are_exactly_what_the_router_creates(workspace: Workspace) -> None:
    topics = of_kind(base_docs(), "KafkaTopic")
    names = [topic_name(t) for t in topics]
    expected = Topics(workspace.kafka.topic_prefix).for_workspace(workspace)
    assert sorted(names) == sorted(expected)
    assert len(names) == len(set(names)), "a topic is declared twice"
    for topic in topics:
        name = topic_name(topic)
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert DNS_SUBDOMAIN.match(topic["metadata"]["name"]), topic["metadata"]["name"]
        assert "strimzi.io/cluster" in topic["metadata"]["labels"], name
        assert topic["spec"]["partitions"] == workspace.kafka.partitions, name
        assert topic["spec"]["replicas"] == workspace.kafka.replication_factor, name
        min_isr = int(topic["spec"]["config"]["min.insync.replicas"])
        assert min_isr <= topic["spec"]["replicas"], f"{name}: min ISR above the replica count"


def test_topic_retention_by_kind(workspace: Workspace) -> None:
    topics = Topics(workspace.kafka.topic_prefix)
    days = {topics.raw: 7, topics.dlq: 14}
    for dest in workspace.destinations:
        days[topics.retry(dest.id)] = 1
        days[topics.dead_letter(dest.id)] = 14
        # a retry record waits at most backoff_max for its retry_at; a day leaves room for
        # agent downtime on top
        assert dest.delivery.backoff_max * 1000 < DAY_MS, dest.id
    retention = {
        topic_name(t): int(t["spec"]["config"]["retention.ms"])
        for t in of_kind(base_docs(), "KafkaTopic")
    }
    for name, expected in days.items():
        assert retention[name] == expected * DAY_MS, name
    assert retention[topics.rekeyed] == 7 * DAY_MS
    # What the processor would create the changelog with: the dedup window and an hour.
    changelog = topics.configs(workspace)[topics.dedup_changelog]
    assert retention[topics.dedup_changelog] == int(changelog["retention.ms"])
    policies = {
        topic_name(t): t["spec"]["config"]["cleanup.policy"]
        for t in of_kind(base_docs(), "KafkaTopic")
    }
    for name in topics.compacted:  # state (the latest record per key), never expired
        assert (policies[name], retention[name]) == ("compact", -1), name


def test_keda_triggers_follow_the_router_consumer_groups(workspace: Workspace) -> None:
    docs = base_docs()
    topics = Topics(workspace.kafka.topic_prefix)
    declared = {topic_name(t) for t in of_kind(docs, "KafkaTopic")}
    client_id = workspace.kafka.client_id
    # Every topic each consumer group reads: a backlog on any of them must add pods.
    expected = {f"{client_id}-processor": {topics.raw, topics.rekeyed}}
    for dest in workspace.destinations:
        if dest.enabled:
            expected[f"{client_id}-deliver-{dest.id}"] = {topics.destination(dest.id)}
    seen: dict[str, set[str]] = {}
    scaler_of: dict[str, str] = {}  # consumer group -> the one ScaledObject that scales it
    for scaled in of_kind(docs, "ScaledObject"):
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        target = scaled["spec"]["scaleTargetRef"]
        workload = named(docs, target["kind"], target["name"])
        env_names = {e["name"] for c in containers(workload) for e in c.get("env", [])}
        env_names |= {"KAFKA_BOOTSTRAP_SERVERS"}  # from event-router-env (checked above)
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] != "kafka":
                continue
            meta = trigger["metadata"]
            assert meta["topic"] in declared, (
                f"no KafkaTopic for KEDA trigger topic {meta['topic']}"
            )
            assert meta["bootstrapServersFromEnv"] in env_names
            assert meta["offsetResetPolicy"] == "earliest"  # the router's auto_offset_reset
            group = meta["consumerGroup"]
            owner = scaler_of.setdefault(group, scaled["metadata"]["name"])
            assert owner == scaled["metadata"]["name"], f"{group} scaled by two ScaledObjects"
            topics_of_group = seen.setdefault(group, set())
            assert meta["topic"] not in topics_of_group, f"{meta['topic']} triggers twice"
            topics_of_group.add(meta["topic"])
            assert scaled["spec"]["maxReplicaCount"] <= workspace.kafka.partitions
    assert seen == expected


# ---------------------------------------------------------------- the isolated example


def test_isolated_destination_example_is_valid(workspace: Workspace) -> None:
    docs = isolated_example_docs()
    (deployment,) = of_kind(docs, "Deployment")
    (scaled,) = of_kind(docs, "ScaledObject")
    assert not workload_problems(deployment), workload_problems(deployment)
    assert not replica_problems(docs), replica_problems(docs)
    (container,) = containers(deployment)
    destinations = router_args(container).destination
    assert len(destinations) == 1
    (dest_id,) = destinations
    workspace.destination_by_id(dest_id)
    (trigger,) = scaled["spec"]["triggers"]
    client_id = workspace.kafka.client_id
    assert trigger["metadata"]["consumerGroup"] == f"{client_id}-deliver-{dest_id}"
    assert trigger["metadata"]["topic"] == Topics(workspace.kafka.topic_prefix).destination(dest_id)
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    shared = named(base_docs(), "Deployment", "event-router-deliver")
    own = deployment["spec"]["selector"]["matchLabels"]
    other = shared["spec"]["selector"]["matchLabels"]
    assert not selects(own, shared["spec"]["template"]["metadata"]["labels"])
    assert not selects(other, deployment["spec"]["template"]["metadata"]["labels"])


# ---------------------------------------------------------------- monitoring


def test_prometheus_rule_mirrors_rules_yml() -> None:
    (rule,) = of_kind(base_docs(), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    compose_rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    assert rule["spec"]["groups"] == compose_rules["groups"]


def test_grafana_dashboard_copy_matches_the_original() -> None:
    (generator,) = [
        g
        for g in kustomization(BASE)["configMapGenerator"]
        if g.get("options", {}).get("labels", {}).get("grafana_dashboard") == "1"
    ]
    (entry,) = generator["files"]
    copy = BASE / entry.split("=", 1)[-1]
    original = ROOT / "deploy" / "grafana" / "dashboards" / "router.json"
    assert copy.read_bytes() == original.read_bytes(), (
        f"refresh the copy: cp {original.relative_to(ROOT)} {copy.relative_to(ROOT)}"
    )


def test_docker_compose_prometheus_scrapes_the_router_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [
        target
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    scraped = set()
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in services, f"prometheus target {target}: no compose service {host}"
        args = build_parser().parse_args(services[host]["command"])
        assert args.ops_port == int(port), target
        assert args.ops_host == "0.0.0.0", f"{host}: ops server not reachable from prometheus"
        scraped.add(args.command)
    assert scraped == set(ROLES.values()), "every role's metrics, the console's included"


# ---------------------------------------------------------------- kustomize build

KUSTOMIZE = shutil.which("kustomize")
KUBECTL = shutil.which("kubectl")


@cache
def build(folder: Path) -> tuple[Doc, ...]:
    command = (
        [KUSTOMIZE, "build", str(folder)] if KUSTOMIZE else [str(KUBECTL), "kustomize", str(folder)]
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return tuple(load_docs(done.stdout))


needs_kustomize = pytest.mark.skipif(
    not (KUSTOMIZE or KUBECTL), reason="neither kustomize nor kubectl is installed"
)


@needs_kustomize
@pytest.mark.parametrize("folder", [BASE, PRODUCTION], ids=["base", "production"])
def test_kustomize_build(folder: Path, workspace: Workspace) -> None:
    docs = build(folder)
    assert not of_kind(docs, "HorizontalPodAutoscaler")
    workloads = workloads_of(docs)
    assert {(w["kind"], w["metadata"]["name"]) for w in workloads} == set(ROLES)
    problems = [p for w in workloads for p in workload_problems(w)]
    problems += replica_problems(docs)
    assert not problems, "\n".join(problems)
    config_maps = {d["metadata"]["name"]: d for d in of_kind(docs, "ConfigMap")}
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        refs = [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
        refs += [
            s["configMapRef"]["name"]
            for c in pod["containers"]
            for s in c.get("envFrom", [])
            if "configMapRef" in s
        ]
        for ref in refs:
            assert ref in config_maps, f"{workload['metadata']['name']} refers to {ref}"
    (mounted,) = [c for c in config_maps.values() if "workspace.yaml" in c.get("data", {})]
    assert mounted["data"]["workspace.yaml"] == (BASE / "workspace.yaml").read_text()
    (env,) = [c for c in config_maps.values() if "KAFKA_BOOTSTRAP_SERVERS" in c.get("data", {})]
    assert env["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    topics = of_kind(docs, "KafkaTopic")
    expected = Topics(workspace.kafka.topic_prefix).for_workspace(workspace)
    assert sorted(topic_name(t) for t in topics) == sorted(expected)
    for topic in topics:
        assert topic["spec"]["partitions"] == workspace.kafka.partitions
        assert int(topic["spec"]["config"]["min.insync.replicas"]) <= topic["spec"]["replicas"]
    for scaled in of_kind(docs, "ScaledObject"):
        if any(t["type"] == "kafka" for t in scaled["spec"]["triggers"]):
            assert scaled["spec"]["maxReplicaCount"] <= workspace.kafka.partitions
        assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    dashboards = [
        c for c in config_maps.values() if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1


@needs_kustomize
def test_production_overlay_changes_what_it_says() -> None:
    docs = build(PRODUCTION)
    base = build(BASE)
    images = {c["image"] for d in docs if d["kind"] in WORKLOAD_KINDS for c in containers(d)}
    (image,) = images
    assert ":" in image and not image.startswith("event-router:"), image
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert namespaces == {"event-router", "kafka"}
    assert {t["metadata"]["namespace"] for t in of_kind(docs, "KafkaTopic")} == {"kafka"}
    (env,) = [c for c in of_kind(docs, "ConfigMap") if "KAFKA_BOOTSTRAP_SERVERS" in c["data"]]
    (base_env,) = [c for c in of_kind(base, "ConfigMap") if "KAFKA_BOOTSTRAP_SERVERS" in c["data"]]
    assert env["data"]["KAFKA_BOOTSTRAP_SERVERS"] != base_env["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    for kind in WORKLOAD_KINDS:
        for workload in of_kind(docs, kind):
            name = workload["metadata"]["name"]
            assert (
                containers(workload)[0]["resources"]
                != containers(named(base, kind, name))[0]["resources"]
            ), f"{name}: the overlay does not size it"
    for workload in of_kind(docs, "StatefulSet"):
        name = workload["metadata"]["name"]
        sizes = [c["spec"]["resources"] for c in workload["spec"]["volumeClaimTemplates"]]
        base_sizes = [
            c["spec"]["resources"]
            for c in named(base, "StatefulSet", name)["spec"]["volumeClaimTemplates"]
        ]
        assert sizes != base_sizes, f"{name}: the overlay does not size its volume"
