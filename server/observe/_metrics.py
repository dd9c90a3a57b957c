"""Prometheus metrics, made with prometheus-client: ``GET /metrics``.

Counted as they happen: HTTP requests (by route pattern, method and status) and their
latency, requests shed with 503, deadline expiries (504), and jobs by task: enqueued,
started, succeeded, retried, dead, cancelled and released, with run-time histograms
(from the runner's events). Copied from the objects that keep them (see
``_metrics_live``): requests in flight, the state of every service in the supervision
tree, open WebSockets, subscriptions per topic namespace, messages published and
delivered, slow-consumer disconnects. Read at scrape time from the shared job store:
each queue's depth and the age of its oldest due job (one query per scrape). Timed
in this process: the garbage collector's pauses (``_gc_pauses``).

One process (the default): one registry per app, not the global one. Several
(``workers = N``, or Hypercorn's own workers): prometheus-client's multiprocess mode,
switched on by ``PROMETHEUS_MULTIPROC_DIR``, which the ``workers = N`` parent sets
for its workers. Every metric is then written to a file per process, and any worker
answers a scrape with the sum over all of them (docs/OPERATIONS.md says how each
kind adds up).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from canopy.handlers.topics import TopicsService
from canopy.nurseries import InflightLimit, ServiceStatus
from canopy.nurseries.jobs import Job, JobStore

from ._gc_pauses import gc_pauses
from ._metrics_live import LiveValues, MetricsRefresher

__all__ = ["CONTENT_TYPE", "MULTIPROCESS_ENV", "Metrics", "multiprocess_dir"]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RUNTIME_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)
# A runner's outcome event's state -> the event counted.
JOB_OUTCOMES = {
    "succeeded": "succeeded",
    "retrying": "retried",
    "failed": "dead",
    "cancelled": "cancelled",
    "queued": "released",  # cut off by a stop, to run again elsewhere
}


class Metrics:
    def __init__(
        self,
        limit: InflightLimit,
        tree: Callable[[], ServiceStatus],
        topics: TopicsService,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.directory = multiprocess_dir()
        # Multiprocess: the metrics write to files, and the registry reads every
        # process's files; registering them too would count this process twice.
        own: CollectorRegistry | None = self.registry
        if self.directory is not None:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry, self.directory)
            own = None
        self.requests = Counter(
            "canopy_http_requests",
            "HTTP requests answered, by route pattern, method and status",
            ["route", "method", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "canopy_http_request_duration_seconds",
            "time to answer an HTTP request, by route pattern",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self.shed = Counter(
            "canopy_http_shed",
            "requests refused with 503 because the in-flight bound was reached",
            registry=own,
        )
        self.deadlines = Counter(
            "canopy_http_deadline_exceeded",
            "requests cancelled by their deadline (504)",
            registry=own,
        )
        self.jobs = Counter(
            "canopy_jobs",
            "job events by task: enqueued, started, succeeded, retried, dead, cancelled, released",
            ["task", "event"],
            registry=own,
        )
        self.job_runtime = Histogram(
            "canopy_job_runtime_seconds",
            "how long each run of a job took, by task",
            ["task"],
            buckets=RUNTIME_BUCKETS,
            registry=own,
        )
        self.store: JobStore | None = None  # set once the jobs are assembled
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.live = LiveValues(limit, tree, topics, own)
        self._queues = _QueueFigures()
        self.registry.register(self._queues)
        self.registry.register(gc_pauses())

    def refresher(self) -> MetricsRefresher | None:
        """The service that keeps other workers' scrapes fresh: multiprocess only."""
        return None if self.directory is None else MetricsRefresher(self.live, self.directory)

    def job_enqueued(self, job: Job) -> None:
        self._child(self.jobs, job.task, "enqueued").inc()

    async def job_event(self, job_id: str, event: dict[str, Any]) -> None:
        """A runner's event (see canopy.nurseries.jobs.JobRunner's ``notify``)."""
        task, state = event.get("task", "unknown"), event.get("state")
        if state == "running":
            if "attempts" in event:
                self._child(self.jobs, task, "started").inc()
        elif state in JOB_OUTCOMES:
            self._child(self.jobs, task, JOB_OUTCOMES[state]).inc()
            if "runtime" in event:
                self._child(self.job_runtime, task).observe(event["runtime"])

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self._child(self.requests, route, method, str(status)).inc()
        self._child(self.latency, route).observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: ``labels()`` checks its arguments and takes
        a lock on every call, which cost as much as the rest of a request's metrics.
        Bounded as the labels are: route patterns, methods, statuses, task names."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def render(self) -> bytes:
        """The exposition text, with the queue figures read from the store just now."""
        if self.store is not None:
            self._queues.queues = await self.store.queue_stats()
        self.live.refresh()
        return bytes(generate_latest(self.registry))


def multiprocess_dir() -> str | None:
    """Where prometheus-client's multiprocess mode keeps its files, if it is on (it
    reads the same variable when it is imported)."""
    return os.environ.get(MULTIPROCESS_ENV) or None


class _QueueFigures(Collector):
    """Each queue's depth and oldest due job, as the store said at this scrape: the
    store is shared, so any process reports the same figures."""

    def __init__(self) -> None:
        self.queues: dict[str, tuple[int, float | None]] = {}  # read from the store by render

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "canopy_jobs_queued", "jobs waiting to run, by queue", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "canopy_jobs_oldest_queued_seconds",
            "how long the oldest due job of each queue has waited",
            labels=["queue"],
        )
        now = time.time()
        for queue, (count, oldest) in sorted(self.queues.items()):
            depth.add_metric([queue], count)
            age.add_metric([queue], max(0.0, now - oldest) if oldest is not None else 0.0)
        yield depth
        yield age


def route_label(request: Any) -> str:
    """The route pattern (``/jobs/<job_id>``), never the raw path: bounded cardinality.
    ``unmatched`` for requests never routed: 404s, and requests shed before routing."""
    rule = getattr(request, "url_rule", None)
    return rule.rule if rule is not None else "unmatched"
