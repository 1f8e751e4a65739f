"""Dedup holds whoever produced: any partition, any client, any number of processors.

Copies of events are written the ways real producers write them (an explicit other partition,
aiokafka and confluent-kafka with null keys, confluent-kafka with keys under librdkafka's own
CRC32 partitioner) and every event must reach the destination topic exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Producer as ConfluentProducer
from prometheus_client import CollectorRegistry

from router.broker.assignor import CopartitionedAssignor
from router.broker.partitioning import key_partition
from router.broker.topics import Topics, ensure_topics
from router.config import KafkaSettings, Workspace
from router.processor import Processor
from router.workspace import validate_workspace
from tests.kafka_helpers import consume

WRITE_KEY = b"wk-web"
HEADERS = [("write-key", WRITE_KEY)]


def workspace(kafka: KafkaSettings, state_dir: Path) -> Workspace:
    return validate_workspace(
        {
            "kafka": kafka.model_dump(),
            "processor": {"state_dir": str(state_dir), "poll_timeout": "100ms"},
            "sources": [{"id": "web", "write_keys": [WRITE_KEY.decode()]}],
            "destinations": [
                {
                    "id": "all",
                    "name": "All",
                    "type": "webhook",
                    "settings": {"url": "http://127.0.0.1:9/unused"},
                    "sources": ["web"],
                }
            ],
        }
    )


def events(ids: Sequence[int], *, message_ids: bool = True) -> list[dict[str, Any]]:
    out = []
    for i in ids:
        event: dict[str, Any] = {"type": "track", "event": "Clicked", "userId": f"user-{i % 37}"}
        if message_ids:
            event["messageId"] = f"m-{i}"
        else:
            event["properties"] = {"n": i}  # distinct records: each gets its own derived id
        out.append(event)
    return out


async def write_aiokafka(
    kafka: KafkaSettings, topic: str, batch: list[dict[str, Any]], *, partition: int | None = None
) -> None:
    """As a producer that sends no key (or names a partition) would."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, orjson.dumps(e), partition=partition, headers=HEADERS)
            for e in batch
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _write_confluent(bootstrap: str, topic: str, batch: list[dict[str, Any]], keyed: bool) -> None:
    # librdkafka's defaults: unkeyed records are spread over partitions, keyed ones placed by
    # CRC32 of the key (partitioner "consistent_random"), not by Kafka's murmur2.
    producer = ConfluentProducer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    failures: list[str] = []

    def report(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for event in batch:
        key = event["userId"].encode() if keyed else None
        producer.produce(topic, orjson.dumps(event), key=key, headers=HEADERS, on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0, "confluent-kafka did not deliver everything"
    assert not failures, failures


async def write_confluent(
    kafka: KafkaSettings, topic: str, batch: list[dict[str, Any]], *, keyed: bool = False
) -> None:
    await asyncio.to_thread(_write_confluent, kafka.bootstrap_servers, topic, batch, keyed)


def total(registries: Sequence[CollectorRegistry], name: str, **labels: str) -> float:
    return sum(r.get_sample_value(name, labels or None) or 0 for r in registries)


async def wait_for(check: Callable[[], bool], what: str, timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def delivered_ids(kafka: KafkaSettings, topics: Topics, expect: int) -> Counter[str]:
    records = await consume(kafka, topics.destination("all"), expect=expect, settle=1.5)
    return Counter(orjson.loads(r.value)["messageId"] for r in records if r.value)


def assert_exactly_once(ids: Counter[str], expected: set[str]) -> None:
    twice = sorted(m for m, n in ids.items() if n > 1)
    assert not twice, f"{len(twice)} events delivered more than once, e.g. {twice[:5]}"
    assert set(ids) == expected


async def test_the_same_ids_on_partition_0_then_partition_1(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    topics = Topics(kafka.topic_prefix)
    registry = CollectorRegistry()
    batch = events(range(100))
    async with Processor(workspace(kafka, tmp_path), registry):
        await write_aiokafka(kafka, topics.raw, batch, partition=0)
        await wait_for(
            lambda: total([registry], "router_processor_routed_total", destination="all") == 100,
            "the first 100",
        )
        await write_aiokafka(kafka, topics.raw, batch, partition=1)
        await wait_for(
            lambda: total([registry], "router_processor_duplicates_total", source="web") == 100,
            "100 duplicates",
        )
        ids = await delivered_ids(kafka, topics, 100)
    assert_exactly_once(ids, {e["messageId"] for e in batch})
    # Each copy outside its user's partition was moved once: with two partitions, every event
    # was outside it on one of the two writes.
    assert total([registry], "router_processor_rekeyed_total", source="web") == 100
    assert total([registry], "router_processor_received_total") == 200


async def test_unkeyed_and_crc32_producers_are_deduplicated(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    topics = Topics(kafka.topic_prefix)
    registry = CollectorRegistry()
    batch = events(range(300))
    dups = "router_processor_duplicates_total"
    async with Processor(workspace(kafka, tmp_path), registry):
        await write_aiokafka(kafka, topics.raw, batch)  # null keys
        await wait_for(
            lambda: total([registry], "router_processor_routed_total", destination="all") == 300,
            "300 routed",
        )
        await write_confluent(kafka, topics.raw, batch)  # null keys, librdkafka
        await wait_for(lambda: total([registry], dups, source="web") == 300, "300 duplicates")
        moved = total([registry], "router_processor_rekeyed_total", source="web")
        await write_confluent(kafka, topics.raw, batch, keyed=True)  # CRC32 of the user key
        await wait_for(lambda: total([registry], dups, source="web") == 600, "600 duplicates")
        ids = await delivered_ids(kafka, topics, 300)
    assert_exactly_once(ids, {e["messageId"] for e in batch})
    # Some users' CRC32 partition is not their murmur2 one: those records were moved too.
    crc32_moved = total([registry], "router_processor_rekeyed_total", source="web") - moved
    assert crc32_moved > 0


async def reset_offsets(kafka: KafkaSettings, group: str, topic: str) -> None:
    """Commit offset 0 on every partition of ``topic`` for ``group`` (its members stopped)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
        # The group's strategy: the broker may refuse another one even when the group is empty.
        partition_assignment_strategy=(CopartitionedAssignor(lambda: ((), ())),),
    )
    await consumer.start()
    try:
        await wait_for(lambda: len(consumer.assignment()) == kafka.partitions, "the group")
        await consumer.commit(dict.fromkeys(consumer.assignment(), 0))
    finally:
        await consumer.stop()


async def test_derived_ids_survive_the_move_and_a_replay(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Events without a messageId, written outside their users' partitions, read twice."""
    topics = Topics(kafka.topic_prefix)
    ws = workspace(kafka, tmp_path)
    batch = events(range(60), message_ids=False)
    registry = CollectorRegistry()
    async with Processor(ws, registry) as processor:
        for partition in range(kafka.partitions):
            # Each event into the partition that is not its user's.
            elsewhere = [
                e
                for e in batch
                if key_partition(e["userId"].encode(), kafka.partitions) != partition
            ]
            await write_aiokafka(kafka, topics.raw, elsewhere, partition=partition)
        await wait_for(
            lambda: total([registry], "router_processor_routed_total", destination="all") == 60,
            "60 routed",
        )
        group = processor.group_id
    first = await delivered_ids(kafka, topics, 60)
    assert len(first) == 60
    # The group reads every original again (as after a crash before its commit, or a replay).
    await reset_offsets(kafka, group, topics.raw)
    registry = CollectorRegistry()
    async with Processor(ws, registry):
        await wait_for(
            lambda: total([registry], "router_processor_duplicates_total", source="web") == 60,
            "60 duplicates",
        )
        assert total([registry], "router_processor_rekeyed_total", source="web") == 60
    assert await delivered_ids(kafka, topics, 60) == first


async def test_two_processors_with_rebalances_deliver_each_event_once(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = kafka.model_copy(update={"partitions": 4})
    topics = Topics(kafka.topic_prefix)
    first, second = CollectorRegistry(), CollectorRegistry()
    both = [first, second]
    wave1, wave2, wave3 = events(range(200)), events(range(200, 300)), events(range(300, 400))
    a = Processor(workspace(kafka, tmp_path / "a"), first)
    b = Processor(workspace(kafka, tmp_path / "b"), second)
    routed = "router_processor_routed_total"
    dups = "router_processor_duplicates_total"

    def restored(*processors: Processor) -> bool:
        owned = [p for processor in processors for p in processor._owned]
        idle = all(p._restoring is None or p._restoring.done() for p in processors)
        return idle and sorted(owned) == [0, 1, 2, 3]

    await a.start()
    try:
        await write_aiokafka(kafka, topics.raw, wave1)
        await wait_for(lambda: total(both, routed, destination="all") == 200, "wave 1")
        # B joins while copies of wave 1 and new events arrive: partitions move from A to B.
        writing = asyncio.create_task(write_confluent(kafka, topics.raw, wave1 + wave2))
        await b.start()
        await writing
        await wait_for(lambda: restored(a, b) and bool(a._owned) and bool(b._owned), "B's share")
        await wait_for(lambda: total(both, routed, destination="all") == 300, "wave 2")
        await wait_for(lambda: total(both, dups, source="web") == 200, "wave 1 copies")
        assert total([second], "router_processor_dedup_restored_total") > 0
        # A leaves: B takes every partition and restores what A remembered.
        await a.stop()
        await wait_for(lambda: restored(b), "B owning everything")
        await write_aiokafka(kafka, topics.raw, wave1 + wave2 + wave3)
        await wait_for(lambda: total(both, routed, destination="all") == 400, "wave 3")
        await wait_for(lambda: total(both, dups, source="web") == 500, "every copy dropped")
        ids = await delivered_ids(kafka, topics, 400)
    finally:
        with contextlib.suppress(Exception):
            await a.stop()
        await b.stop()
    assert_exactly_once(ids, {e["messageId"] for e in wave1 + wave2 + wave3})


async def test_internal_topics_must_match_events_raw(kafka: KafkaSettings, tmp_path: Path) -> None:
    topics = Topics(kafka.topic_prefix)
    # events.rekeyed made by hand with fewer partitions than events.raw will get.
    await ensure_topics(kafka.model_copy(update={"partitions": 1}), [topics.rekeyed])
    with pytest.raises(RuntimeError, match=r"events\.rekeyed has 1 partitions and .* has 2"):
        await Processor(workspace(kafka, tmp_path), CollectorRegistry()).start()


async def test_during_an_upgrade_unpaired_partitions_wait(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """A member of an earlier version (round robin, events.raw only) is still in the group:
    the processor reads only partitions it holds on both topics, until the old member leaves."""
    topics = Topics(kafka.topic_prefix)
    ws = workspace(kafka, tmp_path)
    group = f"{ws.kafka.client_id}-{ws.kafka.topic_prefix}processor"
    registry = CollectorRegistry()
    routed = "router_processor_routed_total"
    await ensure_topics(kafka, topics.for_workspace(ws), topics.configs(ws))
    old = AIOKafkaConsumer(
        topics.raw,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=1_000,
    )
    await old.start()
    processor = Processor(ws, registry)
    try:
        await processor.start()
        await wait_for(lambda: len(old.assignment()) == 1, "a shared group")
        (taken,) = {tp.partition for tp in old.assignment()}
        assert processor._owned == {1 - taken}
        # Everything written to the processor's raw partition: events of users hashed there
        # are routed; the others move to events.rekeyed's other partition, which the processor
        # holds without its raw twin, and wait there.
        batch = events(range(40))
        await write_aiokafka(kafka, topics.raw, batch, partition=1 - taken)
        waiting = [
            e for e in batch if key_partition(e["userId"].encode(), kafka.partitions) == taken
        ]
        assert 0 < len(waiting) < len(batch)
        await wait_for(
            lambda: total([registry], routed, destination="all") == len(batch) - len(waiting),
            "the paired partition's events",
        )
        await asyncio.sleep(1.0)
        assert total([registry], routed, destination="all") == len(batch) - len(waiting)
        await old.stop()  # the upgrade completes
        await wait_for(
            lambda: total([registry], routed, destination="all") >= len(batch), "the rest"
        )
        ids = await delivered_ids(kafka, topics, len(batch))
    finally:
        await old.stop()
        await processor.stop()
    assert_exactly_once(ids, {e["messageId"] for e in batch})


async def test_internal_topics_follow_events_raw_whatever_created_it(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    topics = Topics(kafka.topic_prefix)
    # events.raw made before the router ran (a producer, the broker's default count).
    await ensure_topics(kafka.model_copy(update={"partitions": 3}), [topics.raw])
    async with Processor(workspace(kafka, tmp_path), CollectorRegistry()) as processor:
        counts = processor._pipeline.partition_counts if processor._pipeline else {}
    assert (counts[topics.raw], counts[topics.rekeyed], counts[topics.dedup_changelog]) == (3, 3, 3)
