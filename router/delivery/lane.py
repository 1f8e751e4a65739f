"""One destination's delivery lane: batching, senders, rate limit, and outcome records.

Flow: the :class:`~router.delivery.fetcher.Fetcher` polls ``dest.<id>`` and its retry topic
and hands over :class:`InFlight` items; the lane cuts them into batches of the plugin's
``batch_size`` (a partial batch waits up to ``flush_interval`` for more) and queues them;
``delivery.concurrency`` sender tasks take batches, wait for the rate limiter, encode, send
and check each request through the plugin, decide each event's outcome
(:func:`~router.delivery.classify.classify`), and hand the retry, dead-letter and status
records to the lane's :class:`~router.delivery.outcomes.OutcomeWriter`; once Kafka
acknowledged them, :class:`~router.delivery.accounting.Accounting` finishes the offsets and
counts the metrics, and the fetcher may commit.

Nothing here is shared with another destination except the Kafka producer and the HTTP
client (which has no global connection limit), so a slow or failing partner only fills its
own lane.

Bounds: at most ``delivery.max_in_flight_events`` events between fetch and outcome; the queue
holds batches of those events only; the consumer prefetches at most 1 MiB per partition.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any, cast

from destinations.base import (
    CALL_TYPES,
    AnyPlugin,
    DestinationError,
    Encoded,
    Event,
    EventBatch,
)
from router.broker.clients import BatchSender, OutRecord
from router.broker.topics import Topics
from router.config import Destination, KafkaSettings
from router.delivery.accounting import Accounting
from router.delivery.classify import classify
from router.delivery.fetcher import Fetcher
from router.delivery.outcomes import OutcomeWriter
from router.delivery.records import (
    Failure,
    InFlight,
    Settled,
    dead_letter_records,
    head_message_id,
    retry_records,
    status_error_json,
    status_record,
)
from router.delivery.retry import RetryPolicy
from router.delivery.throttle import RateLimiter
from router.observability.delivery import DeliveryMetrics

logger = logging.getLogger(__name__)

#: Longest pause of a whole lane for a partner's Retry-After (longer asks still delay the
#: events concerned through their due time, but fresh events are tried again after this).
HOLD_CAP = 60.0
#: Bytes of request/response bodies in status records (dead letters keep more).
STATUS_BODY_LIMIT = 1024

_UNDECODABLE = Failure("undecodable", "the record value is not a JSON object", retriable=False)


def _request_result(exc: DestinationError, plugin: AnyPlugin) -> str:
    """Bounded label for ``requests_total``: 4xx / 5xx / timeout / connection / other."""
    status = plugin.status_of(exc.response) if exc.response is not None else None
    if status is not None:
        return f"{status // 100}xx"
    return exc.reason if exc.reason in ("timeout", "connection") else "other"


def _user_id(user: object) -> str | None:
    return None if user is None else user if type(user) is str else str(user)


class DestinationLane:
    """Batch, send and account for one destination; see the module docstring."""

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
        suppressed: AbstractSet[str] | None = None,
    ) -> None:
        self.destination = destination
        self.id = destination.id
        self.plugin = plugin
        self.kind = plugin.type_name
        self.options = destination.delivery
        self.topic = topics.destination(self.id)
        self.retry_topic = topics.retry(self.id)
        self.dlq_topic = topics.dead_letter(self.id)
        self.status_topic = topics.status
        # The topic prefix keeps workspaces that share a cluster (and client_id) apart.
        self.group_id = f"{kafka.client_id}-{kafka.topic_prefix}deliver-{self.id}"
        self.metrics = metrics
        self.stall_after = stall_after or max(120.0, 3 * self.options.timeout + HOLD_CAP)
        self.max_in_flight = self.options.max_in_flight_events
        self.batch_size = plugin.batch_size
        self.flush_interval = plugin.flush_interval
        self.policy = RetryPolicy.from_options(self.options)
        self.limiter = RateLimiter(self.options.rate_limit)
        self.writer = OutcomeWriter(sender, name=self.id)
        self.fetcher = Fetcher(
            self.id,
            kafka=kafka,
            group_id=self.group_id,
            topic=self.topic,
            retry_topic=self.retry_topic,
            max_in_flight=self.max_in_flight,
            take=self._take,
            commit_interval=commit_interval,
            poll_timeout=poll_timeout,
            consumer_options=consumer_options,
        )
        self.fetcher.on_idle = self._progress
        self.fetcher.on_lag = lambda lag: metrics.on_lag(self.id, lag)
        self.accounting = Accounting(
            self.id, metrics, finish=self.fetcher.finish, release=self._release
        )
        self._producer = sender.producer
        self._status_partitions: int | None = None  # known at start
        self._retry_partitions: int | None = None
        # Every queued batch holds at least one in-flight event, so this bound is never hit
        # before the in-flight bound; it exists so the queue is bounded on its own too.
        self.queue: asyncio.Queue[list[InFlight]] = asyncio.Queue(maxsize=self.max_in_flight)
        self._partial: list[InFlight] = []
        self._flush: asyncio.Task[None] | None = None
        self._types = None if plugin.call_types == CALL_TYPES else plugin.call_types
        self._rng = rng or random.Random()
        #: Suppressed user ids (the agent follows privacy.suppressions): events routed before
        #: the suppression took effect, retries and redrives of that user are not sent.
        self._suppressed = suppressed
        self._senders: list[asyncio.Task[None]] = []
        self._stopping = False
        self._handoff = False
        self._stopped = False
        self._broken: str | None = None
        self._last_progress = time.monotonic()
        self._progress_at = time.time()  # the same moment as UNIX time, for the metric

    # ------------------------------------------------------------ lifecycle

    @property
    def in_flight(self) -> int:
        return self.fetcher.in_flight

    @property
    def lag(self) -> int:
        return self.fetcher.lag

    async def start(self) -> None:
        self.metrics.register_destination(self.id)
        self.metrics.watch_lane(self.id, lambda: self.in_flight, lambda: self._progress_at)
        partitions = await self._producer.partitions_for(self.status_topic)
        self._status_partitions = len(partitions) if partitions else None
        partitions = await self._producer.partitions_for(self.retry_topic)
        self._retry_partitions = len(partitions) if partitions else None
        self.writer.start()
        await self.fetcher.start()
        self._last_progress = time.monotonic()
        self._senders = [
            asyncio.create_task(self._sender_loop(), name=f"deliver-{self.id}-send-{i}")
            for i in range(self.options.concurrency)
        ]
        logger.info(
            "delivering %s (%s) from %s as group %s: batch %d, concurrency %d, in flight <= %d",
            self.id,
            self.kind,
            self.topic,
            self.group_id,
            self.batch_size,
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
        await self.fetcher.stop_fetching(drain_until)
        await self._flush_partial()
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
        if self._flush is not None:
            self._flush.cancel()
            await asyncio.gather(self._flush, return_exceptions=True)
        if not await self.writer.drain(deadline - loop.time() - 1.0):
            logger.warning("%s: outcome records still unwritten at shutdown", self.id)
        await self.fetcher.close(time_limit=deadline - loop.time())
        await self.writer.stop()
        self.accounting.flush_log()
        logger.info(
            "%s stopped: %d event(s) not finished (left for the next owner)",
            self.id,
            self.fetcher.pending(),
        )

    async def _join_queue(self, until: float) -> bool:
        try:
            async with asyncio.timeout_at(until):
                await self.queue.join()
        except TimeoutError:
            return False
        return True

    def failure(self) -> str | None:
        """Why this lane stopped delivering for good (its fetch loop ended), else None."""
        task = self.fetcher.task
        if task is not None and task.done() and not self._stopping:
            error = None if task.cancelled() else task.exception()
            return f"{self.id}: fetch loop ended: {error!r}"
        return self._broken

    def health(self) -> tuple[bool, str]:
        now = time.monotonic()
        if self.fetcher.task is None:
            return True, "starting"  # joining the group takes seconds; that is not a stall
        failure = self.failure()
        if failure:
            return False, failure
        if not self._stopping and now - self.fetcher.last_poll > self.stall_after:
            return False, f"no poll for {now - self.fetcher.last_poll:.0f}s"
        busy = self.lag > 0 or self.in_flight > 0
        idle_for = now - self._last_progress
        if busy and idle_for > self.stall_after:
            return False, (
                f"no outcome for {idle_for:.0f}s with lag {self.lag} and {self.in_flight} in flight"
            )
        return True, f"lag {self.lag}, {self.in_flight} in flight"

    # ------------------------------------------------------------ batching

    async def _take(self, items: list[InFlight]) -> None:
        """A poll's items: count them, cut them into batches, queue the full ones."""
        fresh = sum(1 for item in items if item.origin == "fresh")
        self.metrics.on_received(self.id, "fresh", fresh)
        self.metrics.on_received(self.id, "retry", len(items) - fresh)
        size = self.batch_size
        if self._partial:
            items = self._partial + items
            self._partial = []
        whole = len(items) - len(items) % size if self.flush_interval > 0 else len(items)
        for start in range(0, whole, size):
            await self.queue.put(items[start : start + size])
        if whole < len(items):
            self._partial = items[whole:]
            if self._flush is None or self._flush.done():
                self._flush = asyncio.create_task(
                    self._flush_after(self.flush_interval), name=f"deliver-{self.id}-flush"
                )

    async def flush_now(self) -> None:
        """Send partial batches at once from now on (the process is draining to stop)."""
        self.flush_interval = 0.0
        await self._flush_partial()

    async def _flush_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._flush_partial()

    async def _flush_partial(self) -> None:
        partial, self._partial = self._partial, []
        if partial:
            await self.queue.put(partial)

    # ------------------------------------------------------------ sending

    async def _sender_loop(self) -> None:
        while True:
            batch = await self.queue.get()
            try:
                await self._handle(batch)
            except Exception as exc:
                # Outcomes of this batch are unknown: never commit past them, report it.
                logger.exception(
                    "%s: delivery of %d event(s) failed unexpectedly", self.id, len(batch)
                )
                self._broken = f"outcome of {len(batch)} event(s) unknown: {exc!r}"
            finally:
                self.queue.task_done()

    async def _handle(self, batch: list[InFlight]) -> None:
        live = self.fetcher.still_owned(batch)
        if len(live) < len(batch):
            self._release(len(batch) - len(live))  # revoked meanwhile: the new owner has them
        if not live:
            return
        if self._handoff:
            self._release(len(live))  # shutting down: left uncommitted for the next owner
            return
        groups = await self._attempt(live)
        records = self._records(groups)
        # Not awaited: the next request need not wait for Kafka. The events stay in flight
        # (bounded, uncommitted) until their outcome records are acknowledged.
        self.writer.submit(records, lambda error: self._written(groups, error))

    def _written(self, groups: list[Settled], error: Exception | None) -> None:
        if error is None:
            self.accounting.settled(groups)
            self._progress()
            return
        # Outcomes of these events are not durable: never commit past them, report it.
        count = sum(len(group.items) for group in groups)
        logger.error("%s: outcomes of %d event(s) cannot be written: %s", self.id, count, error)
        self._broken = f"outcome of {count} event(s) unknown: {error!r}"

    async def _attempt(self, items: list[InFlight]) -> list[Settled]:
        """Every event's outcome for one batch: encode, send each request, classify."""
        now = time.time()
        groups: list[Settled] = []
        types = self._types
        sendable = []
        undecodable = []
        unsupported = []
        suppressed: list[InFlight] = []
        users = self._suppressed
        decode = self.plugin.reads_events
        for item in items:
            head = item.head
            if head is None or (decode and item.event is None):
                undecodable.append(item)
            elif types is not None and (type(head.type) is not str or head.type not in types):
                unsupported.append(item)
            elif users and _user_id(head.userId) in users:
                suppressed.append(item)
            else:
                sendable.append(item)
        if suppressed:
            groups.append(Settled("filtered", suppressed, now, "suppressed"))
        if undecodable:
            groups += self._decide(undecodable, _UNDECODABLE, now)
        if unsupported:
            failure = Failure(
                "unsupported_type",
                f"{self.kind} takes {', '.join(sorted(types or ()))} calls only",
                retriable=False,
            )
            groups += self._decide(unsupported, failure, now)
        if sendable:
            groups += await self._send(sendable)
        return groups

    def _decide(
        self,
        items: list[InFlight],
        failed: Failure | Mapping[int, Failure] | None,
        at: float,
        status: int | None = None,
        duration: float | None = None,
    ) -> list[Settled]:
        return classify(
            items,
            failed=failed,
            at=at,
            policy=self.policy,
            rng=self._rng,
            status=status,
            duration=duration,
        )

    async def _send(self, items: list[InFlight]) -> list[Settled]:
        events = EventBatch(
            (
                [cast(Event, item.event) for item in items]
                if self.plugin.reads_events
                else [cast(Event, None)] * len(items)
            ),
            [item.raw for item in items],
            lambda: [item.source_id for item in items],
            [head_message_id(item.head) or "" for item in items],
        )
        try:
            encoded = self.plugin.encode(events)
        except DestinationError as exc:
            if len(items) > 1:
                # Find the event(s) the partner cannot take; the others still go out.
                groups: list[Settled] = []
                for item in items:
                    groups += await self._send([item])
                return groups
            return self._decide(items, self._failure(exc), time.time())
        except Exception as exc:
            logger.exception("%s: the %s encoder failed", self.id, self.kind)
            failure = Failure("plugin_error", f"{type(exc).__name__} in encode: {exc}", False)
            return self._decide(items, failure, time.time())
        if not isinstance(encoded, Encoded):
            encoded = Encoded([encoded])
        groups = []
        failed, skipped = encoded.failed, encoded.skipped
        now = time.time()
        for position, why in failed.items():
            groups += self._decide([items[position]], self._failure(why), now)
        if skipped:
            by_reason: dict[str, list[InFlight]] = {}
            for position, reason in skipped.items():
                by_reason.setdefault(reason, []).append(items[position])
            groups += [Settled("filtered", left, now, reason) for reason, left in by_reason.items()]
        rest = (
            [i for i in range(len(items)) if i not in failed and i not in skipped]
            if failed or skipped
            else None
        )
        for request in encoded.requests:
            covers = getattr(request, "covers", ())
            if covers:
                covered = [items[i] for i in covers]
            else:
                covered = items if rest is None else [items[i] for i in rest]
            groups += await self._request(request, covered)
        return groups

    async def _request(self, request: Any, items: list[InFlight]) -> list[Settled]:
        """Send one request for ``items``; the groups their outcomes make."""
        plugin = self.plugin
        await self.limiter.acquire()
        started = time.monotonic()
        try:
            response = await plugin.send(request)
            refused = plugin.check(request, response)
        except DestinationError as exc:
            duration = time.monotonic() - started
            self.metrics.on_request(self.id, _request_result(exc, plugin), duration)
            if exc.retriable and exc.retry_after and exc.response is not None:
                self.limiter.hold(min(exc.retry_after, HOLD_CAP))
            return self._decide(items, self._failure(exc, request), time.time(), None, duration)
        except Exception as exc:
            logger.exception("%s: the %s sender failed", self.id, self.kind)
            failure = Failure(
                "plugin_error",
                f"{type(exc).__name__} in send: {exc}",
                False,
                request=plugin.describe_request(request),
            )
            return self._decide(items, failure, time.time())
        duration = time.monotonic() - started
        self.metrics.on_request(self.id, "2xx", duration)
        status = plugin.status_of(response)
        failures: dict[int, Failure] | None = None
        if refused:
            shared: dict[int, Failure] = {}  # one Failure per error object the plugin gave
            failures = {}
            for index, why in refused.items():
                known = shared.get(id(why))
                if known is None:
                    known = shared[id(why)] = self._failure(why, request, response)
                failures[index] = known
            # A partner that refused every event of the request for a while (429 per event)
            # is paused for all; one that throttled some users only is not.
            retry_after = [why.retry_after for why in refused.values() if why.retry_after]
            if retry_after and len(refused) == len(items):
                self.limiter.hold(min(max(retry_after), HOLD_CAP))
        return self._decide(items, failures, time.time(), status, duration)

    def _failure(self, exc: DestinationError, request: Any = None, response: Any = None) -> Failure:
        sent = exc.request if exc.request is not None else request
        answer = exc.response if exc.response is not None else response
        plugin = self.plugin
        summary = {
            "request": (
                plugin.describe_request(sent, limit=STATUS_BODY_LIMIT) if sent is not None else None
            ),
            "response": (
                plugin.describe_response(answer, limit=STATUS_BODY_LIMIT)
                if answer is not None
                else None
            ),
        }
        return Failure(
            reason=exc.reason,
            message=plugin.describe_text(exc.message),
            retriable=exc.retriable,
            retry_after=exc.retry_after,
            status=plugin.status_of(answer) if answer is not None else None,
            request=plugin.describe_request(sent) if sent is not None else None,
            response=plugin.describe_response(answer) if answer is not None else None,
            summary=summary,
        )

    # ------------------------------------------------------------ records

    def _records(self, groups: list[Settled]) -> list[OutRecord]:
        records: list[OutRecord] = []
        errors: dict[int, bytes] = {}  # the groups of one failure share its serialized error
        for group in groups:
            if group.kind == "retry":
                records += retry_records(self.retry_topic, group, partitions=self._retry_partitions)
            elif group.kind == "dlq":
                records += dead_letter_records(
                    self.dlq_topic, group, destination=self.id, kind=self.kind
                )
            error_json = None
            failure = group.failure
            if failure is not None:
                error_json = errors.get(id(failure))
                if error_json is None:
                    sample = group.items[0].event if group.items else None
                    error_json = errors[id(failure)] = status_error_json(failure, sample)
            records.append(
                status_record(
                    self.status_topic,
                    group,
                    destination=self.id,
                    kind=self.kind,
                    partitions=self._status_partitions,
                    error_json=error_json,
                )
            )
        return records

    # ------------------------------------------------------------ accounting

    def _release(self, count: int) -> None:
        self.fetcher.release(count)

    def _progress(self) -> None:
        self._last_progress = time.monotonic()
        self._progress_at = time.time()
