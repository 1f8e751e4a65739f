"""Workspaces, events and metrics for delivery tests; every wait is bounded."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from router.config import KafkaSettings, Workspace
from router.delivery.agent import DeliveryAgent
from router.ops.server import OpsServer
from router.spec import format_timestamp
from tests.delivery.sink import Sink
from tests.kafka_helpers import consume, produce

#: Small enough that retries happen within a test, big enough to be visibly exponential.
FAST_DELIVERY: dict[str, Any] = {
    "backoff_min": "50ms",
    "backoff_max": "200ms",
    "timeout": "1s",
    "concurrency": 4,
}
#: Lower than the production default so a test's single member joins and rebalances fast.
CONSUMER_OPTIONS: dict[str, object] = {
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 500,
    "rebalance_timeout_ms": 3000,
}


def unique_kafka(kafka: KafkaSettings) -> KafkaSettings:
    """Consumer group ids derive from client_id: unique per test so groups never collide."""
    return kafka.model_copy(update={"client_id": f"t-{uuid.uuid4().hex[:8]}"})


def destination(
    dest_id: str, url: str, *, settings: dict[str, Any] | None = None, **delivery: Any
) -> dict[str, Any]:
    return {
        "id": dest_id,
        "name": f"Hook {dest_id}",
        "type": "webhook",
        "sources": ["web"],
        "settings": {"url": url, **(settings or {})},
        "delivery": {**FAST_DELIVERY, **delivery},
    }


def workspace_dict(kafka: KafkaSettings, destinations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kafka": kafka.model_dump(),
        "sources": [{"id": "web", "write_keys": ["wk-test"]}],
        "destinations": list(destinations),
    }


def make_workspace(kafka: KafkaSettings, destinations: Sequence[dict[str, Any]]) -> Workspace:
    return Workspace.model_validate(workspace_dict(kafka, destinations))


def event(index: int, *, prefix: str = "m", behavior: str = "ok", **extra: Any) -> dict[str, Any]:
    now = format_timestamp(datetime.now(UTC))
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": f"{prefix}-{index}",
        "userId": f"user-{index % 7}",
        "receivedAt": now,
        "timestamp": now,
        "properties": {"index": index, "behavior": behavior},
        "context": {"library": {"name": "test"}},
        **extra,
    }


async def produce_events(
    kafka: KafkaSettings, topic: str, events: Sequence[dict[str, Any]]
) -> None:
    await produce(kafka, topic, list(events), headers=[("source", b"web")])


async def wait_until(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = ""
) -> float:
    """Seconds it took; AssertionError after ``timeout`` seconds."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what or predicate}")
        await asyncio.sleep(interval)
    return time.monotonic() - started


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from Prometheus text."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """One sample's value; 0.0 when the series does not exist (a counter never incremented)."""
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


@asynccontextmanager
async def open_sinks(count: int) -> AsyncIterator[list[Sink]]:
    partners = [Sink() for _ in range(count)]
    async with AsyncExitStack() as started:
        for partner in partners:
            await started.enter_async_context(partner)
        yield partners


@asynccontextmanager
async def running_agent(
    workspace: Workspace, destination_ids: Sequence[str], **options: Any
) -> AsyncIterator[tuple[DeliveryAgent, OpsServer]]:
    """An agent plus its ops server on a free port; returns once every lane has partitions."""
    registry = CollectorRegistry()
    options.setdefault("consumer_options", CONSUMER_OPTIONS)
    options.setdefault("commit_interval", 0.2)
    options.setdefault("grace", 10.0)
    agent = DeliveryAgent(workspace, destination_ids, registry, **options)
    ops = OpsServer(registry, [agent], port=0)
    await ops.start()
    try:
        await agent.start()
        await wait_until(
            lambda: all(lane.fetcher.consumer.assignment() for lane in agent.lanes.values()),
            timeout=20,
            what="every lane has partitions",
        )
        yield agent, ops
    finally:
        await agent.stop()
        await ops.stop()


async def committed_offsets(kafka: KafkaSettings, group_id: str, topic: str) -> dict[int, int]:
    """``{partition: committed offset}`` of a group, and the topic's end offsets compared."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        out: dict[int, int] = {}
        for tp in partitions:
            out[tp.partition] = await consumer.committed(tp) or 0
        return out
    finally:
        await consumer.stop()


async def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """One past the last record of each partition, read from the records themselves.

    (Tansu 0.6 answers ListOffsets for batched produces with a batch count, not an offset.)
    """
    ends = dict.fromkeys(range(kafka.partitions), 0)
    for record in await consume(kafka, topic, settle=0.3):
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    return ends
