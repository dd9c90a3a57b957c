"""Process-wide tuning applied by ``canopy serve`` (and ``canopy.server.asgi``) before serving."""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]


def tune_gc(gen0_threshold: int) -> None:
    """Freeze what start-up allocated and collect young objects less often.

    With a thousand requests in flight, Python's default (a collection every 700 net
    allocations, each walking every live young object) spends much of a busy server's
    CPU walking requests that are not garbage. ``gc.freeze()`` moves the objects
    created at start-up (modules, the app, its routes) out of the collector's sight.
    ``gen0_threshold`` 0 keeps Python's defaults.

    Why 200,000 by default: the counter is allocations minus deallocations, but a
    deallocation never takes it below zero. So while the population of in-flight
    requests rises and falls, the counter climbs even with no garbage at all, and a
    lower threshold triggers collections that each walk the whole in-flight
    population, tens of milliseconds with a thousand requests. The cost is memory
    held by reference cycles between collections: at most the threshold's worth of
    objects (tens of MB), and Canopy's request path makes none
    (tests/unit/server/test_gc.py).
    """
    if gen0_threshold <= 0:
        return
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, max(gen1, 50), max(gen2, 100))
