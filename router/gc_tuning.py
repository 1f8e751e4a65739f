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
"""

from __future__ import annotations

import gc
import threading

#: Allocations before a young collection, then how many young / middle collections before
#: the next older one. Defaults are (700, 10, 10).
THRESHOLDS = (20_000, 20, 100)

_lock = threading.Lock()
_holders = 0
_saved: tuple[int, int, int] | None = None


def acquire() -> None:
    """Apply :data:`THRESHOLDS` (and freeze what is alive) unless already applied."""
    global _holders, _saved
    with _lock:
        _holders += 1
        if _holders > 1:
            return
        _saved = gc.get_threshold()
        gc.collect()
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
