"""The stream processor: events.raw -> pipeline -> one topic per destination.

The hot path is one loop per poll, not faust's per-event ``Stream``, which measured 5x-40x
slower on a 2-core machine (~6,100 events/s only parsing, ~760/s sending each event):
``getmany`` -> every stage over the batch -> ``send_batch`` per output partition (with the
batch's dedup changelog entries) -> await every ack -> remember dedup keys -> commit the polled
offsets. A crash anywhere in that sequence replays the batch (at-least-once);
nothing is committed before it is durable. The faust-streaming worker (``router.app``) hosts
this role for the CLI.

The group reads ``events.raw`` and ``events.rekeyed`` (records the re-keying stage moved into
their user's partition), partition ``p`` of both on one member (``router.broker.assignor``).
A newly assigned partition stays paused until its dedup store has read the changelog
(``router.dedup_changelog``), so no record is checked against a store that is behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import CollectorRegistry

from destinations.base import CALL_TYPES
from destinations.registry import get_plugin
from router.backoff import Backoff
from router.broker.assignor import CopartitionedAssignor
from router.broker.clients import BatchSender, make_consumer, make_producer
from router.broker.topics import Topics, ensure_topics, topics_for
from router.config import Workspace
from router.dedup_changelog import DedupChangelog
from router.observability.processor import ProcessorMetrics
from router.pipeline.compile import compile_workspace
from router.pipeline.dedup import Deduplicator
from router.pipeline.pipeline import BatchResult, Pipeline
from router.privacy.state import SuppressionList
from router.roles import RoleBase
from router.schema_topic import SchemaKeeper

logger = logging.getLogger(__name__)


def destination_call_types(workspace: Workspace) -> dict[str, frozenset[str]]:
    """Per destination, the Segment call types its plugin takes (from the registry)."""
    return {
        dest.id: get_plugin(dest.type).call_types
        for dest in workspace.destinations
        if dest.enabled and get_plugin(dest.type).call_types != CALL_TYPES
    }


@dataclass(slots=True)
class _InFlight:
    """A batch whose outputs are submitted; committed once ``acked`` resolves."""

    first_offsets: dict[TopicPartition, int]
    next_offsets: dict[TopicPartition, int]
    result: BatchResult
    acked: asyncio.Future[Any]
    started: float
    stamp: float = 0.0  # first-seen time of the batch's dedup keys
    logged: asyncio.Future[dict[int, int]] | None = None  # changelog: partition -> next offset
    from_raw: int = 0  # records read from events.raw (the rest came from events.rekeyed)


def _failed() -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(KafkaError("batch could not be submitted"))
    return future


def _logged_nothing() -> asyncio.Future[dict[int, int]]:
    future: asyncio.Future[dict[int, int]] = asyncio.get_running_loop().create_future()
    future.set_result({})
    return future


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Finish the batch in flight before partitions move; restore stores for new ones."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.processor.batch_lock:
            await self.processor.drain()
            await self.processor.stop_restoring()
            self.processor.dedup.close({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.processor.assigned(assigned)


class Processor(RoleBase):
    """Consumes ``events.raw`` in batches and writes ``dest.<id>`` / ``events.dlq``."""

    name = "processor"

    def __init__(
        self,
        workspace: Workspace,
        registry: CollectorRegistry,
        *,
        topics: Topics | None = None,
        stop_grace: float = 20.0,
        group_id: str | None = None,
    ) -> None:
        self.workspace = workspace
        self.topics = topics or topics_for(workspace.kafka)
        self.metrics = ProcessorMetrics(registry)
        self.stop_grace = stop_grace
        settings = workspace.processor
        kafka = workspace.kafka
        self.group_id = group_id or f"{kafka.client_id}-{kafka.topic_prefix}processor"
        state = Path(settings.state_dir) / "dedup" / self.topics.raw
        self.dedup = Deduplicator(
            state, settings.dedup_window, on_empty_store=self.metrics.on_empty_store
        )
        self.assignor = CopartitionedAssignor(self._local_partitions)
        self._owned: set[int] = set()  # partition numbers assigned at the last rebalance
        self._changelog: DedupChangelog | None = None
        self._restoring: asyncio.Task[None] | None = None
        self.processed = 0  # records read and processed here (not moved to events.rekeyed)
        #: Suppressed users, read whole before the first batch and followed meanwhile.
        self.suppressions = SuppressionList()
        self._suppression_tail = self.suppressions.tail(kafka, self.topics, role="processor")
        self.batch_lock = asyncio.Lock()
        self.max_in_flight = 1  # batches whose acks are awaited while the next one is built
        self._in_flight: deque[_InFlight] = deque()
        self.batches = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._sender: BatchSender | None = None
        self._pipeline: Pipeline | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._last_progress = time.monotonic()
        self._failure: str | None = None
        # What went wrong outside the loop (opening or restoring a dedup store): the loop
        # raises it, so it ends the role as its own errors do.
        self._broken: Exception | None = None
        self._last_lag_check = 0.0
        #: Source schemas of what this processor saw (router.schema_topic).
        self.schemas = SchemaKeeper(workspace.kafka, self.topics, interval=settings.schema_interval)

    async def start(self) -> None:
        kafka = self.workspace.kafka
        internal = self.topics.internal
        await ensure_topics(
            kafka, [t for t in self.topics.for_workspace(self.workspace) if t not in internal]
        )
        compiled = compile_workspace(
            self.workspace, self.topics, destination_call_types(self.workspace)
        )
        producer = make_producer(kafka, role="processor")
        await producer.start()
        self._sender = BatchSender(producer)
        # As many partitions as events.raw has, whatever created it (a producer's first
        # write may have, with the broker's default count).
        raw_partitions = len(await producer.partitions_for(self.topics.raw))
        await ensure_topics(
            kafka.model_copy(update={"partitions": raw_partitions}),
            internal,
            self.topics.configs(self.workspace),
        )
        partition_counts = {
            topic: len(await producer.partitions_for(topic))
            for topic in (
                *(dest.topic for dest in compiled.destinations.values()),
                self.topics.raw,
                self.topics.rekeyed,
                self.topics.dedup_changelog,
            )
        }
        try:
            _check_copartitioned(self.topics, partition_counts)
        except RuntimeError:
            await producer.stop()
            raise
        self._changelog = DedupChangelog(producer, self.topics, self.dedup, kafka)
        # Before the first batch: every suppression written so far is in force.
        await self._suppression_tail.start()
        self._pipeline = Pipeline(
            compiled, self.topics, self.dedup, partition_counts, self.suppressions.users
        )
        self._pipeline.observe = self.schemas.observe
        await self.schemas.start(self._sender)
        consumer = make_consumer(
            kafka,
            group_id=self.group_id,
            role="processor",
            max_poll_records=self.workspace.processor.max_batch,
            # Round robin only while a member of an earlier version is in the group (the
            # coordinator picks a strategy every member offers): see assigned().
            partition_assignment_strategy=(self.assignor, RoundRobinPartitionAssignor),
        )
        consumer.subscribe([self.topics.raw, self.topics.rekeyed], listener=_Rebalance(self))
        self._consumer = consumer  # before start: the first assignment may come during it
        await consumer.start()
        self._last_progress = time.monotonic()
        self._task = asyncio.create_task(self._supervised(), name="processor-loop")
        logger.info(
            "processor consuming %s as group %s (%d destinations)",
            self.topics.raw,
            self.group_id,
            len(compiled.destinations),
        )

    async def _supervised(self) -> None:
        """Run the loop; if anything escapes it, say so at once and keep the reason.

        Events cannot end the loop (every stage isolates a failing event), so what does is a
        bug or a broken environment (a dedup store that cannot be written...): retrying the
        same batch would fail the same way, so the loop ends for good, the traceback is logged
        now rather than at shutdown, and :meth:`failure` tells the host, which stops.
        """
        try:
            await self._run()
        except Exception as exc:
            self._failure = f"the processor loop stopped: {type(exc).__name__}: {exc}"
            logger.critical("%s; the processor stops", self._failure, exc_info=exc)

    def failure(self) -> str | None:
        return self._failure or self._suppression_tail.failure()

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        timeout_ms = int(self.workspace.processor.poll_timeout * 1000)
        max_records = self.workspace.processor.max_batch
        backoff = Backoff(first=0.5, cap=10.0)
        while not self._stopping.is_set():
            if self._broken is not None:
                raise self._broken
            try:
                # With a batch in flight, poll briefly so its commit is not held back.
                wait = 10 if self._in_flight else timeout_ms
                polled = await consumer.getmany(timeout_ms=wait, max_records=max_records)
            except KafkaError as exc:
                logger.warning("poll failed, retrying: %s", exc)
                await backoff.wait(self._stopping)
                continue
            self._last_progress = time.monotonic()
            self.metrics.on_progress(time.time())
            await self._refresh_lag(consumer)
            async with self.batch_lock:
                try:
                    if polled:
                        await self._submit(polled)
                    # Overlap one batch's acks with the next batch's work, but no more:
                    # finalize (remember keys, commit) strictly in order.
                    while self._in_flight and (
                        not polled
                        or self._in_flight[0].acked.done()
                        or len(self._in_flight) > self.max_in_flight
                    ):
                        await self._finalize(self._in_flight.popleft())
                    backoff.reset()
                except KafkaError as exc:
                    # Outputs may be partly written: rewind to the oldest unfinished batch and
                    # redo everything after it (duplicates downstream are allowed, gaps never).
                    logger.warning("could not write a batch, will redo it: %s", exc)
                    self._rewind()
                    await backoff.wait(self._stopping)
        async with self.batch_lock:
            await self.drain()

    async def _refresh_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Records of events.raw and events.rekeyed not yet taken, once a second, for the lag
        gauge (the high watermark of each fetch answer is right on every broker; ListOffsets
        is not on Tansu)."""
        now = time.monotonic()
        if now - self._last_lag_check < 1.0:
            return
        self._last_lag_check = now
        lag = 0
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            with contextlib.suppress(KafkaError, IllegalStateError):
                lag += max(0, highwater - await consumer.position(tp))
        self.metrics.on_lag(lag)

    async def _submit(self, polled: dict[TopicPartition, list]) -> None:  # type: ignore[type-arg]
        assert self._pipeline is not None and self._sender is not None
        assert self._changelog is not None
        started = time.perf_counter()
        stamp = time.time()
        records = [r for batch in polled.values() for r in batch]
        result: BatchResult = self._pipeline.process(records)
        first = {tp: batch[0].offset for tp, batch in polled.items()}
        following = {tp: batch[-1].offset + 1 for tp, batch in polled.items()}
        pending = result.pending_keys
        try:
            acked = await self._sender.submit(result.outputs)
            try:
                logged = (
                    await self._changelog.submit(pending, stamp, following)
                    if pending
                    else _logged_nothing()
                )
            except KafkaError:
                acked.cancel()  # the batch is redone whole
                raise
        except KafkaError:
            self.dedup.forget(pending)
            self._in_flight.append(_InFlight(first, following, result, _failed(), started))
            raise
        from_raw = sum(len(b) for tp, b in polled.items() if tp.topic == self.topics.raw)
        self._in_flight.append(
            _InFlight(
                first,
                following,
                result,
                asyncio.gather(acked, logged),
                started,
                stamp,
                logged,
                from_raw,
            )
        )

    async def _finalize(self, batch: _InFlight) -> None:
        """The batch's outputs are acknowledged: remember its dedup keys, then commit."""
        assert self._consumer is not None
        try:
            await batch.acked
        except BaseException:
            self._in_flight.appendleft(batch)
            raise
        checkpoints = batch.logged.result() if batch.logged is not None else None
        self.dedup.remember(batch.result.pending_keys, batch.stamp, checkpoints)
        try:
            await self._consumer.commit(batch.next_offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced: the new owner replays from the last commit; dedup keys are
            # already written here, and duplicates downstream are allowed.
            logger.warning("offset commit refused after rebalance: %s", exc)
        stats = batch.result.stats
        self.processed += stats.received - sum(stats.rekeyed.values())
        self.metrics.on_batch(
            # Records read back from events.rekeyed were counted when read from events.raw.
            received=batch.from_raw,
            rekeyed=stats.rekeyed,
            rejected=dict(stats.rejected),
            duplicates=stats.duplicates,
            dropped=dict(stats.dropped),
            routed=dict(stats.routed),
            seconds=time.perf_counter() - batch.started,
        )
        for (source, kind), count in stats.violations.items():
            self.metrics.on_violation(source, kind, count)
        self.batches += 1

    def _rewind(self) -> None:
        """Forget every unfinished batch and seek back to where the oldest one started."""
        assert self._consumer is not None
        starts: dict[TopicPartition, int] = {}
        for batch in self._in_flight:
            self.dedup.forget(batch.result.pending_keys)
            for tp, offset in batch.first_offsets.items():
                starts.setdefault(tp, offset)
            if not batch.acked.done():
                batch.acked.cancel()
            elif not batch.acked.cancelled():
                batch.acked.exception()  # retrieved, so asyncio does not warn about it
        self._in_flight.clear()
        for tp, offset in starts.items():
            with contextlib.suppress(IllegalStateError):
                self._consumer.seek(tp, offset)

    def _local_partitions(self) -> tuple[set[int], set[int]]:
        """For the assignor: partition numbers owned before this rebalance, stores on disk."""
        return set(self._owned), self.dedup.stored_partitions()

    def assigned(self, assigned: set[TopicPartition]) -> None:
        """Pause what was assigned, then restore the stores and resume in the background.

        Restoring can take long (a whole window for a new store); the rebalance callback must
        not, or the member misses its heartbeats.
        """
        assert self._consumer is not None
        consumer = self._consumer
        consumer.pause(*assigned)  # first: nothing of these may be read before its store is
        inputs = (self.topics.raw, self.topics.rekeyed)
        numbers = {tp.partition for tp in assigned}
        paired = {
            p for p in numbers if all(TopicPartition(topic, p) in assigned for topic in inputs)
        }
        if numbers - paired:
            # Only under round robin, while the group still has a member of an earlier version
            # (during an upgrade): a store must never see one of the two topics without the
            # other, so these wait for a rebalance that pairs them.
            logger.warning(
                "partitions %s assigned on only one of %s (a member of an earlier version in "
                "the group?): left paused until a rebalance pairs them",
                sorted(numbers - paired),
                " and ".join(inputs),
            )
        self._owned = paired
        resume = [tp for tp in assigned if tp.partition in paired]
        if self._restoring is not None:
            self._restoring.cancel()  # normally stopped when partitions were revoked
        if not self.dedup.enabled or not paired:
            consumer.resume(*resume)
            return
        try:
            self.dedup.open(paired)
        except Exception as exc:  # noqa: BLE001 - the loop raises it: the role stops
            self._broken = exc
            return
        self._restoring = asyncio.create_task(
            self._restore(paired, resume), name="processor-dedup-restore"
        )

    async def _restore(self, partitions: set[int], resume: list[TopicPartition]) -> None:
        assert self._consumer is not None and self._changelog is not None
        consumer = self._consumer
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            started = time.monotonic()
            try:
                committed: dict[int, tuple[int, int]] = {}
                for partition in sorted(partitions):
                    raw = await consumer.committed(TopicPartition(self.topics.raw, partition))
                    rekeyed = await consumer.committed(
                        TopicPartition(self.topics.rekeyed, partition)
                    )
                    committed[partition] = (
                        -1 if raw is None else raw,
                        -1 if rekeyed is None else rekeyed,
                    )
                keys = await self._changelog.restore(committed)
                break
            except KafkaError as exc:
                # Kept paused: a delay, never a duplicate checked against a store behind.
                logger.warning("dedup restore failed, retrying: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the loop raises it: the role stops
                self._broken = exc
                return
            await backoff.wait(self._stopping)
            if self._stopping.is_set():
                return
        self.metrics.on_restored(keys)
        logger.info(
            "dedup stores %s restored from %s in %.2fs (%d keys)",
            sorted(partitions),
            self.topics.dedup_changelog,
            time.monotonic() - started,
            keys,
        )
        consumer.resume(*resume)

    async def stop_restoring(self) -> None:
        task, self._restoring = self._restoring, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def drain(self) -> None:
        """Finalize every batch in flight (before a rebalance or a stop); caller holds the lock."""
        try:
            while self._in_flight:
                await self._finalize(self._in_flight.popleft())
        except KafkaError as exc:
            logger.warning("batch in flight not acknowledged, it will be replayed: %s", exc)
            self._rewind()

    async def stop(self) -> None:
        """Stop fetching, finish the batch in flight (bounded), commit, close."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.stop_grace)
            except TimeoutError:
                logger.error(
                    "processor batch did not finish within %.0fs; abandoning it", self.stop_grace
                )
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        await self.stop_restoring()
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(self._consumer.stop(), 10)
            self._consumer = None
        await self.schemas.stop()
        if self._sender is not None:
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(self._sender.producer.stop(), 10)
            self._sender = None
        await self._suppression_tail.stop()
        self.dedup.close()

    def health(self) -> tuple[bool, str]:
        if self._task is None:
            return False, "not running"
        following = self._suppression_tail.failure()
        if following:
            return False, following
        if self._task.done():
            return False, self._failure or "processor loop exited"
        idle = time.monotonic() - self._last_progress
        if idle > 120:
            return False, f"no poll completed for {idle:.0f}s"
        return True, f"{self.batches} batches"


def _check_copartitioned(topics: Topics, counts: dict[str, int]) -> None:
    """events.rekeyed and dedup.changelog must have exactly as many partitions as events.raw:
    partition p of each belongs to dedup store p."""
    raw = counts[topics.raw]
    for topic in (topics.rekeyed, topics.dedup_changelog):
        if counts[topic] != raw:
            raise RuntimeError(
                f"{topic} has {counts[topic]} partitions and {topics.raw} has {raw}: they must "
                f"be equal (add partitions to {topic}, or delete it to have it recreated)"
            )
