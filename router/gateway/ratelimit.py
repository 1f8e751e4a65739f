"""Per-write-key rate limiting: a token bucket counted in events, not requests.

Events, because one ``/v1/batch`` request may carry 2,500 of them and the cost downstream
is per event. A request is admitted when the bucket holds at least ``min(n, burst)`` tokens
and then takes all ``n``, possibly going into debt: a batch bigger than the burst still gets
through when the bucket is full, and the debt makes the following requests wait, so the
long-run rate never exceeds ``rate``. Buckets exist only for configured write keys (unknown
keys are refused before this), so memory is bounded by the workspace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from router.gateway.errors import RateLimited


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def take(self, count: int, now: float) -> float:
        """Take ``count`` tokens; returns 0.0 if admitted, else the seconds to wait."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        needed = min(float(count), self.burst)
        if self.tokens >= needed:
            self.tokens -= count
            return 0.0
        return (needed - self.tokens) / self.rate


class RateLimiter:
    """One bucket per write key; ``check`` raises :class:`RateLimited` (429) when over."""

    def __init__(
        self,
        write_keys: Iterable[str],
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate_limit must be positive")
        size = max(1.0, burst if burst is not None else rate)
        self.rate = rate
        self._clock = clock
        now = clock()
        self._buckets = {key: TokenBucket(rate, size, now) for key in write_keys}

    def check(self, write_key: str, count: int) -> None:
        bucket = self._buckets.get(write_key)
        if bucket is None:
            return
        wait = bucket.take(max(count, 1), self._clock())
        if wait > 0:
            # Whole seconds, rounded up: clients parse the headers as integers, and waiting
            # less than needed would only earn another 429.
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                seconds,
                f"over {self.rate:g} events/s for this write key; retry in {seconds} s",
            )
