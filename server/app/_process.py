"""Process-wide tuning applied by ``canopy serve`` (and ``canopy.server.asgi``) before
serving, and the service that paces the cyclic collector while it serves."""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["CollectorPacer", "tune_gc"]


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
    (tests/unit/server/test_gc.py). The other side of a high threshold, a young
    generation that fills for minutes under a steady load, is ``CollectorPacer``'s.
    """
    if gen0_threshold <= 0:
        return
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, max(gen1, 50), max(gen2, 100))


class CollectorPacer:
    """Collect on a clock, and keep what has lived a while out of the collector's sight.

    The allocation counter that triggers a young collection counts allocations minus
    frees, frees of old objects included. Under a steady load that makes and frees
    long-lived objects at one pace (topics, sessions, jobs waiting on their retry),
    the counter stays low while the young generation fills with everything made since
    the last collection that is still alive; when one finally comes it walks all of
    that, hundreds of milliseconds after ten minutes. So the young generation is
    collected every ``young`` seconds, and every ``middle`` seconds the middle one.

    What survives that has lived for seconds; refcounting frees it when it goes, as
    every path that runs all day makes no cycles (tests/unit/server/test_gc.py). It is
    frozen (``gc.freeze()``) rather than promoted to the oldest generation, because a
    full collection walks the whole live heap, hundreds of milliseconds for a few
    hundred megabytes, and Python's own rule runs one each time a quarter of it has
    turned over. A cycle that gets frozen is not freed by refcounting; it shows
    as a heap that grows, so when pymalloc's allocated blocks have grown by
    ``growth`` since the last full collection, everything is unfrozen and collected
    once. A process that fills up pays a few of those on the way; a steady one none
    unless something leaks cycles.

    After each middle collection, glibc's ``malloc_trim`` hands the free pages of
    the C heap back to the system. Python objects over 512 bytes (dict tables, long
    strings, lists of a topic's history) live in that heap, and glibc returns its
    free memory only from the top, so under churn the heap keeps every page it has
    ever used and RSS climbs while the memory in use stays flat. The trim walks the
    heap's free chunks, a millisecond or two.

    A collector turned off (``gc.disable()``) is left off.
    """

    def __init__(self, young: float = 1.0, middle: float = 10.0, growth: float = 0.5) -> None:
        if not 0 < young <= middle:
            raise ValueError("collector intervals must be positive and young <= middle")
        if growth <= 0:
            raise ValueError("the heap growth that calls for a full collection must be positive")
        self.young, self.middle, self.growth = young, middle, growth
        self.full_collections = 0
        self._trim = _malloc_trim()

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        heap_after_full = sys.getallocatedblocks()
        next_middle = trio.current_time() + self.middle
        while True:
            await trio.sleep(self.young)
            if not gc.isenabled():
                continue
            if trio.current_time() < next_middle:
                gc.collect(0)
                continue
            next_middle = trio.current_time() + self.middle
            gc.collect(1)
            gc.freeze()
            if self._trim is not None:
                self._trim(0)
            if sys.getallocatedblocks() > heap_after_full * (1 + self.growth):
                gc.unfreeze()
                gc.collect()
                gc.freeze()
                self.full_collections += 1
                heap_after_full = sys.getallocatedblocks()


def _malloc_trim() -> Callable[[int], Any] | None:
    """glibc's ``malloc_trim``; None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
