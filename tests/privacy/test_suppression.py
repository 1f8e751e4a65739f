"""Suppression across processors: two processors of one group on one broker, the suppression
written by ``router privacy suppress``; both stop the user's events within seconds, both
count them, and ``router privacy unsuppress`` lets them through again."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from router import cli
from router.broker.topics import Topics
from router.config import KafkaSettings, Workspace
from router.processor import Processor
from router.workspace import validate_workspace
from tests.kafka_helpers import consume
from tests.ops.helpers import eventually

WRITE_KEY = "wk-privacy"


def document(kafka: KafkaSettings, state: Path) -> dict[str, Any]:
    return {
        "kafka": kafka.model_dump(),
        "processor": {"state_dir": str(state), "poll_timeout": "100ms"},
        "sources": [{"id": "web", "write_keys": [WRITE_KEY]}],
        "destinations": [
            {
                "id": "hook",
                "name": "Hook",
                "type": "webhook",
                "sources": ["web"],
                "settings": {"url": "http://127.0.0.1:9/unused"},
            }
        ],
    }


async def produce_to(kafka: KafkaSettings, topic: str, events: list[tuple[int, dict[str, Any]]]):
    """Each event to the partition given: the test decides which processor gets it."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                orjson.dumps(event),
                key=str(event["userId"]).encode(),
                partition=partition,
                headers=[("write-key", WRITE_KEY.encode())],
            )
            for partition, event in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def track(user: str, tag: str) -> dict[str, Any]:
    return {"type": "track", "event": "Clicked", "userId": user, "messageId": f"{tag}-{user}"}


async def privacy_cli(config: Path, *args: str) -> int:
    return await asyncio.to_thread(cli.main, ["privacy", *args, "--config", str(config)])


def dropped(registry: CollectorRegistry) -> float:
    labels = {"destination": "all", "reason": "suppressed"}
    return registry.get_sample_value("router_processor_dropped_total", labels) or 0.0


async def test_a_suppression_stops_the_user_at_every_processor(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = kafka.model_copy(update={"client_id": f"t-{uuid.uuid4().hex[:8]}"})
    config_file = tmp_path / "workspace.yaml"
    config_file.write_text(yaml.safe_dump(document(kafka, tmp_path / "cli")))
    # Two processes' worth of processors: own state directories, own metrics, one group.
    workspaces: list[Workspace] = [
        validate_workspace(document(kafka, tmp_path / f"p{i}")) for i in range(2)
    ]
    registries = [CollectorRegistry(), CollectorRegistry()]
    topics = Topics(kafka.topic_prefix)
    group = f"{kafka.topic_prefix}processor"
    first = Processor(workspaces[0], registries[0], group_id=group)
    second = Processor(workspaces[1], registries[1], group_id=group)
    async with first, second:

        async def both_assigned() -> bool:
            consumers = [p._consumer for p in (first, second)]
            return all(c is not None and c.assignment() for c in consumers)

        await eventually(both_assigned, timeout=60)

        written = time.monotonic()
        assert await privacy_cli(config_file, "suppress", "--user-id", "gone", "--reason", "t") == 0

        async def everywhere() -> bool:
            return all("gone" in p.suppressions for p in (first, second))

        await eventually(everywhere, timeout=10, interval=0.05)
        assert time.monotonic() - written < 10  # within seconds, CLI start-up included

        # The user's events to both partitions, so both processors meet them.
        await produce_to(
            kafka,
            topics.raw,
            [(0, track("gone", "a")), (1, track("gone", "b")), (0, track("kept", "a"))],
        )
        await produce_to(kafka, topics.raw, [(1, track("kept", "b"))])
        out = await consume(kafka, topics.destination("hook"), expect=2, settle=1.5)
        assert sorted(orjson.loads(r.value)["messageId"] for r in out) == ["a-kept", "b-kept"]
        assert [dropped(r) for r in registries] == [1.0, 1.0]

        assert await privacy_cli(config_file, "unsuppress", "--user-id", "gone") == 0

        async def nowhere() -> bool:
            return not any("gone" in p.suppressions for p in (first, second))

        await eventually(nowhere, timeout=10, interval=0.05)
        await produce_to(kafka, topics.raw, [(0, track("gone", "c")), (1, track("gone", "d"))])
        out = await consume(kafka, topics.destination("hook"), expect=4, settle=1.0)
        ids = sorted(orjson.loads(r.value)["messageId"] for r in out)
        assert ids == ["a-kept", "b-kept", "c-gone", "d-gone"]
        assert [dropped(r) for r in registries] == [1.0, 1.0]


async def test_a_processor_starts_with_the_suppressions_already_written(
    kafka: KafkaSettings, tmp_path: Path, capsys: Any
) -> None:
    """A restart (or a new instance) reads the whole list before its first batch."""
    config_file = tmp_path / "workspace.yaml"
    config_file.write_text(yaml.safe_dump(document(kafka, tmp_path / "state")))
    assert await privacy_cli(config_file, "suppress", "-u", "early", "-u", "also") == 0
    assert await privacy_cli(config_file, "suppressed", "--json") == 0
    listed = orjson.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(s["userId"] for s in listed) == ["also", "early"]

    topics = Topics(kafka.topic_prefix)
    await produce_to(
        kafka, topics.raw, [(0, track("early", "a")), (1, track("also", "a")), (0, track("x", "a"))]
    )
    registry = CollectorRegistry()
    async with Processor(validate_workspace(document(kafka, tmp_path / "state")), registry):
        out = await consume(kafka, topics.destination("hook"), expect=1, settle=1.5)
    assert [orjson.loads(r.value)["messageId"] for r in out] == ["a-x"]
    assert dropped(registry) == 2.0
