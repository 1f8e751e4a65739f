"""Reading and writing topics in tests, always bounded in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from router.config import KafkaSettings


async def produce(
    settings: KafkaSettings,
    topic: str,
    values: Sequence[bytes | dict[str, Any]],
    *,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        futures = []
        for value in values:
            data = value if isinstance(value, bytes) else orjson.dumps(value)
            if key is None and isinstance(value, dict):
                user = value.get("userId") or value.get("anonymousId") or ""
                record_key: bytes | None = str(user).encode()
            else:
                record_key = key
            futures.append(await producer.send(topic, data, key=record_key, headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(
    settings: KafkaSettings,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 20.0,
    settle: float = 1.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the start without a group.

    With ``expect``, return as soon as that many records arrived (then wait ``settle`` more
    seconds to catch extras, so "exactly N" can fail); without it, read until ``settle``
    seconds pass with nothing new. Never longer than ``timeout``.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        reached_at: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            got = [r for rs in batch.values() for r in rs]
            if got:
                records.extend(got)
                quiet_since = time.monotonic()
            if expect is not None and len(records) >= expect and reached_at is None:
                reached_at = time.monotonic()
            if reached_at is not None and time.monotonic() - reached_at >= settle:
                break
            if expect is None and time.monotonic() - quiet_since >= settle:
                break
    finally:
        await consumer.stop()
    return records


def values(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records if r.value is not None]
