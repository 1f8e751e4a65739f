"""The `router` command as a user runs it: check-config, one-line errors, port checks,
`router run` in a directory it must not write to (JSON logs, a clean stop that drains the
embedded broker, a SIGKILL that takes the broker with it), and a role failure ending the
process. (The crash and fault scenarios are in tests/faults.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
import orjson
import psutil
import pytest

from router.broker.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
ROUTER = [sys.executable, "-m", "router.cli"]
EXAMPLE = ROOT / "examples" / "workspace.yaml"


def run_router(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ROUTER, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env, check=False
    )


def test_check_config_prints_every_mistake_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
sources:
  - id: web
    write_keys: [k1]
    middleware:
      - type: hash_fields
        fields: [traits.email]
        algorithm: rot13
destinations:
  - id: hook
    name: Hook
    type: webhook
    sources: [web]
    settings: {url: "http://127.0.0.1:1/"}
    filters:
      - type: drop
        if: 'event = = "x"'
      - type: sample
        fraction: 1.5
    deliveryy: {}
"""
    )
    result = run_router("check-config", str(bad))
    assert result.returncode == 1
    err = result.stderr
    assert "sources[0].middleware[0].algorithm:" in err
    assert "destinations[0].filters[1].fraction:" in err
    assert "destinations[0].deliveryy: unknown key" in err

    good = run_router("check-config", str(ROOT / "examples" / "workspace.yaml"))
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("ok: 1 source(s), 3 destination(s)")  # with the warehouse


