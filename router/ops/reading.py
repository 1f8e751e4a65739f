"""Reading topics for people, without a consumer group: from a time, an offset or the start,
up to the end as found by reading.

Two broker differences are handled here once, for every operations tool:

- ``offsets_for_times``: Apache Kafka answers the first offset whose timestamp is at or after
  the time (None when there is none); the embedded broker (Tansu) answers offset 0 for any
  time. Readers seek with the answer and then skip records whose timestamp is before the
  start (record timestamps are kept by both), so the start is right on both.
- the end of a partition: Tansu's ``ListOffsets`` can answer a count of batches rather than
  the end offset after batched produces, but the high watermark in every fetch answer is
  right on both. A partition is at its end once the position reached the high watermark of
  the last fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from router.broker.clients import make_consumer
from router.config import KafkaSettings, parse_duration

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"

#: How long a partition that reported no high watermark yet (no fetch answered) is waited
#: for before it counts as at its end.
FIRST_FETCH_LIMIT = 10.0


class InvalidMoment(ValueError):
    """A time given on the command line or in a query that cannot be read."""


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """``now``, an ISO-8601 time (``2026-11-23T10:00:00Z``, a date alone is midnight UTC) or a
    duration ago (``90m``, ``2h``, ``1d``: that long before now)."""
    current = now or datetime.now(UTC)
    value = text.strip()
    if value.lower() == "now":
        return current
    try:
        return current - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidMoment(
            f"{text!r} is not a time: use ISO-8601 (2026-11-23T10:00:00Z), 'now', "
            "or a duration ago (15m, 2h, 1d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a partition starts being read: an offset, and records older than ``not_before``
    (ms, record timestamp) skipped."""

    offset: int
    not_before: int | None = None


class TopicReader:
    """One consumer without a group, assigned whole topics; a context manager."""

    def __init__(self, kafka: KafkaSettings, *, role: str, **options: object) -> None:
        settings: dict[str, object] = {"max_poll_records": 2000}
        settings.update(options)
        self.consumer: AIOKafkaConsumer = make_consumer(kafka, group_id=None, role=role, **settings)
        self._started = False

    async def start(self) -> None:
        await self.consumer.start()
        self._started = True

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(KafkaError, TimeoutError):
                async with asyncio.timeout(10):
                    await self.consumer.stop()

    async def partitions(self, topics: Iterable[str], *, wait: float = 0.0) -> list[TopicPartition]:
        """Every partition of ``topics`` that exist (waiting up to ``wait`` seconds for
        missing ones, e.g. while the roles create them at start), sorted."""
        wanted = sorted(set(topics))
        deadline = time.monotonic() + wait
        while True:
            # The consumer's own metadata only covers topics it was given; ask for all.
            cluster = await self.consumer._client.fetch_all_metadata()
            found = [
                TopicPartition(topic, partition)
                for topic in wanted
                for partition in sorted(cluster.partitions_for_topic(topic) or ())
            ]
            present = {tp.topic for tp in found}
            if len(present) == len(wanted) or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.2)

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        self.consumer.assign(list(partitions))

    async def start_at(
        self, partitions: Sequence[TopicPartition], *, since_ms: int | None
    ) -> dict[TopicPartition, Position]:
        """Assign ``partitions`` and seek each to the first record at or after ``since_ms``
        (None: the beginning). Returns where each starts; see the module docstring."""
        self.assign(partitions)
        consumer = self.consumer
        if since_ms is None or not partitions:
            await consumer.seek_to_beginning(*partitions)
            return {tp: Position(await consumer.position(tp)) for tp in partitions}
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        positions: dict[TopicPartition, Position] = {}
        for tp in partitions:
            answer = found.get(tp)
            if answer is None:
                # Kafka: no record at or after the time; start at the end.
                await consumer.seek_to_end(tp)
                positions[tp] = Position(await consumer.position(tp), since_ms)
            else:
                consumer.seek(tp, answer.offset)
                positions[tp] = Position(answer.offset, since_ms)
        return positions

    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self.consumer.seek(tp, offset)

    async def at_end(self, tp: TopicPartition) -> bool:
        highwater = self.consumer.highwater(tp)
        if highwater is None:
            return False
        return bool(await self.consumer.position(tp) >= highwater)

    async def read_to_end(
        self,
        *,
        not_before: dict[TopicPartition, int | None] | None = None,
        until_ms: int | None = None,
        until_slack_ms: int = 0,
        poll_ms: int = 200,
        max_records: int = 2000,
    ) -> AsyncIterator[list[Record]]:
        """Batches of records from the positions set, until every assigned partition is at
        its end (as found by reading), or past ``until_ms`` (record time). Records after
        ``until_ms`` are left out; one more than ``until_slack_ms`` after it ends its partition,
        so a window in the past does not read the whole topic, while producers' clocks that
        differ by less than the slack do not cut the window short.

        Records before ``not_before[tp]`` are skipped. Records produced while reading are
        included as long as they arrive before their partition's end is reached.
        """
        consumer = self.consumer
        open_partitions = set(consumer.assignment())
        floors = not_before or {}
        started = time.monotonic()
        while open_partitions:
            polled = await consumer.getmany(
                *open_partitions, timeout_ms=poll_ms, max_records=max_records
            )
            batch: list[Record] = []
            for tp, records in polled.items():
                floor = floors.get(tp)
                for record in records:
                    if floor is not None and record.timestamp < floor:
                        continue
                    if until_ms is not None and record.timestamp > until_ms:
                        if record.timestamp > until_ms + until_slack_ms:
                            open_partitions.discard(tp)
                            break
                        continue
                    batch.append(record)
            if batch:
                yield batch
            for tp in list(open_partitions):
                if await self.at_end(tp):
                    open_partitions.discard(tp)
                elif (
                    consumer.highwater(tp) is None
                    and time.monotonic() - started > FIRST_FETCH_LIMIT
                ):
                    open_partitions.discard(tp)  # never answered: nothing to read there


def header(record: Any, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value)
    return None
