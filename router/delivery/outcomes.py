"""Durable outcome writes: retry, dead-letter and status records, batched across senders.

Senders hand their records over and wait; one flusher task writes everything pending with
one :class:`BatchSender` call and wakes the senders once Kafka acknowledged all of it. So
under load many requests share a produce round trip, and an event counts as finished
(and its offset as committable) only after its outcome is on Kafka.

When Kafka refuses a write, the flusher keeps retrying the same records with backoff: the
lane stalls (visible in health and in the progress metric) rather than losing outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka.errors import KafkaError

from router.broker.clients import BatchSender, OutRecord

logger = logging.getLogger(__name__)


class OutcomeWriter:
    def __init__(
        self,
        sender: BatchSender,
        *,
        name: str,
        retry_min: float = 0.2,
        retry_max: float = 5.0,
    ) -> None:
        self.sender = sender
        self.name = name
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.failures = 0
        self._pending: list[tuple[list[OutRecord], asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outcomes-{self.name}")

    async def write(self, records: Sequence[OutRecord]) -> None:
        """Return once every record is acknowledged (or raise what the write raised)."""
        if not records:
            return
        if self._task is None or self._task.done():
            raise RuntimeError(f"outcome writer for {self.name} is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((list(records), future))
        self._idle.clear()
        self._wakeup.set()
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
        for _records, future in self._pending:
            if not future.done():
                future.cancel()
        self._pending.clear()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                records = [record for records, _ in batch for record in records]
                error = await self._send(records)
                for _, future in batch:
                    if future.done():
                        continue  # its sender was cancelled (shutdown); the write still counts
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
            self._idle.set()

    async def _send(self, records: list[OutRecord]) -> Exception | None:
        delay = self.retry_min
        while True:
            try:
                await self.sender.send(records)
            except KafkaError as exc:
                self.failures += 1
                logger.warning(
                    "writing %d outcome record(s) for %s failed (%s); retrying in %.1fs",
                    len(records),
                    self.name,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            except ValueError as exc:
                # A record the producer can never accept (too large): retrying cannot help.
                logger.error("outcome records for %s cannot be written: %s", self.name, exc)
                return exc
            else:
                return None
