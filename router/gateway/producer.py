"""Group commit to Kafka: records of concurrent requests share one ``BatchSender.send``.

A request's handler calls :meth:`ProduceAccumulator.write` and gets control back only after
Kafka acknowledged every one of its records (``acks="all"``), so the gateway never answers
200 for an event that is not durable. Writing each request on its own would cost one
produce round trip per request; instead, while up to ``max_in_flight`` sends await their
acks, new records pile up and leave together in the next send. At low load a request is
sent at once (no timer adds latency); at high load batches grow by themselves, up to
``max_records`` per send. Everything is bounded: the pending records (beyond
``max_pending`` a request gets 503 at once, which every client retries), the sends in
flight, and the time a request waits (``timeout``). A request that timed out may still be
written later; the client's retry then makes a duplicate with the same messageId, which
the processor's dedup removes (at-least-once, design.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka.errors import KafkaError

from router.broker.clients import BatchSender, OutRecord
from router.broker.partitioning import key_partition
from router.gateway.errors import Unavailable

logger = logging.getLogger(__name__)

_LOG_INTERVAL = 10.0  # seconds between two log lines about failed Kafka writes


class KeyPartitioner:
    """Kafka's default partition of a key (murmur2, as every Kafka client computes it), cached.

    The same rule as :class:`router.broker.clients.BatchSender` and as producers writing to
    ``events.raw`` directly, so one user's events meet in one partition (and one dedup store)
    whoever wrote them. murmur2 was about a tenth of the gateway's CPU per event; user keys
    repeat, so a bounded cache removes most of it.
    """

    def __init__(self, partitions: Sequence[int], max_keys: int = 65_536) -> None:
        if not partitions:
            raise ValueError("a topic has at least one partition")
        self._partitions = sorted(partitions)
        self._cache: dict[bytes, int] = {}
        self._max_keys = max_keys

    def __call__(self, key: bytes) -> int:
        partition = self._cache.get(key)
        if partition is None:
            if len(self._cache) >= self._max_keys:
                self._cache.clear()  # cheaper than LRU bookkeeping on every hit
            partition = self._partitions[key_partition(key, len(self._partitions))]
            self._cache[key] = partition
        return partition


class ProduceAccumulator:
    """Coalesces the records of concurrent requests and writes them with one send.

    One write in flight is the default, and enough: aiokafka sends one produce request per
    broker at a time anyway, so a second write would only wait in its queue. Several
    concurrent writes to the same partitions also meet a bug in aiokafka 0.14's
    ``add_batch`` (each wait for a queued batch subtracts the total time waited so far from
    its timeout), which turned into ``KafkaTimeoutError`` well before ``request_timeout_ms``
    with four writes in flight under load here.
    """

    def __init__(
        self,
        sender: BatchSender,
        *,
        max_records: int = 5000,
        max_in_flight: int = 1,
        max_pending: int = 100_000,
        timeout: float = 10.0,
        on_send: Callable[[int, float, bool], None] | None = None,
    ) -> None:
        self.sender = sender
        self.max_records = max_records
        self.max_in_flight = max_in_flight
        self.max_pending = max_pending
        self.timeout = timeout
        self._on_send = on_send
        self._records: list[OutRecord] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._writes: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_success_at: float | None = None
        self._logged_at = -_LOG_INTERVAL
        self._failures_unlogged = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._closed = False
        self._task = asyncio.create_task(self._run(), name="gateway-produce")

    async def write(self, records: Sequence[OutRecord], *, deadline: float | None = None) -> None:
        """Return once Kafka acknowledged every record; raise :class:`Unavailable` otherwise.

        ``deadline`` (event loop time): give up then rather than ``timeout`` from now, so a
        request's time before this call counts against its answer time.
        """
        if not records:
            return
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.timeout
        if self._closed or not self.running:
            raise Unavailable("shutting_down", "the gateway is stopping; retry")
        if len(self._records) + len(records) > self.max_pending:
            raise Unavailable(
                "overloaded", "too many events are waiting for Kafka; retry with backoff"
            )
        if deadline <= loop.time():
            # Already too late (the request waited for the CPU behind others): not queued, so
            # nothing is written for a request that was refused.
            raise self._timed_out()
        future: asyncio.Future[None] = loop.create_future()
        self._records.extend(records)
        self._waiters.append((len(records), future))
        self._wake.set()
        try:
            async with asyncio.timeout_at(deadline):
                await future
        except TimeoutError:
            raise self._timed_out() from None
        finally:
            if not future.done():
                future.cancel()  # nobody waits for it any more (the send skips done futures)

    def _timed_out(self) -> Unavailable:
        return Unavailable(
            "kafka_timeout", f"Kafka did not acknowledge the events within {self.timeout:g} s"
        )

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.max_in_flight)
        while not (self._closed and not self._records):
            await self._wake.wait()
            self._wake.clear()
            # Each pass takes at least one request's records, so this loop ends.
            while self._records:
                await slots.acquire()
                records, waiters = self._take()
                task = asyncio.create_task(self._send(records, waiters, slots))
                self._in_flight.add(task)
                task.add_done_callback(self._sent)

    def _take(self) -> tuple[list[OutRecord], list[asyncio.Future[None]]]:
        """Whole requests, oldest first, until ``max_records`` (never split one request)."""
        count = 0
        taken = 0
        for size, _future in self._waiters:
            if taken and count + size > self.max_records:
                break
            count += size
            taken += 1
        records, self._records = self._records[:count], self._records[count:]
        waiters = [future for _size, future in self._waiters[:taken]]
        del self._waiters[:taken]
        return records, waiters

    async def _send(
        self,
        records: list[OutRecord],
        waiters: list[asyncio.Future[None]],
        slots: asyncio.Semaphore,
    ) -> None:
        started = time.monotonic()
        # The write runs as its own task and is never cancelled: cancelling BatchSender.send
        # would leave aiokafka's batch futures to fail unobserved. It ends by itself, since
        # the producer's request timeout is about ``timeout`` too (see Gateway.start).
        write = asyncio.create_task(self.sender.send(records), name="gateway-kafka-write")
        self._writes.add(write)
        write.add_done_callback(self._written)
        try:
            done, _pending = await asyncio.wait({write}, timeout=self.timeout)
        except BaseException:
            _settle(waiters, Unavailable("shutting_down", "the gateway is stopping; retry"))
            raise
        finally:
            slots.release()
            self._wake.set()
        outcome: Unavailable | None = None
        if not done:
            outcome = Unavailable(
                "kafka_timeout", f"Kafka did not acknowledge the events within {self.timeout:g} s"
            )
        elif (error := write.exception()) is not None:
            if isinstance(error, KafkaError):
                outcome = Unavailable("kafka_unavailable", f"Kafka refused the write: {error!r}")
            else:
                outcome = Unavailable("internal_error", "the events could not be written; retry")
        if outcome is None:
            self.last_success_at = time.time()
        else:
            self.last_error, self.last_error_at = outcome.message, time.time()
            self._failures_unlogged += 1
            # At most one line per interval: an outage must not flood the log at request rate.
            if time.monotonic() - self._logged_at >= _LOG_INTERVAL:
                logger.warning(
                    "%d write(s) to Kafka failed (last: %d records): %s",
                    self._failures_unlogged,
                    len(records),
                    outcome.message,
                )
                self._logged_at, self._failures_unlogged = time.monotonic(), 0
        if self._on_send is not None:
            self._on_send(len(records), time.monotonic() - started, outcome is None)
        _settle(waiters, outcome)

    def _written(self, write: asyncio.Task[None]) -> None:
        self._writes.discard(write)
        if write.cancelled():
            return
        error = write.exception()  # always retrieved, so asyncio never logs it as lost
        if error is not None and not isinstance(error, KafkaError):
            logger.error("a Kafka write failed unexpectedly", exc_info=error)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("a coalesced Kafka write failed unexpectedly", exc_info=task.exception())

    async def stop(self, grace: float = 10.0) -> None:
        """Send what is pending and wait for the sends in flight, at most ``grace`` seconds."""
        self._closed = True
        self._wake.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            async with asyncio.timeout(grace):
                await task
                while self._in_flight or self._writes:  # bounded by the timeout above
                    await asyncio.gather(*self._in_flight, *self._writes, return_exceptions=True)
        except TimeoutError:
            logger.warning("gave up waiting for Kafka acks after %.1f s at stop", grace)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            _settle(
                [future for _size, future in self._waiters],
                Unavailable("shutting_down", "the gateway is stopping; retry"),
            )
            self._waiters.clear()
            self._records.clear()


def _settle(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in waiters:
        if future.done():
            continue  # its request timed out or went away
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
