"""docker-compose.yml as far as this machine allows without a Docker engine.

Parsed and checked against the code (commands, ports, healthchecks, restart policies, where
each container may write), then run: every router service's command is started the way its
container starts it, as the image's user (uid 10001, created if missing), in a working
directory that user cannot write to, writing only to its own ``/state``, with the compose
environment and the Dockerfile's. Kafka is an embedded broker here; container names resolve to
127.0.0.1 and fixed ports are swapped for free ones; ``${VAR:-default}`` is resolved as
Compose resolves it, with none of the variables set (the defaults a first ``docker compose up``
gets). An event sent to the gateway must then reach the demo sink through the processor and the
delivery agent, every healthcheck must pass, and the console must show the deliveries to
whoever has the token, and nothing to whoever has not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import yaml

from router.broker.embedded import EmbeddedBroker, free_port
from router.cli import build_parser
from router.ops.console import state_path
from router.workspace import load_workspace

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ROUTER_SERVICES = ("processor", "deliver", "gateway", "ops", "demo-sink")
UID = 10001
#: The example's console token when ROUTER_ADMIN_TOKEN is not set (for the demo only).
DEMO_TOKEN = "demo-admin-token-change-me"
#: Compose's substitutions: ``$$``, ``${VAR}``, ``${VAR:-default}`` (unset or empty) and
#: ``${VAR-default}`` (unset). Anything else with a ``$`` is refused below, never guessed at.
COMPOSE_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def interpolate(value: str, environ: dict[str, str]) -> str:
    """``value`` as Docker Compose substitutes the shell's variables into it."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, default = match.groups()
        found = environ.get(name)
        if operator == ":-" and not found:
            return str(default)
        if operator == "-" and found is None:
            return str(default)
        return found or ""

    resolved = COMPOSE_VARIABLE.sub(substitute, value)
    assert "$" not in COMPOSE_VARIABLE.sub("", value), f"a substitution not handled: {value}"
    return resolved


def service_environment(service: dict[str, Any], environ: dict[str, str]) -> dict[str, str]:
    return {k: interpolate(str(v), environ) for k, v in service.get("environment", {}).items()}


def dockerfile_env() -> dict[str, str]:
    """``ENV`` of the Dockerfile (``KEY=value`` pairs, continued lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_user() -> str:
    users = [
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    return users[-1]


# ---------------------------------------------------------------- parsed


def test_router_services_run_as_written() -> None:
    services = compose()["services"]
    assert dockerfile_user() == f"{UID}:{UID}", "the image runs as uid 10001, never root"
    assert dockerfile_env()["ROUTER_STATE_DIR"] == "/state"
    for name in ROUTER_SERVICES:
        service = services[name]
        args = build_parser().parse_args(service["command"])
        assert service["restart"] == "unless-stopped", name
        assert service["read_only"] is True, name
        # Only /state (and /tmp) are writable: tmpfs, or a named volume for the processor.
        writable = set(service.get("tmpfs", [])) | {
            v.split(":")[1] for v in service.get("volumes", []) if not v.startswith(".")
        }
        assert "/state" in writable, f"{name}: nothing writable at /state"
        check = service["healthcheck"]["test"]
        assert f"127.0.0.1:{args.ops_port}/readyz" in " ".join(check), name
        assert args.ops_host == "0.0.0.0", f"{name}: ops port unreachable from Prometheus"
        grace = float(service["stop_grace_period"].rstrip("s"))
        assert grace > args.shutdown_grace, f"{name}: Docker would SIGKILL a clean stop"
        if name != "demo-sink":
            assert service["depends_on"]["kafka"]["condition"] == "service_healthy", name
    # The example's destinations deliver to the demo sink's container, on its port.
    sink = build_parser().parse_args(services["demo-sink"]["command"])
    url = services["deliver"]["environment"]["ROUTER_DEMO_WEBHOOK_URL"]
    assert url == f"http://demo-sink:{sink.port}"
    assert sink.host == "0.0.0.0"
    gateway = build_parser().parse_args(services["gateway"]["command"])
    assert services["gateway"]["ports"] == [f"{gateway.port}:{gateway.port}"]


def test_console_is_published_on_loopback_with_the_demo_token_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = compose()
    ops = data["services"]["ops"]
    args = build_parser().parse_args(ops["command"])
    assert args.command == "ops"
    (published,) = ops["ports"]
    assert interpolate(published, {}) == f"127.0.0.1:{args.ops_port}:{args.ops_port}"
    assert interpolate(published, {"ROUTER_OPS_BIND": "0.0.0.0"}).startswith("0.0.0.0:")
    # Its own volume: the console's database survives a restart, apart from the processor's.
    (state,) = [v.split(":")[0] for v in ops["volumes"] if v.split(":")[1] == "/state"]
    assert state in data["volumes"]
    assert state != "processor-state"
    # The workspace the container loads takes the token from the environment compose gives.
    for environ, token in (({}, DEMO_TOKEN), ({"ROUTER_ADMIN_TOKEN": "x" * 24}, "x" * 24)):
        env = service_environment(ops, environ)
        assert env["ROUTER_ADMIN_TOKEN"] == token
        monkeypatch.setenv("ROUTER_ADMIN_TOKEN", env["ROUTER_ADMIN_TOKEN"])
        workspace = load_workspace(ROOT / "examples" / "workspace.yaml")
        assert workspace.ops.admin_token is not None
        assert workspace.ops.admin_token.get_secret_value() == token


# ---------------------------------------------------------------- run


def interpreter_for(uid: int) -> str | None:
    """A Python of this version the user can run (the venv's may live under /root)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (
        os.path.realpath(sys.executable),
        shutil.which(version),
        f"/usr/bin/{version}",
    ):
        if not candidate or not Path(candidate).exists():
            continue
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys"], user=uid, capture_output=True, check=False,
                timeout=30,
            )  # fmt: skip
        except OSError:
            continue  # e.g. under /root, which that user cannot enter
        if done.returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="module")
