"""Per-destination request pacing: a rate limit and a partner-requested pause (Retry-After)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    """Spaces requests ``1/rate`` seconds apart (no burst); ``hold`` pauses every request.

    Each caller reserves the next free slot before sleeping, so concurrent senders never
    exceed the rate together, and a cancelled waiter only wastes its own slot.
    """

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._next = 0.0
        self._hold_until = 0.0

    def reserve(self) -> float:
        """Take the next slot; seconds to wait before using it."""
        now = self._clock()
        slot = max(now, self._next, self._hold_until)
        if self.interval:
            self._next = slot + self.interval
        return slot - now

    async def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)

    def hold(self, seconds: float) -> None:
        """No request starts for ``seconds``: a partner's Retry-After (429, 503) pauses the lane."""
        self._hold_until = max(self._hold_until, self._clock() + seconds)

    @property
    def held_for(self) -> float:
        return max(0.0, self._hold_until - self._clock())
