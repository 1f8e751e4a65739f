"""A real Prometheus scrapes a running router and answers the dashboard's queries.

The metric names, labels, histogram buckets and the recording rules in
deploy/prometheus/rules.yml are checked the way Grafana uses them, not by parsing text.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from router.broker.embedded import free_port
from router.broker.partitioning import key_partition
from router.broker.topics import Topics
from router.config import KafkaSettings, Workspace
from router.delivery.agent import DeliveryAgent
from router.ops.server import OpsServer
from router.processor import Processor
from router.workspace import validate_workspace
from tests.delivery.sink import Sink
from tests.kafka_helpers import produce

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
P95 = (
    "histogram_quantile(0.95, sum by (le, destination) "
    "(rate(router_delivery_latency_seconds_bucket[1m])))"
)


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (scripts/test.sh installs Debian's package)")
        pytest.skip("prometheus is not installed; run scripts/test.sh as root to install it")
    return found


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A Prometheus on 127.0.0.1 scraping one ops port every second; yields (url, ops port)."""
    binary = prometheus_binary()
    ops_port, web_port = free_port(), free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "router", "static_configs": [{"targets": [f"127.0.0.1:{ops_port}"]}]}
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{web_port}", ops_port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def query(session: aiohttp.ClientSession, url: str, promql: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def eventually(
    session: aiohttp.ClientSession, url: str, promql: str, check: Any, limit: float = 45
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + limit
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            result = await query(session, url, promql)
        except aiohttp.ClientError:
            result = []
        if result and check(result):
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"{promql} never satisfied the check; last result {result}")


def workspace(kafka: KafkaSettings, state: Path, sink: Sink) -> Workspace:
    return validate_workspace(
        {
            "kafka": kafka.model_dump(exclude_none=True),
            "processor": {"state_dir": str(state), "poll_timeout": "100ms"},
            "sources": [{"id": "web", "write_keys": ["wk-web"]}],
            "destinations": [
                {
                    "id": "hook",
                    "name": "Hook",
                    "type": "webhook",
                    "sources": ["web"],
                    "settings": {"url": sink.url},
                    "delivery": {"backoff_min": "100ms", "backoff_max": "200ms"},
                }
            ],
        }
    )


def test_recording_and_alert_rules_are_valid() -> None:
    prometheus_binary()
    promtool = shutil.which("promtool")
    assert promtool, "promtool ships with prometheus"
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_prometheus_sees_deliveries_and_p95(
    prometheus: tuple[str, int], kafka: KafkaSettings, tmp_path: Path, sink: Sink
) -> None:
    url, ops_port = prometheus
    ws = workspace(kafka, tmp_path / "state", sink)
    registry = CollectorRegistry()
    processor = Processor(ws, registry)
    agent = DeliveryAgent(ws, ["hook"], registry)
    ops = OpsServer(registry, [processor, agent], port=ops_port)
    total = 120
    events = [
        {"type": "track", "event": "Clicked", "userId": f"u{i % 7}", "messageId": f"m-{i}"}
        for i in range(total)
    ]
    async with ops, processor, agent, aiohttp.ClientSession() as session:
        await produce(
            kafka, Topics(kafka.topic_prefix).raw, events, headers=[("write-key", b"wk-web")]
        )
        await produce(
            kafka,
            Topics(kafka.topic_prefix).raw,
            [b"not json"],
            key=b"x",
            headers=[("write-key", b"wk-web")],
        )
        delivered = await eventually(
            session,
            url,
            'sum(router_delivery_delivered_total{destination="hook"})',
            lambda r: float(r[0]["value"][1]) >= total,
        )
        assert float(delivered[0]["value"][1]) == total
        assert len(sink.unique_delivered) == total

        rejected = await eventually(
            session, url, "router_processor_rejected_total", lambda r: len(r) == 1
        )
        assert rejected[0]["metric"]["reason"] == "invalid_json"
        assert float(rejected[0]["value"][1]) == 1

        # The dashboard's P95 panel and the recording rule both give a latency for "hook".
        p95 = await eventually(session, url, P95, lambda r: r[0]["value"][1] != "NaN")
        assert p95[0]["metric"] == {"destination": "hook"}
        assert 0 < float(p95[0]["value"][1]) < 10
        recorded = await eventually(
            session, url, "router:delivery_latency_seconds:p95", lambda r: r[0]["value"][1] != "NaN"
        )
        assert recorded[0]["metric"]["destination"] == "hook"

        failed = await query(session, url, "sum(router_delivery_failed_total)")
        assert not failed or float(failed[0]["value"][1]) == 0


