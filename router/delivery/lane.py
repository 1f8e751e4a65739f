"""One destination's delivery lane: its own consumer group, queue, senders, limiter and writer.

Flow: the fetch loop polls ``dest.<id>`` and ``dest.<id>.retry`` (one consumer, group
``<client_id>-deliver-<id>``), turns records into :class:`InFlight` items, cuts them into
batches of ``delivery.batch_size`` and queues them; ``delivery.concurrency`` sender tasks
take batches, wait for the rate limiter, encode, send and classify, then hand the outcome
records (retry, dead letter, status) to the lane's writer and take the next batch; the events
count as finished only once those records are acknowledged, and only the finished prefix of
each partition is committed.

Nothing here is shared with another destination except the Kafka producer and the aiohttp
session (which has no global connection limit), so a slow or failing partner only fills
its own lane.

Bounds: at most ``delivery.max_in_flight_events`` events between fetch and outcome (fetching
pauses at the bound); the queue holds batches of those events only; the consumer prefetches
at most 1 MiB per partition. A retry record that is not due yet pauses its retry partition
(seek back, ``pause``) until its due time; fresh traffic keeps flowing meanwhile, and the
loop never sleeps on a retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from destinations.base import AnyPlugin, DestinationError, Encoded, Event
from router.broker.clients import BatchSender, OutRecord, make_consumer
from router.broker.topics import Topics
from router.config import Destination, KafkaSettings
from router.delivery.offsets import OffsetTracker
from router.delivery.outcomes import OutcomeWriter
from router.delivery.records import (
    Failure,
    InFlight,
    Outcome,
    RetryState,
    dead_letter_record,
    retry_record,
    status_error_json,
    status_record,
)
from router.delivery.retry import RetryPolicy
from router.delivery.throttle import RateLimiter
from router.observability.delivery import DeliveryMetrics
from router.spec import received_at_seconds

logger = logging.getLogger(__name__)

RETRIES_EXHAUSTED = "retries_exhausted"
#: Longest pause of a whole lane for a partner's Retry-After (longer asks still delay the
#: events concerned through their due time, but fresh events are tried again after this).
HOLD_CAP = 60.0
#: Bytes of request/response bodies in status records (dead letters keep more).
STATUS_BODY_LIMIT = 1024
#: Wait in a rebalance for in-flight work of revoked partitions before giving them up.
REVOKE_WAIT = 5.0
COMMIT_TIMEOUT = 10.0


def _tp(item: InFlight) -> TopicPartition:
    return TopicPartition(item.topic, item.partition)


def _decode(value: bytes | None) -> Event | None:
    if not value:
        return None
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None


def _request_result(exc: DestinationError, plugin: AnyPlugin) -> str:
    """Bounded label for ``requests_total``: 4xx / 5xx / timeout / connection / other."""
    status = plugin.status_of(exc.response) if exc.response is not None else None
    if status is not None:
        return f"{status // 100}xx"
    return exc.reason if exc.reason in ("timeout", "connection") else "other"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, lane: DestinationLane) -> None:
        self.lane = lane

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.lane.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.lane.on_assigned(set(assigned))


class DestinationLane:
    """Fetch, batch, send and account for one destination; see the module docstring."""

    def __init__(
        self,
        destination: Destination,
        plugin: AnyPlugin,
        *,
        kafka: KafkaSettings,
        topics: Topics,
        sender: BatchSender,
        metrics: DeliveryMetrics,
        commit_interval: float = 1.0,
        stall_after: float | None = None,
        consumer_options: Mapping[str, object] | None = None,
        poll_timeout: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.destination = destination
        self.id = destination.id
        self.plugin = plugin
        self.options = destination.delivery
        self.kafka = kafka
        self.topic = topics.destination(self.id)
        self.retry_topic = topics.retry(self.id)
        self.dlq_topic = topics.dead_letter(self.id)
        self.status_topic = topics.status
        # The topic prefix keeps workspaces that share a cluster (and client_id) apart.
        self.group_id = f"{kafka.client_id}-{kafka.topic_prefix}deliver-{self.id}"
        self.metrics = metrics
        self.commit_interval = commit_interval
        self.stall_after = stall_after or max(120.0, 3 * self.options.timeout + HOLD_CAP)
        self.poll_timeout = poll_timeout
        self.max_in_flight = self.options.max_in_flight_events
        self._refill_at = self.max_in_flight - max(1, self.max_in_flight // 4)
        self._full = False
        self.policy = RetryPolicy.from_options(self.options)
        self.limiter = RateLimiter(self.options.rate_limit)
        self.sender = sender
        self.writer = OutcomeWriter(sender, name=self.id)
        self._status_partitions: int | None = None  # known at start
        self._retry_partitions: int | None = None
        self.tracker = OffsetTracker()
        # Every queued batch holds at least one in-flight event, so this bound is never hit
        # before the in-flight bound; it exists so the queue is bounded on its own too.
        self.queue: asyncio.Queue[list[InFlight]] = asyncio.Queue(maxsize=self.max_in_flight)
        self.in_flight = 0
        self.lag = 0
        #: Times a retry partition was paused because its next record was not due.
        self.deferrals = 0
        self.commits = 0
        self._consumer_options: dict[str, object] = {
            "max_partition_fetch_bytes": 1024 * 1024,
            "fetch_max_bytes": 16 * 1024 * 1024,
            "max_poll_records": min(5000, self.max_in_flight),
        }
        self._consumer_options.update(consumer_options or {})
        self._rng = rng or random.Random()
        self._consumer: AIOKafkaConsumer | None = None
        self._due: dict[TopicPartition, float] = {}
        self._capacity = asyncio.Event()  # set whenever events leave the lane
        self._released = asyncio.Event()  # same, for a rebalance waiting on its partitions
        self._fetcher: asyncio.Task[None] | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._stopping = False
        self._handoff = False
        self._stopped = False
        self._broken: str | None = None
        self._last_poll = time.monotonic()
        self._last_progress = time.monotonic()
        self._last_commit = time.monotonic()
        self._last_lag_check = 0.0

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError(f"lane {self.id} is not started")
        return self._consumer

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.metrics.register_destination(self.id)
        producer = self.sender.producer
        partitions = await producer.partitions_for(self.status_topic)
        self._status_partitions = len(partitions) if partitions else None
        partitions = await producer.partitions_for(self.retry_topic)
        self._retry_partitions = len(partitions) if partitions else None
        consumer = make_consumer(
            self.kafka, group_id=self.group_id, role=f"deliver-{self.id}", **self._consumer_options
        )
        consumer.subscribe(topics=[self.topic, self.retry_topic], listener=_Rebalance(self))
        await consumer.start()
        self._consumer = consumer
        self.writer.start()
        now = time.monotonic()
        self._last_poll = self._last_progress = self._last_commit = now
        self._senders = [
            asyncio.create_task(self._sender_loop(), name=f"deliver-{self.id}-send-{i}")
            for i in range(self.options.concurrency)
        ]
        self._fetcher = asyncio.create_task(self._fetch_loop(), name=f"deliver-{self.id}-fetch")
        logger.info(
            "delivering %s (%s) from %s as group %s: batch %d, concurrency %d, in flight <= %d",
            self.id,
            self.plugin.type_name,
            self.topic,
            self.group_id,
            self.options.batch_size,
            self.options.concurrency,
            self.max_in_flight,
        )

    async def stop(self, deadline: float) -> None:
        """Stop fetching, finish what can be finished, hand off the rest, commit, leave.

        ``deadline`` is in ``loop.time()``. Half the time goes to finishing queued work, then
        batches not started yet are handed off (left uncommitted for the next owner) while
        requests already sent may finish; what is still running at 80% is cancelled.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping = True
        loop = asyncio.get_running_loop()
        start = loop.time()
        span = max(0.0, deadline - start)
        drain_until = start + span * 0.5
        cancel_at = start + span * 0.8
        if self._fetcher is not None:
            await _wait_task(self._fetcher, drain_until)
        if not await self._join_queue(drain_until):
            self._handoff = True
            logger.info(
                "%s: handing off queued work to the next owner (%d event(s) in flight)",
                self.id,
                self.in_flight,
            )
            await self._join_queue(cancel_at)
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        if not await self.writer.drain(deadline - loop.time() - 1.0):
            logger.warning("%s: outcome records still unwritten at shutdown", self.id)
        if self._consumer is not None:
            await self._commit(self.tracker.committable(), time_limit=deadline - loop.time())
        await self.writer.stop()
        if self._consumer is not None:
            try:
                async with asyncio.timeout(max(0.5, deadline - loop.time())):
                    await self._consumer.stop()
            except TimeoutError:
                logger.warning("%s: consumer did not leave its group in time", self.id)
        logger.info(
            "%s stopped: %d event(s) not finished (left for the next owner)",
            self.id,
            self.tracker.pending(),
        )

    async def _join_queue(self, until: float) -> bool:
        try:
            async with asyncio.timeout_at(until):
                await self.queue.join()
        except TimeoutError:
            return False
        return True

    def health(self) -> tuple[bool, str]:
        now = time.monotonic()
        if self._fetcher is None:
            return True, "starting"  # joining the group takes seconds; that is not a stall
        if self._broken:
            return False, self._broken
        if self._fetcher.done() and not self._stopping:
            error = None if self._fetcher.cancelled() else self._fetcher.exception()
            return False, f"fetch loop ended: {error!r}"
        if not self._stopping and now - self._last_poll > self.stall_after:
            return False, f"no poll for {now - self._last_poll:.0f}s"
        busy = self.lag > 0 or self.in_flight > 0
        idle_for = now - self._last_progress
        if busy and idle_for > self.stall_after:
            return False, (
                f"no outcome for {idle_for:.0f}s with lag {self.lag} and {self.in_flight} in flight"
            )
        return True, f"lag {self.lag}, {self.in_flight} in flight"

    # ------------------------------------------------------------ rebalances

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.tracker.assign(assigned)
        names = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        logger.info("%s: assigned %s", self.id, ", ".join(names))

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

    # ------------------------------------------------------------ fetching

    async def _fetch_loop(self) -> None:
        poll_ms = round(self.poll_timeout * 1000)
        while not self._stopping:
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
                self._apply_pauses(everything=False)
                capacity = self.max_in_flight - self.in_flight
                polled = await self.consumer.getmany(timeout_ms=poll_ms, max_records=capacity)
                self._last_poll = time.monotonic()
                if polled and not self._stopping:
                    await self._take(polled)
                elif self.in_flight == 0 and self.lag == 0:
                    self._progress()
                await self._maybe_commit()
                await self._refresh_lag()
            except KafkaError as exc:
                logger.warning("%s: fetch failed (%s); polling again", self.id, exc)
                await asyncio.sleep(0.5)
            except Exception:
                logger.exception("%s: the fetch loop failed; delivery stopped", self.id)
                raise

    async def _wait_for_capacity(self) -> None:
        """At the in-flight bound: fetch nothing, keep polling so the group keeps us.

        Returns once a quarter of the bound is free, or after ``poll_timeout``.
        """
        self._apply_pauses(everything=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_timeout):
                while self.in_flight > self._refill_at and not self._stopping:
                    self._capacity.clear()
                    await self._capacity.wait()
        await self.consumer.getmany(timeout_ms=0)  # every partition is paused: returns nothing
        self._last_poll = time.monotonic()
        await self._maybe_commit()

    def _apply_pauses(self, *, everything: bool) -> None:
        consumer = self.consumer
        assigned = consumer.assignment()
        now = time.time()
        for tp, due in list(self._due.items()):
            if due <= now or tp not in assigned:
                del self._due[tp]
        wanted = set(assigned) if everything else set(self._due)
        paused = consumer.paused()
        if wanted - paused:
            consumer.pause(*(wanted - paused))
        if paused - wanted:
            consumer.resume(*(paused - wanted))

    async def _take(self, polled: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        now = time.time()
        items: list[InFlight] = []
        for tp, records in polled.items():
            epoch = self.tracker.epoch(tp)
            if epoch is None:  # records before the assignment callback: adopt the partition
                self.tracker.assign([tp])
                epoch = self.tracker.epoch(tp)
            assert epoch is not None
            retry = tp.topic == self.retry_topic
            for record in records:
                state = RetryState.from_headers(tuple(record.headers or ())) if retry else None
                if state is not None and state.due > now:
                    # Not due: re-read it from here once due; pausing keeps the loop idle.
                    self.consumer.seek(tp, record.offset)
                    self._due[tp] = state.due
                    self.deferrals += 1
                    break
                item = self._item(tp, record, "retry" if retry else "fresh", state, epoch)
                self.tracker.add(tp, record.offset)
                items.append(item)
        if not items:
            return
        self.in_flight += len(items)
        self.metrics.on_in_flight(self.id, self.in_flight)
        origins = Counter(item.origin for item in items)
        for origin, count in origins.items():
            self.metrics.on_received(self.id, origin, count)
        size = self.options.batch_size
        for start in range(0, len(items), size):
            await self.queue.put(items[start : start + size])

    def _item(
        self,
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
            event=_decode(record.value),
            origin=origin,
            attempt=state.attempt if state else 0,
            first_failure=state.first_failure if state else None,
            epoch=epoch,
        )

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
        self.metrics.on_lag(self.id, total)

    # ------------------------------------------------------------ committing

    async def _maybe_commit(self) -> None:
        if time.monotonic() - self._last_commit >= self.commit_interval:
            await self._commit(self.tracker.committable(), time_limit=COMMIT_TIMEOUT)

    async def _commit(self, offsets: dict[TopicPartition, int], *, time_limit: float) -> bool:
        self._last_commit = time.monotonic()
        assigned = self.consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return True
        try:
            async with asyncio.timeout(max(0.1, time_limit)):
                await self.consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            # Not fatal: a later commit covers these offsets, or the next owner redelivers.
            logger.warning("%s: commit failed (%r)", self.id, exc)
            return False
        self.tracker.committed(offsets)
        self.commits += 1
        return True

    # ------------------------------------------------------------ sending

    async def _sender_loop(self) -> None:
        while True:
            batch = await self.queue.get()
            try:
                await self._handle(batch)
            except Exception as exc:
                # Outcomes of this batch are unknown: never commit past them, report unhealthy.
                logger.exception(
                    "%s: delivery of %d event(s) failed unexpectedly", self.id, len(batch)
                )
                self._broken = f"outcome of {len(batch)} event(s) unknown: {exc!r}"
            finally:
                self.queue.task_done()

    async def _handle(self, batch: list[InFlight]) -> None:
        owned: dict[tuple[str, int, int], bool] = {}  # one lookup per partition, not per event
        live = []
        for item in batch:
            where = (item.topic, item.partition, item.epoch)
            mine = owned.get(where)
            if mine is None:
                mine = owned[where] = self.tracker.owns(_tp(item), item.epoch)
            if mine:
                live.append(item)
        if len(live) < len(batch):
            self._release(len(batch) - len(live))  # revoked meanwhile: the new owner has them
        if not live:
            return
        if self._handoff:
            self._release(len(live))  # shutting down: left uncommitted for the next owner
            return
        outcomes = await self._attempt(live)
        # Not awaited: the next request need not wait for Kafka. The events stay in flight
        # (bounded, uncommitted) until their outcome records are acknowledged.
        self.writer.submit(self._records(outcomes), lambda error: self._written(outcomes, error))

    def _written(self, outcomes: list[Outcome], error: Exception | None) -> None:
        if error is None:
            self._account(outcomes)
            return
        # Outcomes of these events are not durable: never commit past them, report unhealthy.
        logger.error(
            "%s: outcomes of %d event(s) cannot be written: %s", self.id, len(outcomes), error
        )
        self._broken = f"outcome of {len(outcomes)} event(s) unknown: {error!r}"

    async def _attempt(self, items: list[InFlight]) -> list[Outcome]:
        now = time.time()
        undecodable = Failure(
            "undecodable", "the record value is not a JSON object", retriable=False
        )
        outcomes = [self._failed(item, undecodable, now) for item in items if item.event is None]
        decoded = [item for item in items if item.event is not None]
        if decoded:
            outcomes.extend(await self._send(decoded))
        return outcomes

    async def _send(self, items: list[InFlight]) -> list[Outcome]:
        events = [cast(Event, item.event) for item in items]
        try:
            encoded = self.plugin.encode(events)
        except DestinationError as exc:
            if len(items) > 1:
                # Find the event(s) the partner cannot take; the others still go out.
                outcomes: list[Outcome] = []
                for item in items:
                    outcomes.extend(await self._send([item]))
                return outcomes
            return [self._failed(items[0], self._failure(exc, None), time.time())]
        except Exception as exc:
            logger.exception("%s: the %s encoder failed", self.id, self.plugin.type_name)
            failure = Failure("plugin_error", f"{type(exc).__name__} in encode: {exc}", False)
            return [self._failed(item, failure, time.time()) for item in items]
        if not isinstance(encoded, Encoded):
            encoded = Encoded([encoded])
        now = time.time()
        outcomes = [
            self._failed(items[position], self._failure(exc, None), now)
            for position, exc in encoded.failed.items()
        ]
        rest = [i for i in range(len(items)) if i not in encoded.failed]
        for request in encoded.requests:
            covers = getattr(request, "covers", ()) or rest
            outcomes.extend(await self._request(request, [items[i] for i in covers]))
        return outcomes

    async def _request(self, request: Any, items: list[InFlight]) -> list[Outcome]:
        """Send one request for ``items`` and decide each one's outcome."""
        await self.limiter.acquire()
        started = time.monotonic()
        try:
            response = await self.plugin.send(request)
            rejected = self.plugin.check(request, response)
        except DestinationError as exc:
            duration = time.monotonic() - started
            self.metrics.on_request(self.id, _request_result(exc, self.plugin), duration)
            if exc.retriable and exc.retry_after and exc.response is not None:
                self.limiter.hold(min(exc.retry_after, HOLD_CAP))
            failure = self._failure(exc, request)
            now = time.time()
            return [self._failed(item, failure, now, duration) for item in items]
        except Exception as exc:
            logger.exception("%s: the %s sender failed", self.id, self.plugin.type_name)
            failure = Failure(
                "plugin_error",
                f"{type(exc).__name__} in send: {exc}",
                False,
                request=self.plugin.describe_request(request),
            )
            return [self._failed(item, failure, time.time()) for item in items]
        duration = time.monotonic() - started
        self.metrics.on_request(self.id, "2xx", duration)
        now = time.time()
        status = self.plugin.status_of(response)
        outcomes = []
        failures: dict[int, Failure] = {}
        for index, item in enumerate(items):
            refused = rejected.get(index) if rejected else None
            if refused is not None:
                known = failures.get(id(refused))
                if known is None:
                    known = failures[id(refused)] = self._failure(refused, request, response)
                outcomes.append(self._failed(item, known, now, duration))
                continue
            received = received_at_seconds(cast(Event, item.event))
            outcomes.append(
                Outcome(
                    item,
                    "delivered",
                    at=now,
                    attempt=item.attempt + 1,
                    latency=None if received is None else max(0.0, now - received),
                    duration=duration,
                    status=status,
                    first_failure=item.first_failure,
                )
            )
        return outcomes

    def _failure(self, exc: DestinationError, request: Any = None, response: Any = None) -> Failure:
        sent = exc.request or request
        plugin = self.plugin
        response = exc.response if exc.response is not None else response
        summary = {
            "request": plugin.describe_request(sent, limit=STATUS_BODY_LIMIT) if sent else None,
            "response": (
                plugin.describe_response(response, limit=STATUS_BODY_LIMIT) if response else None
            ),
        }
        return Failure(
            reason=exc.reason,
            message=plugin.describe_text(exc.message),
            retriable=exc.retriable,
            retry_after=exc.retry_after,
            status=plugin.status_of(response) if response is not None else None,
            request=plugin.describe_request(sent) if sent is not None else None,
            response=plugin.describe_response(response) if response is not None else None,
            summary=summary,
        )

    def _failed(
        self, item: InFlight, failure: Failure, now: float, duration: float | None = None
    ) -> Outcome:
        attempt = item.attempt + 1
        first = item.first_failure if item.first_failure is not None else now
        common: dict[str, Any] = {
            "at": now,
            "attempt": attempt,
            "duration": duration,
            "status": failure.status,
            "failure": failure,
            "first_failure": first,
        }
        if failure.retriable:
            due = self.policy.next_due(
                attempt=attempt,
                first_failure=first,
                now=now,
                retry_after=failure.retry_after,
                rng=self._rng,
            )
            if due is not None:
                return Outcome(item, "retry", reason=failure.reason, due=due, **common)
            return Outcome(item, "dlq", reason=RETRIES_EXHAUSTED, exhausted=True, **common)
        return Outcome(item, "dlq", reason=failure.reason, **common)

    def _records(self, outcomes: list[Outcome]) -> list[OutRecord]:
        kind = self.plugin.type_name
        records: list[OutRecord] = []
        # Every event of a failed request shares its Failure: serialize its error once.
        errors: dict[int, bytes] = {}
        for outcome in outcomes:
            if outcome.kind == "retry":
                records.append(
                    retry_record(self.retry_topic, outcome, partitions=self._retry_partitions)
                )
            elif outcome.kind == "dlq":
                records.append(
                    dead_letter_record(self.dlq_topic, outcome, destination=self.id, kind=kind)
                )
            failure = outcome.failure
            error_json = None
            if failure is not None:
                error_json = errors.get(id(failure))
                if error_json is None:
                    error_json = errors[id(failure)] = status_error_json(failure, failure.summary)
            records.append(
                status_record(
                    self.status_topic,
                    outcome,
                    destination=self.id,
                    kind=kind,
                    partitions=self._status_partitions,
                    error_json=error_json,
                )
            )
        return records

    def _account(self, outcomes: list[Outcome]) -> None:
        latencies: list[float | None] = []
        retries: dict[str, int] = {}  # plain dicts: a Counter per request costs more
        failed: dict[str, int] = {}
        finish = self.tracker.finish
        partitions: dict[tuple[str, int], TopicPartition] = {}
        for outcome in outcomes:
            item = outcome.item
            where = (item.topic, item.partition)
            tp = partitions.get(where)
            if tp is None:
                tp = partitions[where] = TopicPartition(item.topic, item.partition)
            finish(tp, item.offset, item.epoch)
            if outcome.kind == "delivered":
                latencies.append(outcome.latency)
            elif outcome.kind == "retry":
                reason = outcome.reason or "unknown"
                retries[reason] = retries.get(reason, 0) + 1
            else:
                reason = outcome.reason or "unknown"
                failed[reason] = failed.get(reason, 0) + 1
        self.metrics.on_delivered(self.id, latencies)
        for reason, count in retries.items():
            self.metrics.on_retry(self.id, reason, count)
        for reason, count in failed.items():
            self.metrics.on_failed(self.id, reason, count)
        self._release(len(outcomes))
        self._progress()

    def _release(self, count: int) -> None:
        self.in_flight -= count
        self.metrics.on_in_flight(self.id, self.in_flight)
        self._capacity.set()
        self._released.set()

    def _progress(self) -> None:
        self._last_progress = time.monotonic()
        self.metrics.on_progress(self.id, time.time())


async def _wait_task(task: asyncio.Task[None], until: float) -> None:
    """Let ``task`` end by itself until ``until`` (loop time), then cancel it."""
    try:
        async with asyncio.timeout_at(until):
            await asyncio.shield(task)
    except TimeoutError:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    except Exception:
        logger.exception("task %s ended with an error", task.get_name())
