"""Start-up and clean stop of ``router run`` on the embedded broker, as a laptop user meets it.

Each round starts ``router run`` (embedded broker, processor, delivery agents for four
webhooks and a DuckDB warehouse, gateway, the console) in a fresh state directory and times:

- start to ready: from spawning the process to ``/readyz`` answering 200 (every role started,
  consumer groups joined);
- SIGTERM to exit: from the signal to the process having exited, idle (nothing to drain).

Absolute targets, no baseline: ready within 6 s, exit within 3 s (median of the rounds).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp

from bench.harness import PYTHON, ROOT, Result, SinkProcess, log, scratch, standalone, write_yaml
from bench.workload import WRITE_KEY
from router.broker.embedded import free_port


def workspace_data(sink: SinkProcess, state: str) -> dict[str, object]:
    hooks = [
        {
            "id": name,
            "name": name,
            "type": "webhook",
            "settings": {"url": sink.url(f"/{name}")},
            "sources": ["web"],
        }
        for name in ("shop", "crm", "analytics", "audit")
    ]
    warehouse = {
        "id": "warehouse",
        "name": "Warehouse",
        "type": "warehouse",
        "warehouse": True,
        "sources": ["web"],
        "settings": {"backend": "duckdb"},
    }
    return {
        "processor": {"state_dir": state},
        "ops": {"admin_token": "bench-admin-token-0123456789"},
        "sources": [{"id": "web", "write_keys": [WRITE_KEY]}],
        "destinations": [*hooks, warehouse],
    }


async def ready_status(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


def spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )  # fmt: skip


async def one_round(config: str, directory: str, index: int) -> tuple[float, float]:
    ops, gateway = free_port(), free_port()
    log_path = Path(directory) / f"run-{index}.log"
    argv = [
        PYTHON, "-m", "router.cli", "run", "--config", config,
        "--ops-port", str(ops), "--gateway-port", str(gateway),
        "--state-dir", str(Path(directory) / f"state-{index}"),
    ]  # fmt: skip
    started = time.monotonic()
    proc = spawn(argv, log_path)
    try:
        async with aiohttp.ClientSession() as session:
            while await ready_status(session, f"http://127.0.0.1:{ops}/readyz") != 200:
                if proc.poll() is not None:
                    raise RuntimeError(f"router run exited with {proc.returncode}: see {log_path}")
                if time.monotonic() - started > 60:
                    raise TimeoutError(f"router run not ready within 60 s: see {log_path}")
                await asyncio.sleep(0.02)
        ready = time.monotonic() - started
        await asyncio.sleep(1.0)  # idle, as a stop usually finds it
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        while proc.poll() is None:
            if time.monotonic() - signalled > 60:
                raise TimeoutError(f"router run did not exit within 60 s of SIGTERM: {log_path}")
            await asyncio.sleep(0.01)
        return ready, time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


async def run(quick: bool = False) -> list[Result]:
    rounds = 2 if quick else 5
    ready: list[float] = []
    stop: list[float] = []
    with scratch("lifecycle") as directory:
        sink = SinkProcess(directory)
        await sink.start()
        try:
            config = write_yaml(workspace_data(sink, str(Path(directory) / "state")), directory)
            for index in range(rounds):
                up, down = await one_round(config, directory, index)
                ready.append(up)
                stop.append(down)
                log(f"lifecycle round {index + 1}: ready in {up:.2f} s, exit in {down:.2f} s")
        finally:
            await sink.close()
    details = {"rounds": {"ready_seconds": ready, "exit_seconds": stop}}
    return [
        Result(
            "router run: start to ready (embedded broker, 5 destinations)",
            statistics.median(ready),
            None,
            unit="s",
            target="<= 6 s",
            passed=statistics.median(ready) <= 6.0,
            details=details,
        ),
        Result(
            "router run: SIGTERM to exit, idle",
            statistics.median(stop),
            None,
            unit="s",
            target="<= 3 s",
            passed=statistics.median(stop) <= 3.0,
            details=details,
        ),
    ]


if __name__ == "__main__":
    standalone(run, details=True)
