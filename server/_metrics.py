"""Prometheus metrics, made with prometheus-client: ``GET /metrics``.

Counted as they happen: HTTP requests (by route pattern, method and status) and their
latency, requests shed with 503, deadline expiries (504), and jobs by task: enqueued,
started, succeeded, retried, dead, cancelled and released, with run-time histograms
(from the runner's events). Read at scrape time, from the objects that already keep
them: requests in flight, the state of every service in the supervision tree, open
WebSockets, subscriptions per topic namespace, messages published and delivered,
slow-consumer disconnects, and each job queue's depth and the age of its oldest due
job (one query to the store per scrape).

Each process serves its own numbers (one registry per app, not the global one):
``canopy serve`` runs one worker process, and separate ``canopy worker`` processes
do not serve HTTP. Behind Nginx, scrape each instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from handlers.topics import TopicsService
from nurseries import InflightLimit, ServiceState, ServiceStatus
from nurseries.jobs import Job, JobStore

__all__ = ["CONTENT_TYPE", "Metrics"]

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
        self.requests = Counter(
            "canopy_http_requests",
            "HTTP requests answered, by route pattern, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "canopy_http_request_duration_seconds",
            "time to answer an HTTP request, by route pattern",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shed = Counter(
            "canopy_http_shed",
            "requests refused with 503 because the in-flight bound was reached",
            registry=self.registry,
        )
        self.deadlines = Counter(
            "canopy_http_deadline_exceeded",
            "requests cancelled by their deadline (504)",
            registry=self.registry,
        )
        self.jobs = Counter(
            "canopy_jobs",
            "job events by task: enqueued, started, succeeded, retried, dead, cancelled, released",
            ["task", "event"],
            registry=self.registry,
        )
        self.job_runtime = Histogram(
            "canopy_job_runtime_seconds",
            "how long each run of a job took, by task",
            ["task"],
            buckets=RUNTIME_BUCKETS,
            registry=self.registry,
        )
        self.store: JobStore | None = None  # set once the jobs are assembled
        self._snapshot = _Snapshot(limit, tree, topics)
        self.registry.register(self._snapshot)

    def job_enqueued(self, job: Job) -> None:
        self.jobs.labels(job.task, "enqueued").inc()

    async def job_event(self, job_id: str, event: dict[str, Any]) -> None:
        """A runner's event (see nurseries.jobs.JobRunner's ``notify``)."""
        task, state = event.get("task", "unknown"), event.get("state")
        if state == "running":
            if "attempts" in event:
                self.jobs.labels(task, "started").inc()
        elif state in JOB_OUTCOMES:
            self.jobs.labels(task, JOB_OUTCOMES[state]).inc()
            if "runtime" in event:
                self.job_runtime.labels(task).observe(event["runtime"])

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    async def render(self) -> bytes:
        """The exposition text, with the queue figures read from the store just now."""
        if self.store is not None:
            self._snapshot.queues = await self.store.queue_stats()
        return bytes(generate_latest(self.registry))


class _Snapshot(Collector):
    """What other objects already count, read when Prometheus scrapes."""

    def __init__(
        self,
        limit: InflightLimit,
        tree: Callable[[], ServiceStatus],
        topics: TopicsService,
    ) -> None:
        self._limit = limit
        self._tree = tree
        self._topics = topics
        self.queues: dict[str, tuple[int, float | None]] = {}  # read from the store by render

    def collect(self) -> Iterator[Metric]:
        inflight = GaugeMetricFamily(
            "canopy_http_requests_in_flight", "HTTP requests being served now"
        )
        inflight.add_metric([], self._limit.inflight)
        yield inflight

        states = GaugeMetricFamily(
            "canopy_service_state",
            "1 for the state each service of the supervision tree is in",
            labels=["service", "state"],
        )
        restarts = CounterMetricFamily(
            "canopy_service_restarts", "restarts of each service", labels=["service"]
        )
        for path, status in _walk(self._tree()):
            for state in ServiceState:
                states.add_metric([path, state.value], 1.0 if status.state is state else 0.0)
            restarts.add_metric([path], status.restarts)
        yield states
        yield restarts

        connections = GaugeMetricFamily("canopy_websockets", "topic WebSocket sessions open")
        connections.add_metric([], self._topics.connections)
        yield connections
        hub = self._topics.hub
        stats = hub.stats()
        for name, kind, help_ in (
            ("topics", GaugeMetricFamily, "topics with a log in the hub"),
            ("published", CounterMetricFamily, "messages published"),
            ("delivered", CounterMetricFamily, "messages delivered to subscribers"),
            ("slow_disconnects", CounterMetricFamily, "subscribers closed as slow consumers"),
        ):
            family = kind(f"canopy_fanout_{name}", help_)
            family.add_metric([], stats[name])
            yield family
        subscriptions = GaugeMetricFamily(
            "canopy_fanout_subscriptions",
            "subscriptions by topic namespace (the pattern's first segment)",
            labels=["namespace"],
        )
        for namespace, count in sorted(hub.subscriptions_by_namespace().items()):
            subscriptions.add_metric([namespace], count)
        yield subscriptions

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


def _walk(status: ServiceStatus, prefix: str = "") -> Iterator[tuple[str, ServiceStatus]]:
    path = f"{prefix}/{status.name}" if prefix else status.name
    yield path, status
    for child in status.children:
        yield from _walk(child, path)


def route_label(request: Any) -> str:
    """The route pattern (``/jobs/<job_id>``), never the raw path: bounded cardinality.
    ``unmatched`` for requests never routed: 404s, and requests shed before routing."""
    rule = getattr(request, "url_rule", None)
    return rule.rule if rule is not None else "unmatched"
