"""The `router` command as a user runs it: check-config, and a SIGKILLed processor."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from router.broker.embedded import free_port
from router.broker.topics import Topics
from router.config import KafkaSettings
from tests.kafka_helpers import consume, produce

ROOT = Path(__file__).resolve().parents[1]
ROUTER = [sys.executable, "-m", "router.cli"]


def run_router(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ROUTER, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env, check=False
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


def workspace_file(tmp_path: Path, kafka: KafkaSettings, **processor: Any) -> Path:
    data = {
        "kafka": kafka.model_dump(exclude_none=True),
        "processor": {"state_dir": str(tmp_path / "state"), "poll_timeout": "100ms", **processor},
        "sources": [{"id": "web", "write_keys": ["wk-web"]}],
        "destinations": [
            {
                "id": "all",
                "name": "All",
                "type": "webhook",
                "sources": ["web"],
                "settings": {"url": "http://127.0.0.1:9/unused"},
            },
            {
                "id": "orders",
                "name": "Orders",
                "type": "webhook",
                "sources": ["web"],
                "settings": {"url": "http://127.0.0.1:9/unused"},
                "filters": [{"type": "only", "if": 'event = "Order Completed"'}],
            },
        ],
    }
    path = tmp_path / "workspace.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_processor(config: Path, ops_port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*ROUTER, "process", "--config", str(config), "--ops-port", str(ops_port)],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def wait_ready(port: int, process: subprocess.Popen[bytes], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.poll() is None, "router process exited early"
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("router process did not become ready")


def events(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "event": "Order Completed" if i % 3 == 0 else "Clicked",
            "userId": f"user-{i % 17}",
            "messageId": f"m-{i}",
            "writeKey": "wk-web",
        }
        for i in range(start, start + count)
    ]


async def test_sigkill_mid_stream_loses_nothing(kafka: KafkaSettings, tmp_path: Path) -> None:
    config = workspace_file(tmp_path, kafka, max_batch=100)
    topics = Topics(kafka.topic_prefix)
    total = 3000
    log = tmp_path / "processor.log"
    port = free_port()
    first = start_processor(config, port, log)
    try:
        await wait_ready(port, first)

        async def write_all() -> None:
            for start in range(0, total, 100):
                await produce(kafka, topics.raw, events(start, 100))
                await asyncio.sleep(0.02)

        writer = asyncio.create_task(write_all())
        # Kill once the processor is visibly mid-stream: some output exists, input continues.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = await consume(kafka, topics.destination("all"), settle=0.1, timeout=2)
            if len(seen) >= 400:
                break
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        await writer

        second = start_processor(config, free_port(), log)
        try:
            records = await consume(
                kafka, topics.destination("all"), expect=total, timeout=90, settle=2
            )
            orders = await consume(
                kafka, topics.destination("orders"), expect=total // 3, timeout=30
            )
        finally:
            second.terminate()
            second.wait(40)
    finally:
        if first.poll() is None:
            first.kill()
    ids = [orjson.loads(r.value)["messageId"] for r in records]
    missing = {f"m-{i}" for i in range(total)} - set(ids)
    assert not missing, f"lost {len(missing)} events; log: {log.read_text()[-3000:]}"
    assert {orjson.loads(r.value)["messageId"] for r in orders} == {
        f"m-{i}" for i in range(0, total, 3)
    }
    duplicates = len(ids) - len(set(ids))
    print(f"SIGKILL run: {len(ids)} records for {total} events, {duplicates} duplicates")
    assert second.returncode == 0, "SIGTERM must end the processor cleanly"
