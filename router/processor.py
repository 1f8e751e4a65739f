"""The stream processor: events.raw -> pipeline -> one topic per destination.

The hot path is one loop per poll, not faust's per-event ``Stream`` (design.md measured that at
5x-40x slower): ``getmany`` -> every stage over the batch -> ``send_batch`` per output partition
-> await every ack -> remember dedup keys -> commit the polled offsets. A crash anywhere in
that sequence replays the batch (at-least-once); nothing is committed before it is durable.
The faust-streaming worker (``router.app``) hosts this role for the CLI.
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
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import CollectorRegistry

from destinations.base import CALL_TYPES
from destinations.registry import get_plugin
from router.backoff import Backoff
from router.broker.clients import BatchSender, make_consumer, make_producer
from router.broker.topics import Topics, ensure_topics, topics_for
from router.config import Workspace
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


def _failed() -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_exception(KafkaError("batch could not be submitted"))
    return future


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Finish the batch in flight before partitions move, and open stores for new ones."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.processor.batch_lock:
            await self.processor.drain()
            self.processor.dedup.close(tp.partition for tp in revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.processor.dedup.open(tp.partition for tp in assigned)


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
        self._last_lag_check = 0.0
        #: Source schemas of what this processor saw (router.schema_topic).
        self.schemas = SchemaKeeper(workspace.kafka, self.topics, interval=settings.schema_interval)

    async def start(self) -> None:
        kafka = self.workspace.kafka
        await ensure_topics(kafka, self.topics.for_workspace(self.workspace))
        compiled = compile_workspace(
            self.workspace, self.topics, destination_call_types(self.workspace)
        )
        producer = make_producer(kafka, role="processor")
        await producer.start()
        self._sender = BatchSender(producer)
        partition_counts = {
            dest.topic: len(await producer.partitions_for(dest.topic))
            for dest in compiled.destinations.values()
        }
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
        )
        consumer.subscribe([self.topics.raw], listener=_Rebalance(self))
        await consumer.start()
        self._consumer = consumer
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
        """Records of events.raw not yet taken, once a second, for the lag gauge (the high
        watermark of each fetch answer is right on every broker; ListOffsets is not on Tansu)."""
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
        started = time.perf_counter()
        records = [r for batch in polled.values() for r in batch]
        result: BatchResult = self._pipeline.process(records)
        first = {tp: batch[0].offset for tp, batch in polled.items()}
        following = {tp: batch[-1].offset + 1 for tp, batch in polled.items()}
        try:
            acked = await self._sender.submit(result.outputs)
        except KafkaError:
            self.dedup.forget(result.pending_keys)
            self._in_flight.append(_InFlight(first, following, result, _failed(), started))
            raise
        self._in_flight.append(_InFlight(first, following, result, acked, started))

    async def _finalize(self, batch: _InFlight) -> None:
        """The batch's outputs are acknowledged: remember its dedup keys, then commit."""
        assert self._consumer is not None
        try:
            await batch.acked
        except BaseException:
            self._in_flight.appendleft(batch)
            raise
        self.dedup.remember(batch.result.pending_keys)
        try:
            await self._consumer.commit(batch.next_offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced: the new owner replays from the last commit; dedup keys are
            # already written here, and duplicates downstream are allowed.
            logger.warning("offset commit refused after rebalance: %s", exc)
        stats = batch.result.stats
        self.metrics.on_batch(
            received=stats.received,
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
