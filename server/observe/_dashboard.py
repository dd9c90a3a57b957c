"""What the dashboard shows, read from what the server already counts.

Rates are differences between two snapshots, so they need no counters of their own:
requests per second and their latency (mean and 99th percentile, from the latency
histogram's buckets), and job outcomes per second, from the Prometheus counters in
:class:`~canopy.server.observe._metrics.Metrics`. Queue depths and dead letters come from the job
store (two calls per snapshot), the tree from the supervisor, topics from the hub.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from canopy.handlers.topics import TopicsService
from canopy.nurseries import InflightLimit, ServiceStatus
from canopy.nurseries.jobs import JobState, JobStore, JobStoreError

from ._metrics import Metrics

__all__ = ["DashboardSnapshot"]

DEAD_LETTERS = 10
OUTCOMES = ("enqueued", "started", "succeeded", "retried", "dead", "cancelled")


class DashboardSnapshot:
    def __init__(
        self,
        metrics: Metrics,
        limit: InflightLimit,
        tree: Callable[[], ServiceStatus],
        topics: TopicsService,
        store: Callable[[], JobStore | None],
    ) -> None:
        self.metrics = metrics
        self.limit = limit
        self.tree = tree
        self.topics = topics
        self.store = store
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._last: tuple[float, dict[str, float], list[float]] | None = None

    async def __call__(self) -> dict[str, Any]:
        now = time.time()
        counts = self._counts()
        buckets = self._latency_buckets()
        http, jobs_rates = self._rates(now, counts, buckets)
        self._last = (now, counts, [count for _le, count in buckets])
        hub = self.topics.hub
        snapshot: dict[str, Any] = {
            "instance": self.instance,
            "time": now,
            "http": {**http, "in_flight": self.limit.inflight},
            "jobs": {"rates": jobs_rates, "queues": {}, "dead": []},
            "tree": self.tree().to_dict(),
            "topics": {
                "connections": self.topics.connections,
                "subscriptions": hub.subscriptions_by_pattern(),
                **hub.stats(),
            },
        }
        store = self.store()
        if store is not None:
            try:
                queues = await store.queue_stats()
                dead = await store.list_jobs(JobState.FAILED, DEAD_LETTERS)
            except JobStoreError as exc:
                snapshot["jobs"]["error"] = str(exc)
            else:
                snapshot["jobs"]["queues"] = {
                    queue: {"waiting": waiting, "oldest_age": _age(now, oldest)}
                    for queue, (waiting, oldest) in sorted(queues.items())
                }
                snapshot["jobs"]["dead"] = [
                    {
                        "id": job.id,
                        "task": job.task,
                        "error": job.error,
                        "attempts": job.attempts,
                        "failed_at": job.updated_at,
                    }
                    for job in dead
                ]
        return snapshot

    def _counts(self) -> dict[str, float]:
        counts = {"requests": 0.0, "latency_sum": 0.0, **dict.fromkeys(OUTCOMES, 0.0)}
        for family in self.metrics.requests.collect():
            counts["requests"] += sum(s.value for s in family.samples if s.name.endswith("_total"))
        for family in self.metrics.latency.collect():
            counts["latency_sum"] += sum(s.value for s in family.samples if s.name.endswith("_sum"))
        for family in self.metrics.jobs.collect():
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["event"] in counts:
                    counts[sample.labels["event"]] += sample.value
        return counts

    def _latency_buckets(self) -> list[tuple[float, float]]:
        """Cumulative counts per upper bound, over all routes."""
        totals: dict[float, float] = {}
        for family in self.metrics.latency.collect():
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    totals[bound] = totals.get(bound, 0.0) + sample.value
        return sorted(totals.items())

    def _rates(
        self, now: float, counts: dict[str, float], buckets: list[tuple[float, float]]
    ) -> tuple[dict[str, Any], dict[str, float]]:
        if self._last is None:
            return {"rate": 0.0, "latency_mean": None, "latency_p99": None}, dict.fromkeys(
                OUTCOMES, 0.0
            )
        then, before, before_buckets = self._last
        elapsed = max(now - then, 1e-6)
        requests = counts["requests"] - before["requests"]
        http: dict[str, Any] = {
            "rate": requests / elapsed,
            "latency_mean": (counts["latency_sum"] - before["latency_sum"]) / requests
            if requests
            else None,
            "latency_p99": _quantile(buckets, before_buckets, 0.99),
        }
        jobs = {name: (counts[name] - before[name]) / elapsed for name in OUTCOMES}
        return http, jobs


def _quantile(buckets: list[tuple[float, float]], before: list[float], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` of the requests in between."""
    if len(before) != len(buckets):
        return None
    deltas = [(bound, count - old) for (bound, count), old in zip(buckets, before, strict=True)]
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return None
    for bound, cumulative in deltas:
        if cumulative >= q * total:
            return None if math.isinf(bound) else bound
    return None


def _age(now: float, oldest: float | None) -> float:
    return round(max(0.0, now - oldest), 3) if oldest is not None else 0.0