def test_check_config_reports_conditions_and_missing_env(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """
sources:
  - id: web
    write_keys: ["${NO_SUCH_VARIABLE_FOR_TEST}"]
destinations:
  - id: hook
    name: Hook
    type: webhook
    sources: [web]
    settings: {url: "http://127.0.0.1:1/"}
    filters:
      - type: drop
        if: 'event = = "x"'
"""
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_VARIABLE_FOR_TEST"}
    result = run_router("check-config", str(bad), env=env)
    assert result.returncode == 1
    assert (
        "sources[0].write_keys[0]: environment variable NO_SUCH_VARIABLE_FOR_TEST is not set"
        in result.stderr
    )


def assert_one_line(result: subprocess.CompletedProcess[str], start: str) -> None:
    err = result.stderr.strip()
    assert "Traceback" not in err, err
    assert "\n" not in err, f"more than one line: {err!r}"
    assert err.startswith(start), err


def test_send_reports_bad_input_and_unreachable_servers_in_one_line(tmp_path: Path) -> None:
    nobody = free_port()  # nothing listens there
    cases = [
        (["--properties", "{bad"], 2, "router send: --properties is not valid JSON"),
        (["--properties", "[1, 2]"], 2, "router send: --properties must be a JSON object"),
        (["--url", "not a url"], 2, "router send: --url 'not a url' is not an http(s) URL"),
        (
            ["--url", f"http://127.0.0.1:{nobody}"],
            1,
            f"router send: cannot reach the gateway at http://127.0.0.1:{nobody}: "
            "connection refused",
        ),
        (
            ["--kafka", f"127.0.0.1:{nobody}"],
            1,
            f"router send: cannot connect to Kafka at 127.0.0.1:{nobody}",
        ),
    ]
    for extra, code, start in cases:
        result = run_router("send", "-k", "wk", *extra, cwd=tmp_path)
        assert result.returncode == code, (extra, result.stderr)
        assert_one_line(result, start)
    # --debug is how to get the traceback.
    debug = run_router("send", "-k", "wk", "--properties", "{bad", "--debug", cwd=tmp_path)
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr
    assert list(tmp_path.iterdir()) == []


def test_serving_commands_report_bad_setup_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    config = str(EXAMPLE)
    nobody = f"127.0.0.1:{free_port()}"
    cases = [
        (
            ["process", "--config", config],
            2,
            "router process: kafka.bootstrap_servers: not set: pass --bootstrap",
        ),
        (["run", "--config", str(tmp_path / "missing.yaml")], 2, "router run: "),
        (
            ["deliver", "--config", config, "--bootstrap", nobody, "-d", "nope", "--ops-port", "0"],
            2,
            "router deliver: --destination: unknown destination 'nope'",
        ),
        (
            ["process", "--config", config, "--bootstrap", nobody, "--session-timeout", "0.2"],
            2,
            "router process: --session-timeout must be between 1 and 300 seconds",
        ),
    ]
    for args, code, start in cases:
        result = run_router(*args, env=env, cwd=tmp_path)
        assert result.returncode == code, (args, result.stderr)
        assert_one_line(result, start)


@contextmanager
def listening() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_port_in_use_is_reported_before_anything_starts(tmp_path: Path) -> None:
    with listening() as port:
        result = run_router(
            "run", "--config", str(EXAMPLE), "--gateway-port", str(port), "--ops-port", "0",
            "--state-dir", str(tmp_path / "state"), cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 1
        assert_one_line(
            result, f"router run: port {port} on 127.0.0.1 (--gateway-port) is already in use"
        )
        other = run_router(
            "gateway", "--config", str(EXAMPLE), "--bootstrap", "127.0.0.1:1",
            "--ops-port", str(port), cwd=tmp_path,
        )  # fmt: skip
        assert other.returncode == 1
        assert_one_line(other, f"router gateway: port {port} on 127.0.0.1 (--ops-port)")
    # Nothing started: no broker, no state, no data directory.
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- router run


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with session.get(url) as response:
        return response.status, await response.json()


async def wait_ready(port: int, process: subprocess.Popen[bytes], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, "router process exited early"
            try:
                status, _body = await get_json(session, f"http://127.0.0.1:{port}/readyz")
                if status == 200:
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("router process did not become ready")


def spawn_run(
    workdir: Path, state: Path, log: Path, ops: int, gateway: int
) -> subprocess.Popen[bytes]:
    """`router run` on its embedded broker with JSON logs, in ``workdir``."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [
                *ROUTER, "run", "--config", str(EXAMPLE), "--log-format", "json",
                "--ops-port", str(ops), "--gateway-port", str(gateway), "--state-dir", str(state),
                "--shutdown-grace", "10",
            ],
            cwd=workdir, stdout=output, stderr=output,
        )  # fmt: skip


@asynccontextmanager
async def router_run(
    workdir: Path, state: Path, log: Path
) -> AsyncIterator[tuple[subprocess.Popen[bytes], int]]:
    """:func:`spawn_run`; yields the process and its gateway port once it is ready."""
    ops, gateway = free_port(), free_port()
    process = spawn_run(workdir, state, log, ops, gateway)
    try:
        await wait_ready(ops, process)
        yield process, gateway
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def broker_of(process: subprocess.Popen[bytes]) -> psutil.Process:
    (child,) = [c for c in psutil.Process(process.pid).children() if "tansu" in c.name()]
    return child


def gone(child: psutil.Process) -> bool:
    try:
        return child.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_router_run_writes_only_its_state_dir_logs_json_and_drains_on_sigterm(
    tmp_path: Path,
) -> None:
    workdir, state, log = tmp_path / "cwd", tmp_path / "state", tmp_path / "router.log"
    workdir.mkdir()
    async with router_run(workdir, state, log) as (process, gateway):
        broker = broker_of(process)
        sent = run_router(
            "send", "-k", "demo-write-key", "--url", f"http://127.0.0.1:{gateway}",
            "--count", "20", cwd=workdir,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    text = log.read_text()
    assert "\x1b" not in text, "no terminal escape codes in a log file"
    entries = [orjson.loads(line) for line in text.splitlines()]  # every line is one object
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    messages = [entry["message"] for entry in entries]
    assert any(m.startswith("ready in ") for m in messages), messages
    # The example's webhooks point at a sink nobody runs here: their 20 events (all for
    # demo-all; demo-orders takes only "Order Completed") cannot be delivered within the
    # grace period, and the count says so; the warehouse (DuckDB in the state directory) got
    # its 20 within the drain (its flush_interval is 5 s). tests/faults drains into a sink.
    assert (
        "the embedded broker stops with 20 event(s) left undelivered, lost with its memory: "
        "0 not processed (events.raw), 20 not delivered (dest.* and retries)" in messages
    ), messages
    assert gone(broker)
    assert list(workdir.iterdir()) == [], "nothing written to the working directory"
    assert (state / "faust" / "event-router-run").is_dir()
    assert (state / "destinations" / "demo-warehouse" / "warehouse.duckdb").is_file()


async def test_router_run_killed_takes_its_broker_with_it(tmp_path: Path) -> None:
    workdir, state, log = tmp_path / "cwd", tmp_path / "state", tmp_path / "router.log"
    workdir.mkdir()
    async with router_run(workdir, state, log) as (process, _gateway):
        broker = broker_of(process)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        for _ in range(100):
            if gone(broker):
                break
            await asyncio.sleep(0.05)
        assert gone(broker), "the embedded broker outlived a SIGKILLed router"


# ---------------------------------------------------------------- a role that fails


def hosted(mode: str, port: int, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.hosted_roles", mode, str(port), str(state)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


async def test_a_failed_role_is_logged_unready_and_exits_nonzero(tmp_path: Path) -> None:
    port = free_port()
    seen: list[tuple[int, dict[str, object]]] = []
    with hosted("fails-later", port, tmp_path) as process:
        await wait_ready(port, process)
        async with aiohttp.ClientSession() as session:
            while process.poll() is None:
                try:
                    seen.append(await get_json(session, f"http://127.0.0.1:{port}/readyz"))
                except aiohttp.ClientError:
                    break  # the ops server stopped last
                await asyncio.sleep(0.1)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 1, output
    failed = {"ready": False, "detail": "flaky failed: its loop ended: ValueError('boom')"}
    assert (503, failed) in seen, seen
    errors = [line.split(" ERROR ", 1)[1] for line in output.splitlines() if " ERROR " in line]
    assert errors == ["router.app: flaky failed: its loop ended: ValueError('boom'); exiting"]
    assert "steady stopped" in output, "the other roles still stop cleanly"


async def test_a_role_that_cannot_start_exits_nonzero_in_one_line(tmp_path: Path) -> None:
    with hosted("cannot-start", free_port(), tmp_path) as process:
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 1, output
    assert "Traceback" not in output
    errors = [line.split(" ERROR ", 1)[1] for line in output.splitlines() if " ERROR " in line]
    assert errors == [
        "router.app: broken could not start: cannot reach what it needs at 127.0.0.1:1; exiting"
    ], output


async def test_sigterm_while_the_roles_start_lets_them_start_then_stops_them(
    tmp_path: Path,
) -> None:
    port = free_port()
    with hosted("slow-start", port, tmp_path) as process:
        async with aiohttp.ClientSession() as session:
            while True:  # the ops server answers first, while the roles start
                assert process.poll() is None
                with contextlib.suppress(aiohttp.ClientError):
                    status, body = await get_json(session, f"http://127.0.0.1:{port}/readyz")
                    assert (status, body) == (503, {"ready": False, "detail": "starting"})
                    break
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, output
    assert "slow stopped after starting: True" in output, output
    assert output.index("slow started") < output.index("slow stopped"), output
    assert "ready in" not in output and "Unclosed" not in output, output


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_check_config_logs_nothing_and_log_formats_are_one_per_line(
    fmt: str, tmp_path: Path
) -> None:
    env = {**os.environ, "ROUTER_LOG_FORMAT": fmt}
    result = run_router("check-config", str(EXAMPLE), env=env, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""
