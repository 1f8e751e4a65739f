"""``router replay``: exactly the window's events reach the one destination again (through its
filters), nothing reaches the others; ``--dry-run`` counts and sends nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from router.config import KafkaSettings
from router.ops.replay import ReplayError, find_window, replay
from router.workspace import validate_workspace
from tests.delivery.sink import Sink
from tests.ops.helpers import (
    WRITE_KEY,
    eventually,
    hook,
    running_router,
    topics,
    unique_kafka,
    workspace,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000


async def produce_at(
    kafka: KafkaSettings, topic: str, events: list[tuple[int, dict[str, Any]]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for timestamp_ms, event in events:
            await producer.send_and_wait(
                topic,
                orjson.dumps(event),
                key=event["userId"].encode(),
                timestamp_ms=timestamp_ms,
                headers=[("write-key", WRITE_KEY.encode())],
            )
    finally:
        await producer.stop()


def event(group: str, index: int, name: str = "Order Completed") -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "userId": f"user-{index % 3}",
        "messageId": f"{group}-{index}",
        "properties": {"group": group},
    }


def router_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


async def test_replay_delivers_exactly_the_window_to_one_destination(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = unique_kafka(kafka)
    now = int(time.time() * 1000)
    before = [(now - 3 * HOUR_MS + i, event("a", i)) for i in range(4)]
    inside = [(now - 2 * HOUR_MS + i * 1000, event("b", i)) for i in range(6)]
    inside += [(now - 2 * HOUR_MS + 7000 + i, event("b", 10 + i, "Signed Up")) for i in range(2)]
    after = [(now - HOUR_MS + i, event("c", i)) for i in range(4)]
    async with Sink() as one, Sink() as two:
        document = {
            "kafka": kafka.model_dump(exclude_none=True),
            "processor": {"state_dir": str(tmp_path / "state"), "poll_timeout": "100ms"},
            "ops": {"admin_token": "x" * 20},
            "sources": [{"id": "web", "write_keys": [WRITE_KEY]}],
            "destinations": [
                hook("one", one.url, filters=[{"type": "only", "if": 'event = "Order Completed"'}]),
                hook("two", two.url),
            ],
        }
        ws = validate_workspace(document)
        config = tmp_path / "workspace.yaml"
        config.write_text(yaml.safe_dump(document))
        everything = [e for _, e in before + inside + after]
        async with running_router(ws, tmp_path / "c.sqlite"):
            await produce_at(kafka, topics(kafka).raw, before + inside + after)

            async def all_delivered() -> bool:
                wanted_one = {e["messageId"] for e in everything if e["event"] == "Order Completed"}
                return one.unique_delivered == wanted_one and len(two.unique_delivered) == len(
                    everything
                )

            await eventually(all_delivered, timeout=60)
            start, end = now - 2 * HOUR_MS - 60_000, now - HOUR_MS - 30 * 60_000
            since = datetime.fromtimestamp(start / 1000, UTC).isoformat()
            until = datetime.fromtimestamp(end / 1000, UTC).isoformat()
            baseline = sum(one.delivered.values())

            dry = router_cli(
                "replay",
                "--config",
                str(config),
                "-d",
                "one",
                "--from",
                since,
                "--to",
                until,
                "--dry-run",
            )
            assert dry.returncode == 0, dry.stderr
            assert "8 event(s) in the window" in dry.stdout
            assert "would send 6 event(s)" in dry.stdout
            assert "only 2" in dry.stdout
            await _settle()
            assert sum(one.delivered.values()) == baseline  # nothing sent by the dry run

            window = await find_window(ws, "one", start, end)
            assert window.records == 8
            result = await replay(ws, window)
            assert (result.read, result.sent) == (8, 6)
            assert result.not_sent == {"only": 2}

            replayed = {e["messageId"] for _, e in inside if e["event"] == "Order Completed"}

            async def replay_delivered() -> bool:
                return all(one.delivered[m] == 2 for m in replayed)

            await eventually(replay_delivered, timeout=60)
            await _settle()
            twice = {m for m, n in one.delivered.items() if n > 1}
            assert twice == replayed
            assert all(n == 1 for n in two.delivered.values())
            assert len(two.requests) == len(everything)

            with pytest.raises(ReplayError, match="no destination"):
                await find_window(ws, "nope", start, end)
            bad = router_cli("replay", "--config", str(config), "-d", "one", "--from", "yesterday")
            assert bad.returncode != 0
            assert "is not a time" in bad.stderr
            assert "Traceback" not in bad.stderr


async def _settle() -> None:
    import asyncio

    await asyncio.sleep(1.5)


def test_one_bad_record_never_stops_a_replay(tmp_path: Path) -> None:
    from router.broker.topics import Topics
    from router.ops.replay import ReplayResult, Window, _process
    from router.pipeline.compile import compile_workspace
    from router.pipeline.pipeline import Pipeline
    from tests.ops.test_parts import POISON, _record

    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    ws = workspace(kafka, tmp_path, [hook("hook", "http://127.0.0.1:9/h")])
    good = [
        _record(i, {"type": "track", "event": "Fine", "userId": "u", "messageId": f"g{i}"})
        for i in range(3)
    ]
    pipeline = Pipeline(compile_workspace(ws, Topics()), Topics(), None, {})
    result = ReplayResult(Window("hook", 0, 1))
    processed = _process(pipeline, [good[0], _record(9, POISON), *good[1:]], result)
    assert len([o for o in processed.outputs if o.topic == "dest.hook"]) == 3
    # Counted as a processor error, or (once the decode stage rejects it) as rejected.
    assert sum(result.not_sent.values()) + sum(processed.stats.rejected.values()) == 1
