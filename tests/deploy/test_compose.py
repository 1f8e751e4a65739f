"""docker-compose.yml as far as this machine allows without a Docker engine.

Parsed and checked against the code (commands, ports, healthchecks, restart policies, where
each container may write), then run: every router service's command is started the way its
container starts it, as the image's user (uid 10001, created if missing), in a working
directory that user cannot write to, writing only to its own ``/state``, with the compose
environment and the Dockerfile's. Kafka is an embedded broker here; container names resolve to
127.0.0.1 and fixed ports are swapped for free ones. An event sent to the gateway must then
reach the demo sink through the processor and the delivery agent, and every healthcheck must
pass.
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

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ROUTER_SERVICES = ("processor", "deliver", "gateway", "demo-sink")
UID = 10001


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


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


async def test_every_router_service_runs_as_the_image_user_in_a_read_only_directory(
    image_user: int,
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
                env = {
                    "PATH": os.environ["PATH"],
                    "PYTHONPATH": f"{ROOT}{os.pathsep}{site}",
                    **dockerfile_env(),
                    **{k: str(v) for k, v in service.get("environment", {}).items()},
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
        # Nothing was written where the user may not write (it could not have been).
        assert list(workdir.iterdir()) == []
    for name in ROUTER_SERVICES:
        assert not any("Traceback" in line or "PermissionError" in line for line in logs[name]), (
            logs[name]
        )
