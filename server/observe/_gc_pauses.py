"""The cyclic collector's pauses, as a histogram: ``canopy_gc_pause_seconds``.

A collection stops the event loop for as long as it walks: a request that arrives
meanwhile waits that long, so a pause shows in the latency tail and nowhere else.
``gc.callbacks`` times each one. The counts are plain integers, turned into the
histogram at scrape time: a callback runs inside whatever allocation set the
collection off, which may be one made while a metric holds its lock, so taking a
metric's lock there could deadlock.

Per process: in multiprocess mode each worker's scrape shows its own collector.
"""

from __future__ import annotations

import bisect
import gc
import math
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["GcPauses", "gc_pauses"]

BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, math.inf)


class GcPauses(Collector):
    def __init__(self) -> None:
        self.counts = [[0] * len(BOUNDS) for _ in range(3)]  # per generation, per bucket
        self.sums = [0.0] * 3
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = info["generation"]
        self.sums[generation] += took
        self.counts[generation][bisect.bisect_left(BOUNDS, took)] += 1

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "canopy_gc_pause_seconds",
            "how long each collection of the cyclic garbage collector stopped this process",
            labels=["generation"],
        )
        for generation, counts in enumerate(self.counts):
            cumulative, buckets = 0, []
            for bound, count in zip(BOUNDS, counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
            family.add_metric([str(generation)], buckets, self.sums[generation])
        yield family


_watching: GcPauses | None = None


def gc_pauses() -> GcPauses:
    """This process's pause counts, timed from the first call on."""
    global _watching
    if _watching is None:
        _watching = GcPauses()
        gc.callbacks.append(_watching)
    return _watching
