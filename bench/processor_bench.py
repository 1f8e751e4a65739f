"""Processor throughput: the full pipeline versus the least a router must do, same broker, same run.

Baseline ("floor"): aiokafka getmany -> orjson once per event -> a per-destination copy with
one field changed, serialized per destination -> send_batch to the 5 destination topics ->
await acks -> commit. "Ceiling": the same, serialized once and the same bytes sent 5 times.
Ours: the Processor role (validation, dedup, two middleware, a tracking plan, integrations,
one filter and one transformation per destination, 5 destinations), in this process like the
loops, each run with its own consumer group and a fresh dedup store. Rounds alternate
floor / ours / ceiling; each figure is the median of its rounds.

Privacy rows: the Processor with the plan on and 10,000 users suppressed (none of them in the
workload, so every event pays the suppression lookup and none is spared any work) against
the same Processor with the plan off and nothing suppressed (the target), and against the
plan on with nothing suppressed (what suppression alone costs), in the same rounds.

Usage: python -m bench.processor_bench [--events 100000] [--rounds 3]  (or python -m bench)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections import defaultdict

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import CollectorRegistry

from bench.harness import Result, fresh_broker, fresh_kafka, log, produce_backlog
from bench.workload import DESTINATIONS, WRITE_KEY, bench_workspace, realistic_event
from router.broker.clients import BatchSender, OutRecord, make_producer
from router.broker.topics import Topics, ensure_topics
from router.config import KafkaSettings
from router.privacy.records import Suppression
from router.processor import Processor

__all__ = ["DESTINATIONS", "WRITE_KEY", "bench_workspace", "realistic_event"]


async def baseline(
    kafka: KafkaSettings, topics: Topics, count: int, *, per_destination: bool
) -> float:
    """The floor (per-destination copy + serialize) or the ceiling (same bytes x5)."""
    consumer = AIOKafkaConsumer(
        topics.raw,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"bench-baseline-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=8 << 20,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=5, max_batch_size=1 << 20
    )
    await consumer.start()
    await producer.start()
    partitioner = DefaultPartitioner()
    out_topics = [topics.destination(d) for d in DESTINATIONS]
    partitions = {t: sorted(await producer.partitions_for(t)) for t in out_topics}
    seen = 0
    started: float | None = None
    try:
        while seen < count:
            polled = await consumer.getmany(timeout_ms=200, max_records=5000)
            if not polled:
                continue
            if started is None:
                started = time.perf_counter()
            grouped: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
            for records in polled.values():
                for record in records:
                    event = orjson.loads(record.value)
                    key = record.key
                    shared = None if per_destination else orjson.dumps(event)
                    for topic in out_topics:
                        if per_destination:
                            copy = dict(event)
                            copy["destination"] = topic
                            value = orjson.dumps(copy)
                        else:
                            value = shared  # type: ignore[assignment]
                        part = partitioner(key, partitions[topic], partitions[topic])
                        grouped[(topic, part)].append((key, value))
                    seen += 1
            futures = []
            for (topic, part), items in grouped.items():
                batch = producer.create_batch()
                for key, value in items:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        futures.append(await producer.send_batch(batch, topic, partition=part))
                        batch = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None)
                futures.append(await producer.send_batch(batch, topic, partition=part))
            await asyncio.gather(*futures)
            await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in polled.items()})
        assert started is not None
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


SUPPRESSED_USERS = 10_000


async def suppress_users(kafka: KafkaSettings, count: int) -> None:
    """``count`` suppression records (users the workload never sends) on the bench's prefix."""
    topics = Topics(kafka.topic_prefix)
    producer = make_producer(kafka, role="bench")
    await producer.start()
    try:
        records = [
            OutRecord(
                topics.suppressions,
                f"suppressed-{i}".encode(),
                Suppression(f"suppressed-{i}", "bench", time.time(), None).value(),
            )
            for i in range(count)
        ]
        await BatchSender(producer).send(records)
    finally:
        await producer.stop()


async def ours(kafka: KafkaSettings, count: int, *, plan: bool = True) -> float:
    with tempfile.TemporaryDirectory() as state:
        workspace = bench_workspace(kafka, state, plan=plan)
        registry = CollectorRegistry()
        processor = Processor(workspace, registry, group_id=f"bench-ours-{uuid.uuid4().hex[:6]}")
        await processor.start()
        try:
            started: float | None = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                received = registry.get_sample_value("router_processor_received_total") or 0
                if received and started is None:
                    started = time.perf_counter()
                    first = received
                if received >= count:
                    break
                await asyncio.sleep(0.005)
            assert started is not None
            # The first batch was counted before the clock started; leave it out.
            return (received - first) / (time.perf_counter() - started)
        finally:
            await processor.stop()


