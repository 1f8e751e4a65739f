"""How long a role's loop waits before trying a failed Kafka call again: one policy for all.

Randomized exponential: the n-th wait in a row is uniform in ``[b/2, b]`` with
``b = min(cap, first * 2**(n-1))``; a success resets it. The randomness keeps processes that
failed together (a broker restart) from retrying in step; the cap keeps recovery prompt once
the broker is back. Attempts are not limited: a loop keeps trying, and the role's health
reports that it makes no progress.

Delivery to partners has its own schedule (:mod:`router.delivery.retry`): that one is
measured in minutes to hours and lives in Kafka, this one in seconds and in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import random


class Backoff:
    def __init__(
        self, first: float = 0.2, cap: float = 10.0, *, rng: random.Random | None = None
    ) -> None:
        if not 0 < first <= cap:
            raise ValueError("backoff needs 0 < first <= cap")
        self.first = first
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """Seconds to wait after one more failure in a row."""
        self.failures += 1
        ceiling = min(self.cap, self.first * 2.0 ** min(self.failures - 1, 62))
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """The call succeeded: the next failure starts from ``first`` again."""
        self.failures = 0

    async def wait(self, stopping: asyncio.Event | None = None) -> float:
        """Sleep :meth:`next` seconds (less if ``stopping`` is set meanwhile); the wait."""
        seconds = self.next()
        if stopping is None:
            await asyncio.sleep(seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), seconds)
        return seconds
