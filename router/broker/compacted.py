"""Reading a compacted topic as a table: every partition from its start to its end, without a
consumer group, then following it.

A compacted topic keeps the latest record per key (a record with a null value, a tombstone,
removes the key), so reading it whole gives the current state, and every reader sees all of
it: no consumer group, no committed offsets. :class:`CompactedTail` reads to the end before
:meth:`CompactedTail.start` returns, so a role that needs the state (the processor needs the
suppression list before its first batch) starts only once it has it, then keeps following
in the background and hands each poll's records to ``apply``.

The end of a partition is the high watermark in the last fetch answer, not ``ListOffsets``:
the embedded broker (Tansu) can answer a count of batches there after batched produces,
while every fetch answer's high watermark is right on both brokers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from router.broker.clients import make_consumer
from router.config import KafkaSettings

logger = logging.getLogger(__name__)

#: What ``apply`` gets: the records of one poll, in order per partition.
Apply = Callable[[Sequence[Any]], None]


class TopicNotReadable(RuntimeError):
    """The topic could not be read to its end in time (missing, or the broker is away)."""


class CompactedTail:
    """Reads ``topic`` whole, then follows it; see the module docstring."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        apply: Apply,
        *,
        role: str,
        poll_ms: int = 500,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.apply = apply
        self.role = role
        self.poll_ms = poll_ms
        self.records = 0
        self.last_poll = time.monotonic()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, time_limit: float = 60.0) -> None:
        """Read every partition to its end, then follow in the background.

        Raises :class:`TopicNotReadable` when that takes longer than ``time_limit`` seconds."""
        consumer = make_consumer(self.kafka, group_id=None, role=self.role, max_poll_records=5000)
        await consumer.start()
        self._consumer = consumer
        try:
            deadline = time.monotonic() + time_limit
            await asyncio.wait_for(self._catch_up(consumer, deadline), time_limit)
        except TimeoutError:
            await self.stop()
            raise TopicNotReadable(
                f"{self.topic} could not be read to its end within {time_limit:g}s"
            ) from None
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._follow(consumer), name=f"tail-{self.topic}")

    async def _catch_up(self, consumer: AIOKafkaConsumer, deadline: float) -> None:
        partitions: list[TopicPartition] = []
        while not partitions:
            await consumer.topics()  # refreshes the cluster metadata
            found = consumer.partitions_for_topic(self.topic)
            partitions = [TopicPartition(self.topic, p) for p in sorted(found or ())]
            if not partitions:
                if time.monotonic() > deadline:
                    raise TopicNotReadable(f"{self.topic} does not exist")
                await asyncio.sleep(0.2)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        waiting = set(partitions)
        while waiting:
            polled = await consumer.getmany(timeout_ms=200, max_records=5000)
            self._take(polled)
            for tp in list(waiting):
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    waiting.discard(tp)

    def _take(self, polled: dict[TopicPartition, list[Any]]) -> None:
        self.last_poll = time.monotonic()
        records = [record for batch in polled.values() for record in batch]
        if records:
            self.records += len(records)
            self.apply(records)

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                polled = await consumer.getmany(timeout_ms=self.poll_ms, max_records=5000)
            except KafkaError as exc:
                logger.warning("reading %s failed (%s); retrying", self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            self._take(polled)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(KafkaError, TimeoutError):
                async with asyncio.timeout(10):
                    await consumer.stop()

    def failure(self) -> str | None:
        """Why following stopped for good (an exception in ``apply``), else None."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            return f"following {self.topic} ended: {task.exception()!r}"
        return None
