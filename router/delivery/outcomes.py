"""Durable outcome writes: retry, dead-letter and status records, batched across senders.

Senders hand their records over (:meth:`OutcomeWriter.submit`) and go on with their next
request; one flusher task writes everything pending with one :class:`BatchSender` call and,
once Kafka acknowledged all of it, calls each submitter's callback (or wakes
:meth:`OutcomeWriter.write` callers). So under load many requests share a produce round trip,
a request never waits for Kafka, and an event counts as finished (and its offset as
committable) only after its outcome is on Kafka.

When Kafka refuses a write, the flusher keeps retrying the same records with backoff: the
lane stalls (visible in health and in the progress metric) rather than losing outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from aiokafka.errors import KafkaError

from router.backoff import Backoff
from router.broker.clients import BatchSender, OutRecord

logger = logging.getLogger(__name__)

#: Seconds a write waits for more outcomes once woken (unless ``flush_records`` wait already).
#: Only offsets wait for it: deliveries do not, and commits run every second anyway.
LINGER = 0.02

#: Called once the records are acknowledged (None) or cannot be written (the error).
Done = Callable[[Exception | None], None]


class OutcomeWriter:
    def __init__(
        self,
        sender: BatchSender,
        *,
        name: str,
        retry_min: float = 0.2,
        retry_max: float = 5.0,
        linger: float = LINGER,
        flush_records: int = 500,
    ) -> None:
        self.sender = sender
        self.name = name
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.failures = 0
        #: Writes made (each a produce round trip) and records they carried.
        self.writes = 0
        self.written = 0
        self.linger = linger
        self.flush_records = flush_records
        self._pending: list[tuple[Sequence[OutRecord], Done]] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outcomes-{self.name}")

    def submit(self, records: Sequence[OutRecord], done: Done) -> None:
        """Queue ``records``; ``done`` is called (from the flusher) once they are written.

        ``done`` runs before :meth:`drain` returns, and is never called for records still
        pending at :meth:`stop` (their events stay unaccounted: the next owner redelivers).
        """
        if self._task is None or self._task.done():
            raise RuntimeError(f"outcome writer for {self.name} is not running")
        if not records:
            done(None)
            return
        self._pending.append((records, done))
        self._idle.clear()
        self._wakeup.set()

    async def write(self, records: Sequence[OutRecord]) -> None:
        """Return once every record is acknowledged (or raise what the write raised)."""
        if not records:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(error: Exception | None) -> None:
            if future.done():
                return  # its caller was cancelled (shutdown); the write still counts
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.submit(records, done)
        await future

    async def drain(self, time_limit: float) -> bool:
        """Wait until nothing is pending; False if ``time_limit`` seconds passed first."""
        try:
            async with asyncio.timeout(max(0.0, time_limit)):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pending.clear()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if self.linger > 0 and self._pending_records() < self.flush_records:
                # Let a few more requests finish first: each write is a produce round trip
                # whose Python cost (aiokafka's encoding, futures) hardly grows with its size.
                await asyncio.sleep(self.linger)
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                records = [record for records, _ in batch for record in records]
                error = await self._send(records)
                self.writes += 1
                self.written += len(records)
                for _, done in batch:
                    try:
                        done(error)
                    except Exception:
                        logger.exception("outcome callback for %s failed", self.name)
            self._idle.set()

    def _pending_records(self) -> int:
        return sum(len(records) for records, _ in self._pending)

    async def _send(self, records: list[OutRecord]) -> Exception | None:
        backoff = Backoff(self.retry_min, self.retry_max)
        while True:
            try:
                await self.sender.send(records)
            except KafkaError as exc:
                self.failures += 1
                logger.warning(
                    "writing %d outcome record(s) for %s failed (%s); retrying",
                    len(records),
                    self.name,
                    exc,
                )
                await backoff.wait()
            except ValueError as exc:
                # A record the producer can never accept (too large): retrying cannot help.
                logger.error("outcome records for %s cannot be written: %s", self.name, exc)
                return exc
            else:
                return None
