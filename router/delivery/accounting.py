"""Counting outcomes once they are durable: offsets, metrics, and a log line people see.

Runs once per request (per :class:`~router.delivery.records.Settled` group), after Kafka
acknowledged the group's retry, dead-letter and status records: only then may the offsets be
committed and the outcome be counted.

Dead letters are also logged (metrics alone are easy to miss): at most one warning per
destination every ``log_every`` seconds, with how many events were dead-lettered since the
last line, by reason, and the last error's message (credentials already masked).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from router.delivery.records import InFlight, Settled
from router.observability.delivery import DeliveryMetrics

logger = logging.getLogger(__name__)


class Accounting:
    def __init__(
        self,
        destination: str,
        metrics: DeliveryMetrics,
        *,
        finish: Callable[[list[InFlight]], None],
        release: Callable[[int], None],
        log_every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.destination = destination
        self.metrics = metrics
        self._finish = finish
        self._release = release
        self.log_every = log_every
        self._clock = clock
        self._dead: dict[str, int] = {}
        self._last_error = ""
        self._last_log = -log_every

    def settled(self, groups: Iterable[Settled]) -> None:
        """Offsets finished, metrics counted, in-flight released: once per request."""
        metrics, destination = self.metrics, self.destination
        count = 0
        for group in groups:
            items = group.items
            count += len(items)
            self._finish(items)
            if group.kind == "delivered":
                metrics.on_delivered(destination, group.latencies or ())
            elif group.kind == "retry":
                metrics.on_retry(destination, group.reason or "unknown", len(items))
            elif group.kind == "filtered":
                metrics.on_filtered(destination, group.reason or "unknown", len(items))
            else:
                reason = group.reason or "unknown"
                metrics.on_failed(destination, reason, len(items))
                self._dead[reason] = self._dead.get(reason, 0) + len(items)
                if group.failure is not None:
                    self._last_error = group.failure.message
        if count:
            self._release(count)
        if self._dead:
            self._log_dead_letters()

    def _log_dead_letters(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_log < self.log_every:
            return
        self._last_log = now
        total = sum(self._dead.values())
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self._dead.items()))
        last = f"; last error: {self._last_error}" if self._last_error else ""
        logger.warning(
            "%s: %d event(s) dead-lettered (%s)%s", self.destination, total, reasons, last
        )
        self._dead.clear()
        self._last_error = ""

    def flush_log(self) -> None:
        """Say what is still uncounted in the log (at shutdown)."""
        if self._dead:
            self._log_dead_letters(force=True)
