"""Taking records for one destination: its consumer group, pauses, and commits.

The fetcher polls ``dest.<id>`` and ``dest.<id>.retry`` with one consumer (group
``<client_id>-<prefix>deliver-<id>``), turns records into
:class:`~router.delivery.records.InFlight` items and hands them to the lane. It owns what
Kafka needs to see:

- a bound: at most ``max_in_flight`` events between fetch and outcome; at the bound it keeps
  polling for no partition (so the group keeps the member) and fetches again once a quarter of
  the bound is free. Partitions are not paused at the bound: aiokafka throws away what it
  prefetched for a paused partition and fetches it again later, and the records it throws away
  stay in memory until a full garbage collection (see :mod:`router.gc_tuning`). Unpaused, each
  partition holds at most one prefetched fetch response, which bounds the read-ahead;
- retry timing: a retry record that is not due yet is sought back to and its partition
  paused until its due time; fresh traffic keeps flowing meanwhile, and nothing sleeps;
- commits: only the finished prefix of each partition (:class:`OffsetTracker`), at most every
  ``commit_interval`` seconds, and before partitions are revoked;
- lag, for health and the lag gauge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from router import gc_tuning
from router.backoff import Backoff
from router.broker.clients import make_consumer
from router.config import KafkaSettings
from router.delivery.offsets import OffsetTracker
from router.delivery.records import InFlight, RetryState, decode_head

logger = logging.getLogger(__name__)

#: Wait in a rebalance for in-flight work of revoked partitions before giving them up.
REVOKE_WAIT = 5.0
COMMIT_TIMEOUT = 10.0
#: No consumer is ever assigned partition -1: polling for it only says "still here".
NO_PARTITION = TopicPartition("", -1)

#: Called with each poll's items (already counted in flight); may wait (a full queue).
Take = Callable[[list[InFlight]], Awaitable[None]]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.fetcher.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.fetcher.on_assigned(set(assigned))


class Fetcher:
    """One destination's consumer: bounded fetching, retry pauses, commits of what is done."""

    def __init__(
        self,
        name: str,
        *,
        kafka: KafkaSettings,
        group_id: str,
        topic: str,
        retry_topic: str,
        max_in_flight: int,
        take: Take,
        commit_interval: float = 1.0,
        poll_timeout: float = 0.2,
        consumer_options: Mapping[str, object] | None = None,
    ) -> None:
        self.name = name
        self.kafka = kafka
        self.group_id = group_id
        self.topic = topic
        self.retry_topic = retry_topic
        self.max_in_flight = max_in_flight
        self._refill_at = max_in_flight - max(1, max_in_flight // 4)
        self._take = take
        self.commit_interval = commit_interval
        self.poll_timeout = poll_timeout
        self.options: dict[str, object] = {
            "max_partition_fetch_bytes": 1024 * 1024,
            "fetch_max_bytes": 16 * 1024 * 1024,
            "max_poll_records": min(5000, max_in_flight),
        }
        self.options.update(consumer_options or {})
        self.tracker = OffsetTracker()
        self.in_flight = 0
        self.lag = 0
        #: Times a retry partition was paused because its next record was not due.
        self.deferrals = 0
        self.commits = 0
        self.last_poll = time.monotonic()
        self._full = False
        self._due: dict[TopicPartition, float] = {}
        self._capacity = asyncio.Event()  # set whenever events leave the lane
        self._released = asyncio.Event()  # same, for a rebalance waiting on its partitions
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_commit = time.monotonic()
        self._last_lag_check = 0.0
        #: Called when a poll found nothing and nothing is in flight or lagging.
        self.on_idle: Callable[[], None] = lambda: None
        #: Called with the destination topic's lag after each refresh.
        self.on_lag: Callable[[int], None] = lambda lag: None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError(f"fetcher {self.name} is not started")
        return self._consumer

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        consumer = make_consumer(
            self.kafka, group_id=self.group_id, role=f"deliver-{self.name}", **self.options
        )
        consumer.subscribe(topics=[self.topic, self.retry_topic], listener=_Rebalance(self))
        await consumer.start()
        self._consumer = consumer
        self.last_poll = self._last_commit = time.monotonic()
        self._task = asyncio.create_task(self._loop(), name=f"deliver-{self.name}-fetch")

    async def stop_fetching(self, until: float) -> None:
        """End the poll loop (let it finish its poll until ``until``, loop time)."""
        self._stopping = True
        task = self._task
        if task is None:
            return
        try:
            async with asyncio.timeout_at(until):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception:
            logger.exception("%s: the fetch loop ended with an error", self.name)

    async def close(self, time_limit: float) -> None:
        """Commit what is finished and leave the group (partitions move at once)."""
        if self._consumer is None:
            return
        await self.commit(time_limit=time_limit)
        try:
            async with asyncio.timeout(max(0.5, time_limit)):
                await self._consumer.stop()
        except TimeoutError:
            logger.warning("%s: consumer did not leave its group in time", self.name)

    # ------------------------------------------------------------ accounting

    def finish(self, items: Sequence[InFlight]) -> None:
        """These events' outcomes are durable: their offsets may be committed."""
        by_partition: dict[tuple[str, int, int], list[int]] = {}
        for item in items:
            where = (item.topic, item.partition, item.epoch)
            offsets = by_partition.get(where)
            if offsets is None:
                by_partition[where] = [item.offset]
            else:
                offsets.append(item.offset)
        for (topic, partition, epoch), offsets in by_partition.items():
            self.tracker.finish_many(TopicPartition(topic, partition), offsets, epoch)

    def still_owned(self, items: list[InFlight]) -> list[InFlight]:
        """The items whose partition is still assigned as when they were taken."""
        owned: dict[tuple[str, int, int], bool] = {}  # one lookup per partition, not per event
        owns = self.tracker.owns
        for item in items:
            where = (item.topic, item.partition, item.epoch)
            if where not in owned:
                owned[where] = owns(TopicPartition(item.topic, item.partition), item.epoch)
        if all(owned.values()):
            return items
        return [item for item in items if owned[(item.topic, item.partition, item.epoch)]]

    def release(self, count: int) -> None:
        """``count`` events left the lane (finished, or given up to the next owner)."""
        self.in_flight -= count
        self._capacity.set()
        self._released.set()

    def pending(self) -> int:
        return self.tracker.pending()

    # ------------------------------------------------------------ rebalances

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        gc_tuning.note_dropped()  # a rebalance discards what was prefetched
        self.tracker.assign(assigned)
        names = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        logger.info("%s: assigned %s", self.name, ", ".join(names))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        loop = asyncio.get_running_loop()
        if not self._stopping:
            # Give in-flight work of these partitions a moment, so the new owner redelivers less.
            until = loop.time() + REVOKE_WAIT
            while self.tracker.pending(revoked) and loop.time() < until:
                self._released.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(until):
                        await self._released.wait()
        await self._commit(self.tracker.committable(revoked), time_limit=COMMIT_TIMEOUT)
        self.tracker.revoke(revoked)
        for tp in revoked:
            self._due.pop(tp, None)

    # ------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        poll_ms = round(self.poll_timeout * 1000)
        backoff = Backoff(first=0.5, cap=5.0)
        while not self._stopping:
            # Records aiokafka dropped unread (seeks to retry records not due yet) are freed
            # only by a full collection, which the agent's GC settings make rare otherwise.
            gc_tuning.collect_due(after_drops_only=True)
            try:
                if self.in_flight >= self.max_in_flight or (
                    self._full and self.in_flight > self._refill_at
                ):
                    # At the bound, fetch again only once a quarter of it is free: refilling
                    # one event at a time would pause, resume and poll once per event.
                    self._full = True
                    await self._wait_for_capacity()
                    continue
                self._full = False
                self._apply_pauses()
                capacity = self.max_in_flight - self.in_flight
                polled = await self.consumer.getmany(timeout_ms=poll_ms, max_records=capacity)
                self.last_poll = time.monotonic()
                if polled and not self._stopping:
                    await self._items(polled)
                elif self.in_flight == 0 and self.lag == 0:
                    self.on_idle()
                if time.monotonic() - self._last_commit >= self.commit_interval:
                    await self.commit(time_limit=COMMIT_TIMEOUT)
                await self._refresh_lag()
                backoff.reset()
            except KafkaError as exc:
                logger.warning("%s: fetch failed (%s); polling again", self.name, exc)
                await backoff.wait()

    async def _wait_for_capacity(self) -> None:
        """At the in-flight bound: take nothing, keep polling so the group keeps us.

        Returns once a quarter of the bound is free, or after ``poll_timeout``.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_timeout):
                while self.in_flight > self._refill_at and not self._stopping:
                    self._capacity.clear()
                    await self._capacity.wait()
        # A poll for a partition nobody has: it returns nothing and leaves every prefetched
        # response where it is, yet counts as a poll (max_poll_interval_ms) for the group.
        await self.consumer.getmany(NO_PARTITION, timeout_ms=0)
        self.last_poll = time.monotonic()
        if time.monotonic() - self._last_commit >= self.commit_interval:
            await self.commit(time_limit=COMMIT_TIMEOUT)

    def _apply_pauses(self) -> None:
        """Pause exactly the retry partitions whose next record is not due yet."""
        consumer = self.consumer
        assigned = consumer.assignment()
        now = time.time()
        for tp, due in list(self._due.items()):
            if due <= now or tp not in assigned:
                del self._due[tp]
        wanted = set(self._due)
        paused = consumer.paused()
        if wanted - paused:
            consumer.pause(*(wanted - paused))
            gc_tuning.note_dropped()  # what was prefetched for these partitions
        if paused - wanted:
            consumer.resume(*(paused - wanted))

    async def _items(
        self, polled: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        now = time.time()
        items: list[InFlight] = []
        add = items.append
        tracker = self.tracker
        for tp, records in polled.items():
            epoch = tracker.epoch(tp)
            if epoch is None:  # records before the assignment callback: adopt the partition
                tracker.assign([tp])
                epoch = tracker.epoch(tp)
            assert epoch is not None
            retry = tp.topic == self.retry_topic
            taken = records
            if retry:
                taken = []
                for record in records:
                    state = RetryState.from_headers(tuple(record.headers or ()))
                    if state is not None and state.due > now:
                        # Not due: re-read it from here once due; pausing keeps the loop idle.
                        self.consumer.seek(tp, record.offset)
                        gc_tuning.note_dropped()  # the rest of the fetched response
                        self._due[tp] = state.due
                        self.deferrals += 1
                        break
                    taken.append(record)
                    add(_item(tp, record, "retry", state, epoch))
            else:
                topic, partition = tp.topic, tp.partition
                for record in records:
                    value = record.value
                    add(
                        InFlight(
                            topic,
                            partition,
                            record.offset,
                            record.key,
                            value or b"",
                            tuple(record.headers) if record.headers else (),
                            decode_head(value),
                            "fresh",
                            0,
                            None,
                            epoch,
                        )
                    )
            if taken:
                tracker.add_many(tp, [record.offset for record in taken])
        if items:
            self.in_flight += len(items)
            await self._take(items)

    # ------------------------------------------------------------ committing

    async def commit(self, *, time_limit: float) -> bool:
        return await self._commit(self.tracker.committable(), time_limit=time_limit)

    async def _commit(self, offsets: dict[TopicPartition, int], *, time_limit: float) -> bool:
        self._last_commit = time.monotonic()
        if self._consumer is None:
            return False
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return True
        try:
            async with asyncio.timeout(max(0.1, time_limit)):
                await self._consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            # Not fatal: a later commit covers these offsets, or the next owner redelivers.
            logger.warning("%s: commit failed (%r)", self.name, exc)
            return False
        self.tracker.committed(offsets)
        self.commits += 1
        return True

    async def _refresh_lag(self) -> None:
        now = time.monotonic()
        # Once per second while caught up; after every poll while behind, so the gauge (and
        # health) see the lag go back to 0 as soon as it does, not up to a second later.
        if self.lag == 0 and now - self._last_lag_check < 1.0:
            return
        self._last_lag_check = now
        total = 0
        consumer = self.consumer
        for tp in consumer.assignment():
            if tp.topic != self.topic:
                continue  # retry records wait by design; they are not lag
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                async with asyncio.timeout(0.5):
                    position = await consumer.position(tp)
            except (KafkaError, TimeoutError):
                continue
            total += max(0, highwater - position)
        self.lag = total
        self.on_lag(total)


def _item(
    tp: TopicPartition,
    record: ConsumerRecord[bytes, bytes],
    origin: str,
    state: RetryState | None,
    epoch: int,
) -> InFlight:
    return InFlight(
        topic=tp.topic,
        partition=tp.partition,
        offset=record.offset,
        key=record.key,
        raw=record.value or b"",
        headers=tuple(record.headers or ()),
        head=decode_head(record.value),
        origin=origin,
        attempt=state.attempt if state else 0,
        first_failure=state.first_failure if state else None,
        epoch=epoch,
    )
