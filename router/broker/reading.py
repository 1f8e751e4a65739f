"""Reading a topic from its start without a consumer group, for tools (never for roles).

Tools (``router plan infer``, the source-schema reader) look at what a topic holds without
joining a group, committing offsets or disturbing the roles' groups. How many records there
are is found by reading them, not from end offsets: the embedded broker answers ListOffsets
after batched produces with a count of batches, not the next offset. So the read ends at
``limit`` records, after ``time_limit`` seconds, or once ``idle`` seconds pass with nothing new.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from router.config import KafkaSettings


class TopicMissing(LookupError):
    """The topic does not exist on the cluster."""


async def read_topic(
    settings: KafkaSettings,
    topic: str,
    *,
    limit: int | None = None,
    time_limit: float = 30.0,
    idle: float = 2.0,
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Batches of records of ``topic`` from the start (see the module docstring for the end)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-reader",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            raise TopicMissing(topic)
        consumer.subscribe([topic])
        deadline = time.monotonic() + time_limit
        quiet_since = time.monotonic()
        count = 0
        while time.monotonic() < deadline and (limit is None or count < limit):
            polled = await consumer.getmany(timeout_ms=200)
            records = [r for batch in polled.values() for r in batch]
            if not records:
                if time.monotonic() - quiet_since >= idle:
                    break
                continue
            quiet_since = time.monotonic()
            if limit is not None:
                records = records[: limit - count]
            count += len(records)
            yield records
    finally:
        await consumer.stop()