# ---------------------------------------------------------------- the Grafana dashboard

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "router.json"
METRIC_NAME = re.compile(r"\brouter_[a-z0-9_]+\b")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, variables as Grafana sends them for "All"."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"].replace("$destination", ".*")))
    for variable in dashboard["templating"]["list"]:
        match = re.search(r"label_values\((\w+),", variable["definition"])
        assert match, variable
        found.append((f"variable {variable['name']}", match.group(1)))
    return found


def test_dashboard_has_the_destination_variable_and_the_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "destination" and variable["includeAll"]
    titles = " | ".join(p["title"] for p in dashboard["panels"])
    for wanted in (
        "Gateway",
        "Processor",
        "Consumer lag per group",
        "Retry backlog",
        "Dead letters",
        "P95",
    ):
        assert wanted in titles, wanted
    # Every per-destination panel follows the variable.
    per_destination = [
        q
        for title, q in dashboard_queries()
        if not title.startswith("variable")
        and ("router_delivery_" in q or "router_ops_" in q)
        and "fold" not in q
    ]
    assert per_destination
    assert all('destination=~".*"' in q for q in per_destination), per_destination


async def test_every_dashboard_query_answers_on_a_running_router(
    prometheus: tuple[str, int], kafka: KafkaSettings, tmp_path: Path, sink: Sink
) -> None:
    """All roles in one process (so one scrape sees every metric): every dashboard query is
    valid PromQL over metrics the roles export, and the console's P95 is the dashboard's."""
    from router.gateway import Gateway
    from router.ops.console import Console

    url, ops_port = prometheus
    ws = validate_workspace(
        {
            "kafka": kafka.model_dump(exclude_none=True),
            "processor": {"state_dir": str(tmp_path / "state"), "poll_timeout": "100ms"},
            "ops": {"admin_token": "dashboard-test-token-123"},
            "sources": [
                {
                    "id": "web",
                    "write_keys": ["wk-web"],
                    "tracking_plan": {"plan": "plan"},
                }
            ],
            "tracking_plans": [{"id": "plan", "rules": {"track": {"Clicked": {}}}}],
            "destinations": [
                {
                    "id": "hook",
                    "name": "Hook",
                    "type": "webhook",
                    "sources": ["web"],
                    "settings": {"url": sink.url},
                    "filters": [{"type": "drop", "if": 'event = "Dropped"'}],
                    "delivery": {"backoff_min": "100ms", "backoff_max": "200ms"},
                }
            ],
        }
    )
    failed_once: set[str] = set()

    def script(events: list[dict[str, Any]], _sink: Sink) -> tuple[int, dict[str, str]] | None:
        ids = {str(e.get("messageId")) for e in events}
        if "m-bad" in ids:
            return 400, {}
        if "m-flaky" in ids and "m-flaky" not in failed_once:
            failed_once.add("m-flaky")
            return 503, {}
        return None

    sink.script = script
    registry = CollectorRegistry()
    processor = Processor(ws, registry)
    agent = DeliveryAgent(ws, ["hook"], registry)
    gateway = Gateway(ws, registry, port=free_port())
    console = Console(ws, registry, store_path=tmp_path / "console.sqlite")
    ops = OpsServer(registry, [processor, agent, gateway, console], port=ops_port, console=console)
    raw = Topics(kafka.topic_prefix).raw
    events = [
        {"type": "track", "event": name, "userId": f"u{i % 3}", "messageId": f"m-{i}"}
        for i, name in enumerate(["Clicked"] * 30 + ["Unplanned", "Dropped"])
    ]
    events += [
        {"type": "track", "event": "Clicked", "userId": "u1", "messageId": "m-0"},  # duplicate
        {"type": "track", "event": "Clicked", "userId": "u1", "messageId": "m-bad"},
        {"type": "track", "event": "Clicked", "userId": "u2", "messageId": "m-flaky"},
    ]
    async with ops, processor, agent, gateway, console, aiohttp.ClientSession() as session:
        # Prometheus must have scraped the zero-valued latency series before the first
        # delivery: rate() counts only what came after a series' first sample, and the
        # console's P95 below counts every delivery.
        await eventually(
            session,
            url,
            'sum(router_delivery_latency_seconds_count{destination="hook"})',
            lambda r: len(r) > 0 and float(r[0]["value"][1]) == 0,
        )
        await produce(kafka, raw, events, headers=[("write-key", b"wk-web")])
        await produce(kafka, raw, [b"not json"], key=b"x", headers=[("write-key", b"wk-web")])
        # Keyed by something else than its user, in another partition: moved to events.rekeyed.
        moved = {"type": "track", "event": "Clicked", "userId": "u7", "messageId": "m-moved"}
        home = key_partition(b"u7", kafka.partitions)
        elsewhere = next(
            key
            for key in (f"k{i}".encode() for i in range(100))
            if key_partition(key, kafka.partitions) != home
        )
        await produce(kafka, raw, [moved], key=elsewhere, headers=[("write-key", b"wk-web")])
        async with session.post(
            f"http://127.0.0.1:{gateway.port}/v1/track",
            json={"event": "Clicked", "userId": "u9", "writeKey": "wk-web"},
        ) as response:
            assert response.status == 200
        async with session.post(
            f"http://127.0.0.1:{gateway.port}/v1/track",
            json={"userId": "u9", "writeKey": "wk-web"},  # no event name
        ) as response:
            assert response.status == 400
        await eventually(
            session,
            url,
            'sum(router_ops_dead_letters{destination="hook"})',
            lambda r: float(r[0]["value"][1]) == 1,
        )
        await eventually(
            session,
            url,
            'sum(router_delivery_delivered_total{destination="hook"})',
            lambda r: float(r[0]["value"][1]) >= 31,
        )
        async with session.get(f"http://127.0.0.1:{ops_port}/metrics") as response:
            exported = {
                sample.name
                for family in text_string_to_metric_families(await response.text())
                for sample in family.samples
            }
        for title, promql in dashboard_queries():
            for name in METRIC_NAME.findall(promql):
                assert name in exported, f"{title}: {name} is not exported by any role"
            await query(session, url, promql)  # asserts the query is valid (status success)
            if "produce_failures" not in promql:
                # Every series this scenario feeds answers (rates need two scrapes first).
                await eventually(session, url, promql, lambda r: len(r) > 0, limit=20)
        # The console's P95 and the dashboard's are computed over the same buckets.
        view = await console.delivery("hook", "15m")
        p95 = await eventually(
            session,
            url,
            P95.replace("[1m]", "[5m]"),
            lambda r: r[0]["value"][1] != "NaN",
        )
        buckets = await query(
            session, url, 'increase(router_delivery_latency_seconds_bucket{destination="hook"}[5m])'
        )
        assert view["p95_seconds"] == pytest.approx(float(p95[0]["value"][1]), rel=0.1), (
            view["histogram"],
            sorted((float(b["metric"]["le"]), float(b["value"][1])) for b in buckets),
        )
