"""Delivery throughput: one DeliveryAgent versus a bare aiohttp client loop, same requests.

Both read the same events from ``dest.<id>`` (each with its own consumer group) and POST them
to the same recording sink (:mod:`bench.sink`, its own process) at the same concurrency:
unbatched (one event per request, Segment's webhook format) and batched (100 per request,
``{"batch": [...]}``). Throughput is events/s as the sink sees them arrive (first to last
request), so both sides are measured by the same clock and exclude their start-up.

- Ours: :class:`router.delivery.agent.DeliveryAgent` in this process: per-partition offset
  tracking, rate limiter, outcome classification, one ``delivery.status`` record per request
  (acknowledged by Kafka before the offset may be committed), metrics.
- Baseline: aiokafka ``getmany`` -> orjson per event (for its messageId) -> the same body and
  headers -> ``concurrency`` aiohttp workers on one session -> commit once the poll's
  requests are answered. No status records, no retries: the least an HTTP forwarder does.

Rounds alternate baseline / ours; each figure is the median of its rounds.
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time
import uuid

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from bench.harness import (
    RawWriter,
    Result,
    SinkProcess,
    Templates,
    fresh_broker,
    fresh_kafka,
    log,
    scratch,
    standalone,
    wait_until,
)
from bench.workload import WRITE_KEY
from router.broker.topics import Topics, ensure_topics
from router.config import KafkaSettings, Workspace
from router.delivery.agent import DeliveryAgent
from router.delivery.records import HEADER_SOURCE
from router.workspace import validate_workspace

CONCURRENCY = 8
BATCH = 100
USER_AGENT = "event-router/bench"


def workspace(kafka: KafkaSettings, sink: SinkProcess, *, client_id: str) -> Workspace:
    destinations = [
        {
            "id": name,
            "name": name,
            "type": "webhook",
            "settings": {"url": sink.url(f"/{name}")},
            "sources": ["web"],
            "delivery": {"batch_size": size, "concurrency": CONCURRENCY},
        }
        for name, size in (("single", 1), ("batched", BATCH))
    ]
    return validate_workspace(
        {
            "kafka": {**kafka.model_dump(exclude_none=True), "client_id": client_id},
            "sources": [{"id": "web", "write_keys": [WRITE_KEY]}],
            "destinations": destinations,
        }
    )


async def fill(kafka: KafkaSettings, topic: str, count: int, templates: Templates) -> None:
    """What the processor writes to ``dest.<id>``: the event as JSON, header ``source``."""
    writer = RawWriter(kafka, topic, linger_ms=5, headers=[(HEADER_SOURCE, b"web")])
    await writer.start()
    try:
        pending = []
        for start in range(0, count, 5000):
            chunk = [templates.record(i, "dlv") for i in range(start, min(count, start + 5000))]
            pending.append(await writer.write(chunk))
        await asyncio.gather(*pending)
    finally:
        await writer.stop()


async def sink_rate(sink: SinkProcess, path: str, count: int, limit: float) -> float:
    """Wait until the sink has ``count`` events on ``path``; events/s first to last request."""

    async def done() -> bool:
        return await sink.events([path]) >= count

    if not await wait_until(done, limit=limit, every=0.05, what=f"{count} events on {path}"):
        raise TimeoutError(f"{path}: not every event arrived")
    stats = (await sink.stats())[path]
    seconds = (int(stats["last_ns"]) - int(stats["first_ns"])) / 1e9
    return float(stats["events"]) / seconds


async def ours(
    kafka: KafkaSettings, sink: SinkProcess, dest: str, count: int, limit: float
) -> float:
    await sink.reset()
    ws = workspace(kafka, sink, client_id=f"bench-{uuid.uuid4().hex[:6]}")
    agent = DeliveryAgent(ws, [dest], CollectorRegistry())
    await agent.start()
    try:
        return await sink_rate(sink, f"/{dest}", count, limit)
    finally:
        await agent.stop(grace=10.0)


async def bare_loop(
    kafka: KafkaSettings,
    sink: SinkProcess,
    dest: str,
    count: int,
    batch_size: int,
    limit: float,
) -> float:
    """The baseline: read, build the same requests, post them with ``CONCURRENCY`` workers."""
    await sink.reset()
    topic = Topics(kafka.topic_prefix).destination(dest)
    url = sink.url(f"/{dest}")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=f"bench-bare-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=5000,
    )
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), headers={"User-Agent": USER_AGENT}
    )
    queue: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue(CONCURRENCY * 4)

    async def worker() -> None:
        while True:
            body, headers = await queue.get()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status >= 300:
                        log(f"bare loop: HTTP {response.status}")
            finally:
                queue.task_done()

    await consumer.start()
    workers = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
    try:
        deadline = time.monotonic() + limit
        seen = 0
        while seen < count and time.monotonic() < deadline:
            polled = await consumer.getmany(timeout_ms=200, max_records=5000)
            for records in polled.values():
                for start in range(0, len(records), batch_size):
                    chunk = records[start : start + batch_size]
                    ids = [str(orjson.loads(r.value).get("messageId") or "") for r in chunk]
                    headers = {"Content-Type": "application/json"}
                    if batch_size == 1:
                        body = chunk[0].value
                        headers["Idempotency-Key"] = ids[0]
                    else:
                        body = b'{"batch":[' + b",".join(r.value for r in chunk) + b"]}"
                        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
                        headers["Idempotency-Key"] = f"batch-sha256-{digest}"
                    await queue.put((body, headers))
                    seen += len(chunk)
            await queue.join()
            if polled:
                await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in polled.items()})
        return await sink_rate(sink, f"/{dest}", count, 10)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await session.close()
        await consumer.stop()


async def measure(
    single: int, batched: int, rounds: int, limit: float = 120.0
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {
        "single": {"ours": [], "baseline": []},
        "batched": {"ours": [], "baseline": []},
    }
    with scratch("delivery") as directory:
        async with fresh_broker() as broker:
            kafka = fresh_kafka(broker, "delivery")
            topics = Topics(kafka.topic_prefix)
            sink = SinkProcess(directory)
            await sink.start()
            try:
                ws = workspace(kafka, sink, client_id="bench")
                await ensure_topics(kafka, topics.for_workspace(ws))
                templates = Templates()
                await fill(kafka, topics.destination("single"), single, templates)
                await fill(kafka, topics.destination("batched"), batched, templates)
                for i in range(rounds):
                    for dest, count, size in (("single", single, 1), ("batched", batched, BATCH)):
                        rates = results[dest]
                        rates["baseline"].append(
                            await bare_loop(kafka, sink, dest, count, size, limit)
                        )
                        rates["ours"].append(await ours(kafka, sink, dest, count, limit))
                        log(
                            f"delivery {dest} round {i + 1}: ours {rates['ours'][-1]:.0f}/s, "
                            f"bare loop {rates['baseline'][-1]:.0f}/s"
                        )
            finally:
                await sink.close()
    return results


async def run(quick: bool = False) -> list[Result]:
    single, batched, rounds = (4_000, 20_000, 1) if quick else (20_000, 100_000, 3)
    raw = await measure(single, batched, rounds)
    rows = []
    for dest, label, count, goal in (
        ("single", "unbatched", single, 0.8),
        ("batched", f"batched x{BATCH}", batched, 0.6),
    ):
        ours_rate = statistics.median(raw[dest]["ours"])
        base = statistics.median(raw[dest]["baseline"])
        rows.append(
            Result(
                f"delivery {label} / bare aiohttp loop",
                ours_rate,
                base,
                unit="events/s",
                target=f">= {goal}x",
                passed=ours_rate >= goal * base,
                details={"events": count, "concurrency": CONCURRENCY, "rounds": raw[dest]},
            )
        )
    return rows


if __name__ == "__main__":
    standalone(run, details=True)
