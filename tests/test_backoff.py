"""The one backoff policy of the roles' loops."""

from __future__ import annotations

import asyncio
import random

import pytest

from router.backoff import Backoff


def test_randomized_exponential_capped_and_reset() -> None:
    backoff = Backoff(0.2, 2.0, rng=random.Random(1))
    waits = [backoff.next() for _ in range(8)]
    ceilings = [0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0]
    assert all(c / 2 <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
    backoff.reset()
    assert 0.1 <= backoff.next() <= 0.2
    with pytest.raises(ValueError):
        Backoff(0, 1)


async def test_a_wait_ends_early_when_the_role_stops() -> None:
    backoff = Backoff(60.0, 60.0)
    stopping = asyncio.Event()
    task = asyncio.create_task(backoff.wait(stopping))
    await asyncio.sleep(0.05)
    stopping.set()
    async with asyncio.timeout(5):
        await task