def image_user() -> Iterator[int]:
    if os.geteuid() != 0:
        pytest.skip("running commands as the image's user needs root")
    try:
        pwd.getpwuid(UID)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--uid", str(UID), "--user-group",
             "--shell", "/usr/sbin/nologin", "router"],
            check=True, capture_output=True,
        )  # fmt: skip
    yield UID


@contextlib.contextmanager
def scratch(owner: int | None, mode: int) -> Iterator[Path]:
    """A directory outside pytest's (root-only) tmp tree."""
    path = Path(tempfile.mkdtemp(prefix="compose-"))
    if owner is not None:
        os.chown(path, owner, owner)
    path.chmod(mode)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def translate(value: str, hosts: dict[str, str], binds: dict[str, str]) -> str:
    """Container names -> 127.0.0.1 (with this test's ports), bind targets -> host paths."""
    for container, host_path in binds.items():
        value = value.replace(container, host_path)
    for host, replacement in hosts.items():
        value = re.sub(rf"\b{re.escape(host)}\b", replacement, value)
    return value


@contextlib.asynccontextmanager
async def started(
    argv: list[str], env: dict[str, str], cwd: Path, uid: int, log: list[str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, user=uid, group=uid,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip

    async def collect() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            log.append(line.decode(errors="replace").rstrip())

    reader = asyncio.create_task(collect())
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        await reader


async def wait_ready(port: int, process: asyncio.subprocess.Process, log: list[str]) -> None:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.returncode is None, "\n".join(log[-30:])
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise AssertionError("not ready: " + "\n".join(log[-30:]))


async def console_shows_the_deliveries(port: int, log: list[str]) -> None:
    """The console answers nobody without the token, and shows both demo webhooks' deliveries
    (folded from delivery.status) to whoever has the demo token."""
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/v1/destinations") as response:
            assert response.status == 401, await response.text()
            assert (await response.json())["code"] == "missing_token"
        async with session.get(f"{base}/") as response:
            assert response.status == 200  # the page itself, which then asks for the token
        headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
        deadline = time.monotonic() + 60
        delivered: dict[str, int] = {}
        while time.monotonic() < deadline:
            async with session.get(f"{base}/api/v1/destinations", headers=headers) as response:
                assert response.status == 200, await response.text()
                body = await response.json()
            delivered = {d["id"]: d["delivered"] for d in body["destinations"]}
            if delivered.get("demo-all", 0) >= 1 and delivered.get("demo-orders", 0) >= 1:
                return
            await asyncio.sleep(0.5)
    raise AssertionError(f"console shows {delivered}\n" + "\n".join(log[-30:]))


async def test_every_router_service_runs_as_the_image_user_in_a_read_only_directory(
    image_user: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = interpreter_for(image_user)
    if python is None:
        pytest.skip(f"no Python {sys.version_info[:2]} that uid {image_user} may run")
    services = compose()["services"]
    ports = {name: free_port() for name in ROUTER_SERVICES}
    listen = {"demo-sink": free_port(), "gateway": free_port()}
    site = sysconfig.get_paths()["purelib"]
    with (
        EmbeddedBroker() as broker,
        scratch(owner=None, mode=0o555) as workdir,  # root's, and read-only for the user
        contextlib.ExitStack() as stack,
    ):
        hosts = {
            "kafka:9092": broker.bootstrap_servers,
            "demo-sink:9400": f"127.0.0.1:{listen['demo-sink']}",
            "0.0.0.0": "127.0.0.1",
        }
        logs: dict[str, list[str]] = {name: [] for name in ROUTER_SERVICES}
        states: dict[str, Path] = {}
        async with contextlib.AsyncExitStack() as running:
            processes = {}
            for name in ROUTER_SERVICES:
                service = services[name]
                binds = {
                    v.split(":")[1]: str(ROOT / v.split(":")[0])
                    for v in service.get("volumes", [])
                    if v.startswith("./")
                }
                state = stack.enter_context(scratch(owner=image_user, mode=0o700))
                states[name] = state
                env = {
                    "PATH": os.environ["PATH"],
                    "PYTHONPATH": f"{ROOT}{os.pathsep}{site}",
                    **dockerfile_env(),
                    **service_environment(service, {}),
                    "ROUTER_STATE_DIR": str(state),  # the container's /state
                }
                env = {k: translate(v, hosts, binds) for k, v in env.items()}
                command = [translate(arg, hosts, binds) for arg in service["command"]]
                command += ["--ops-port", str(ports[name])]
                if name in listen:
                    command += ["--port", str(listen[name])]
                processes[name] = await running.enter_async_context(
                    started(
                        [python, "-m", "router.cli", *command], env, workdir, image_user, logs[name]
                    )
                )
            for name, process in processes.items():
                await wait_ready(ports[name], process, logs[name])
                assert psutil.Process(process.pid).uids().effective == image_user
            # Each container's own healthcheck, run as it would be (python -> this Python).
            for name in ROUTER_SERVICES:
                check = services[name]["healthcheck"]["test"][1:]
                argv = [
                    python if arg == "python" else arg.replace(":9300/", f":{ports[name]}/")
                    for arg in check
                ]
                done = await asyncio.to_thread(
                    subprocess.run, argv, user=image_user, cwd=workdir, capture_output=True,
                    timeout=30, check=False,
                )  # fmt: skip
                assert done.returncode == 0, (name, done.stderr)
            sent = await asyncio.to_thread(
                subprocess.run,
                [python, "-m", "router.cli", "send", "-k", "demo-write-key",
                 "--url", f"http://127.0.0.1:{listen['gateway']}", "--event", "Order Completed"],
                user=image_user, cwd=workdir, env={"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"},
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert sent.returncode == 0, sent.stderr
            deadline = time.monotonic() + 60
            wanted = (
                "[demo sink /all] track Order Completed",
                "[demo sink /orders] track Order Completed",
            )
            while time.monotonic() < deadline:
                if all(any(w in line for line in logs["demo-sink"]) for w in wanted):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("\n".join(f"{n}: {x}" for n in logs for x in logs[n][-15:]))
            await console_shows_the_deliveries(ports["ops"], logs["ops"])
            # The fold is kept where the code puts it, under the container's /state.
            ops_env = service_environment(services["ops"], {})
            monkeypatch.setenv("ROUTER_ADMIN_TOKEN", ops_env["ROUTER_ADMIN_TOKEN"])
            workspace = load_workspace(ROOT / "examples" / "workspace.yaml")
            processor = workspace.processor.model_copy(update={"state_dir": str(states["ops"])})
            database = state_path(workspace.model_copy(update={"processor": processor}))
            assert database.is_file(), sorted(str(p) for p in states["ops"].rglob("*"))
        # SIGTERM, what `docker compose stop` sends, stops every service cleanly (exit 0).
        codes = {name: process.returncode for name, process in processes.items()}
        assert codes == dict.fromkeys(ROUTER_SERVICES, 0), codes
        # Nothing was written where the user may not write (it could not have been).
        assert list(workdir.iterdir()) == []
    for name in ROUTER_SERVICES:
        assert not any("Traceback" in line or "PermissionError" in line for line in logs[name]), (
            logs[name]
        )