async def measure(events: int, rounds: int) -> dict[str, list[float]]:
    """events/s of floor, ours and ceiling, ``rounds`` times each, alternating."""
    async with fresh_broker() as broker:
        kafka = fresh_kafka(broker, "processor")
        topics = Topics(kafka.topic_prefix)
        await ensure_topics(kafka, topics.for_workspace(bench_workspace(kafka, "/tmp")))
        seconds = await produce_backlog(kafka, topics.raw, events)
        log(f"processor: {events} events written in {seconds:.1f}s")
        results: dict[str, list[float]] = {"ours": [], "floor": [], "ceiling": []}
        for i in range(rounds):
            results["floor"].append(await baseline(kafka, topics, events, per_destination=True))
            results["ours"].append(await ours(kafka, events))
            results["ceiling"].append(await baseline(kafka, topics, events, per_destination=False))
            log(
                f"processor round {i + 1}: ours {results['ours'][-1]:.0f}/s, floor "
                f"{results['floor'][-1]:.0f}/s, ceiling {results['ceiling'][-1]:.0f}/s"
            )
        return results


async def measure_privacy(events: int, rounds: int) -> dict[str, list[float]]:
    """events/s of the plan-off processor with nothing suppressed ("plain") and of the
    plan-on processor with 10,000 users suppressed ("privacy"), alternating."""
    async with fresh_broker() as broker:
        kafka = fresh_kafka(broker, "privacy")
        topics = Topics(kafka.topic_prefix)
        await ensure_topics(kafka, topics.for_workspace(bench_workspace(kafka, "/tmp")))
        seconds = await produce_backlog(kafka, topics.raw, events)
        log(f"processor (privacy): {events} events written in {seconds:.1f}s")
        plain_kafka = kafka
        privacy_kafka = fresh_kafka(broker, "privacy-suppressed")
        privacy_topics = Topics(privacy_kafka.topic_prefix)
        await ensure_topics(
            privacy_kafka, privacy_topics.for_workspace(bench_workspace(privacy_kafka, "/tmp"))
        )
        await produce_backlog(privacy_kafka, privacy_topics.raw, events)
        await suppress_users(privacy_kafka, SUPPRESSED_USERS)
        results: dict[str, list[float]] = {"plain": [], "privacy": [], "plan": []}
        for i in range(rounds):
            results["plain"].append(await ours(plain_kafka, events, plan=False))
            results["privacy"].append(await ours(privacy_kafka, events, plan=True))
            results["plan"].append(await ours(plain_kafka, events, plan=True))
            log(
                f"processor privacy round {i + 1}: plan + {SUPPRESSED_USERS} suppressed "
                f"{results['privacy'][-1]:.0f}/s, plan off {results['plain'][-1]:.0f}/s, "
                f"plan, none suppressed {results['plan'][-1]:.0f}/s"
            )
        return results


async def run(quick: bool = False) -> list[Result]:
    events, rounds = (30_000, 1) if quick else (100_000, 3)
    raw = await measure(events, rounds)
    privacy = await measure_privacy(events, rounds)
    ours_rate = statistics.median(raw["ours"])
    floor = statistics.median(raw["floor"])
    ceiling = statistics.median(raw["ceiling"])
    details = {"events": events, "rounds": raw, "destinations": len(DESTINATIONS)}
    return [
        Result(
            "processor throughput / floor loop",
            ours_rate,
            floor,
            unit="events/s",
            target=">= 0.8x",
            passed=ours_rate >= 0.8 * floor,
            details=details,
        ),
        Result(
            "processor throughput / raw ceiling",
            ours_rate,
            ceiling,
            unit="events/s",
            target="report",
            passed=None,
            details=details,
        ),
        *privacy_results(privacy, events),
    ]


def privacy_results(raw: dict[str, list[float]], events: int) -> list[Result]:
    with_privacy = statistics.median(raw["privacy"])
    plain = statistics.median(raw["plain"])
    plan = statistics.median(raw["plan"])
    details = {"events": events, "rounds": raw, "suppressed": SUPPRESSED_USERS}
    thousands = SUPPRESSED_USERS // 1000
    return [
        Result(
            f"processor, plan + {thousands}k suppressed users / plan off",
            with_privacy,
            plain,
            unit="events/s",
            target=">= 0.8x",
            passed=with_privacy >= 0.8 * plain,
            details=details,
        ),
        Result(
            f"processor, plan + {thousands}k suppressed users / plan",
            with_privacy,
            plan,
            unit="events/s",
            target="report",
            passed=None,
            details=details,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    raw = asyncio.run(measure(args.events, args.rounds))
    result = {name: statistics.median(values) for name, values in raw.items()}
    print(orjson.dumps({**result, "raw": raw}, option=orjson.OPT_INDENT_2).decode())
    print(
        f"ours {result['ours']:.0f}/s, floor {result['floor']:.0f}/s "
        f"(ratio {result['ours'] / result['floor']:.2f}), ceiling {result['ceiling']:.0f}/s "
        f"(ratio {result['ours'] / result['ceiling']:.2f})"
    )


if __name__ == "__main__":
    main()
