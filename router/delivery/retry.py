"""When to try a failed event again, and when to stop trying.

Randomized exponential backoff: attempt ``n`` (failed attempts so far) waits a uniform
random time in ``[max(backoff_min, b/2), b]`` with ``b = min(backoff_max, backoff_min * 2**(n-1))``,
so retries of many events failing together spread out instead of returning as one wave.
A partner's ``Retry-After`` replaces the schedule: the partner said when to come back, so
the events are due then (at least a second later, spread over a tenth more so events refused
together do not return as one wave), however short or long the exponential wait would be.

The retry window is measured from the event's first failure, not from its ``receivedAt``:
events replayed from the past (``router replay``, DLQ redrive) still get their full window,
and a backlog that waited in Kafka does not eat into it. An event whose next attempt would
fall after ``first_failure + retry_window`` goes to the dead-letter topic now.

Records of one retry partition are taken in order: one that is not due yet holds back those
behind it until its own due time. Due times in a partition are close to append order (they
differ by at most ``backoff_max``, or a partner's Retry-After), so the delay this adds is
bounded, and in exchange the lane never scans ahead or keeps out-of-order state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from router.config import DeliveryOptions

#: Shortest wait after a partner's Retry-After (a date in the past, or 0, means "now").
MIN_RETRY_AFTER = 1.0
_MAX_EXPONENT = 62  # 2**62 * any backoff_min is far past any backoff_max; avoids overflow


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_min: float
    backoff_max: float
    window: float

    @classmethod
    def from_options(cls, options: DeliveryOptions) -> RetryPolicy:
        return cls(options.backoff_min, options.backoff_max, options.retry_window)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after ``attempt`` failed attempts (``attempt`` >= 1)."""
        exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
        ceiling = min(self.backoff_max, self.backoff_min * (2.0**exponent))
        floor = min(ceiling, max(self.backoff_min, ceiling / 2))
        return rng.uniform(floor, ceiling)

    def next_due(
        self,
        *,
        attempt: int,
        first_failure: float,
        now: float,
        retry_after: float | None,
        rng: random.Random,
    ) -> float | None:
        """UNIX time of the next attempt, or None when the retry window is used up."""
        if retry_after is not None:
            wait = max(MIN_RETRY_AFTER, retry_after) * rng.uniform(1.0, 1.1)
        else:
            wait = self.delay(attempt, rng)
        due = now + wait
        if due > first_failure + self.window:
            return None
        return due
