"""Garbage-collector settings for the roles that move many events per second (delivery agents,
the gateway).

CPython's cyclic collector runs after every 700 net container allocations, and its older
generations traverse every live container. A delivery agent keeps up to
``max_in_flight_events`` decoded events (a few dicts each) alive between fetch and outcome, so
collections ran constantly and walked them all, yet the delivery path makes no reference
cycles, so they freed next to nothing. Measured on the delivery path (100-event requests, one
agent, 2-core machine): 17.1 µs of CPU per event with the default settings, 13.2 µs with the
settings below, 12.2 µs with the collector off. The gateway is the same case in another form:
every ``/v1/batch`` request decodes a few hundred dicts (enough to trigger a young
collection each request, and the older ones walked everything the process had loaded);
measured on the gateway under the gateway benchmark's load (8 clients posting 100-event
batches), its CPU per event fell from 24-28 µs to 19-21 µs with the settings below.

So while such a role runs: objects alive at start (modules, clients) are moved out of the
collector's view (``gc.freeze``), and collections run ~30x less often. Cycles made elsewhere
(asyncio, aiohttp) are still collected, just later. Settings are reference-counted: the
previous ones come back when the last role that asked stops (benchmarks run other code in the
same process between rounds).

"Later" must stay bounded, because the collector counts container allocations, not bytes:
aiokafka keeps each prefetched fetch response (up to megabytes of record bytes, one object the
collector does not see) inside a reference cycle (``PartitionRecords`` and the generator that
unpacks it), so a response it drops unread (a seek, a pause, a rebalance) waits for a full
collection. With the thresholds above a full collection came every ~40M allocations (and
only once the oldest generation grew by a quarter): an agent whose destination was down
grew by ~290 MB over a 1M-event backlog, nearly all of it such cycles (responses dropped at
the in-flight bound, and by seeks back to retry records not due yet). So a role that holds
the settings also calls :func:`collect_due` from its loop: a full collection at most every
:data:`FULL_COLLECTION_EVERY` seconds, which keeps that garbage to what one interval drops.

A full collection walks every live container, and a busy agent holds tens of thousands of
decoded events in flight: measured under paced load (5,000 events/s to 5 destinations, about
20,000 events in flight) the once-a-second collections took 6% of the agent's CPU, and 3.5%
delivering one event per request. Yet while delivery goes well aiokafka drops nothing: the
fetcher never pauses a partition at its bound, and it seeks only to retry records that are
not due. So the delivery fetcher says when it made aiokafka drop a response
(:func:`note_dropped`: a seek, a pause, a rebalance) and asks for a collection only then
(``collect_due(after_drops_only=True)``), still at most once per interval: a destination
that is down (retries deferred all the time) gets one a second as before, a healthy one none.
"""

from __future__ import annotations

import gc
import threading
import time

#: Allocations before a young collection, then how many young / middle collections before
#: the next older one. Defaults are (700, 10, 10).
THRESHOLDS = (20_000, 20, 100)
#: Seconds between full collections while the settings are applied (see the module docstring).
FULL_COLLECTION_EVERY = 1.0

_lock = threading.Lock()
_holders = 0
_saved: tuple[int, int, int] | None = None
_last_full = 0.0
#: Whether prefetched responses were dropped since the last full collection.
_dropped = False


def acquire() -> None:
    """Apply :data:`THRESHOLDS` (and freeze what is alive) unless already applied."""
    global _holders, _saved, _last_full
    with _lock:
        _holders += 1
        if _holders > 1:
            return
        _saved = gc.get_threshold()
        gc.collect()
        _last_full = time.monotonic()
        gc.freeze()
        gc.set_threshold(*THRESHOLDS)


def release() -> None:
    """Undo :func:`acquire` once every holder released it."""
    global _holders, _saved
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders or _saved is None:
            return
        gc.set_threshold(*_saved)
        gc.unfreeze()
        _saved = None


def note_dropped() -> None:
    """A consumer just made aiokafka throw prefetched records away (a seek, a pause, a
    rebalance): the next :func:`collect_due` with ``after_drops_only`` frees them."""
    global _dropped
    _dropped = True


def collect_due(now: float | None = None, *, after_drops_only: bool = False) -> bool:
    """A full collection if the settings are applied and the last one is
    :data:`FULL_COLLECTION_EVERY` seconds old (``now``: ``time.monotonic()``); True if it ran.

    ``after_drops_only``: only if :func:`note_dropped` was called since the last one.
    """
    global _last_full, _dropped
    if _holders == 0 or (after_drops_only and not _dropped):
        return False
    now = time.monotonic() if now is None else now
    if now - _last_full < FULL_COLLECTION_EVERY:
        return False
    _last_full = now
    _dropped = False
    gc.collect()
    return True
