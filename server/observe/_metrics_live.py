"""Per-process values that other objects already keep, mirrored into prometheus metrics.

In-flight requests, the supervision tree's states and restarts, open WebSockets and the
hub's counts live in this process's objects. A scrape-time collector can only read the
process that answers the scrape; with ``workers = N`` that is one worker at random. So
they are copied into ordinary gauges and counters, which prometheus-client's
multiprocess mode writes to a file per process and sums (or labels by ``pid``) at
scrape time:

- gauges that add up across workers (in flight, WebSockets, subscriptions) are
  ``livesum``: a worker that exits stops counting;
- the tree's states are ``liveall``: one series per live worker, labelled ``pid``;
- counts that only grow (restarts, published, delivered, slow disconnects) become
  counters fed by their increase, so a dead worker's share stays in the total.

``refresh()`` copies them. The answering process calls it on each scrape; under
multiprocess mode :class:`MetricsRefresher` also calls it every second in every
worker, so what another worker reports is at most that old.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Literal

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge

from canopy.handlers.topics import TopicsService
from canopy.nurseries import InflightLimit, ServiceState, ServiceStatus

__all__ = ["REFRESH_INTERVAL", "LiveValues", "MetricsRefresher"]

REFRESH_INTERVAL = 1.0
_Mode = Literal["livesum", "liveall"]


class _Increase:
    """Feeds a counter from a total kept elsewhere: adds what it grew by since the last
    look. A total that went down was reset (its owner restarted): all of it is new."""

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._last: dict[tuple[str, ...], float] = {}

    def update(self, total: float, *labels: str) -> None:
        last = self._last.get(labels, 0.0)
        grown = total - last if total >= last else total
        if grown:
            (self._counter.labels(*labels) if labels else self._counter).inc(grown)
        self._last[labels] = total


class LiveValues:
    def __init__(
        self,
        limit: InflightLimit,
        tree: Callable[[], ServiceStatus],
        topics: TopicsService,
        registry: CollectorRegistry | None,
    ) -> None:
        self._limit = limit
        self._tree = tree
        self._topics = topics
        self._paths: set[str] = set()
        self._namespaces: set[str] = set()

        def gauge(name: str, help_: str, mode: _Mode, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, help_, labels, registry=registry, multiprocess_mode=mode)

        def counter(name: str, help_: str, labels: tuple[str, ...] = ()) -> _Increase:
            return _Increase(Counter(name, help_, labels, registry=registry))

        self.inflight = gauge(
            "canopy_http_requests_in_flight", "HTTP requests being served now", "livesum"
        )
        self.states = gauge(
            "canopy_service_state",
            "1 for the state each service of the supervision tree is in",
            "liveall",
            ("service", "state"),
        )
        self.restarts = counter("canopy_service_restarts", "restarts of each service", ("service",))
        self.websockets = gauge("canopy_websockets", "topic WebSocket sessions open", "livesum")
        self.topics = gauge("canopy_fanout_topics", "topics with a log in the hub", "livesum")
        self.subscriptions = gauge(
            "canopy_fanout_subscriptions",
            "subscriptions by topic namespace (the pattern's first segment)",
            "livesum",
            ("namespace",),
        )
        self.hub_counts = {
            name: counter(f"canopy_fanout_{name}", help_)
            for name, help_ in (
                ("published", "messages published"),
                ("delivered", "messages delivered to subscribers"),
                ("slow_disconnects", "subscribers closed as slow consumers"),
                ("gone", "subscriptions whose client left in the middle of a delivery"),
                ("topics_evicted", "topics forgotten to make room (CANOPY_MAX_TOPICS)"),
                ("unheard", "messages to a job's or order's topic nobody had opened: kept nowhere"),
            )
        }

    def refresh(self) -> None:
        self.inflight.set(self._limit.inflight)
        self._refresh_tree()
        self.websockets.set(self._topics.connections)
        hub = self._topics.hub
        stats = hub.stats()
        self.topics.set(stats["topics"])
        for name, increase in self.hub_counts.items():
            increase.update(stats[name])
        counts = hub.subscriptions_by_namespace()
        self._namespaces.update(counts)
        for namespace in self._namespaces:  # one that emptied reads 0, not its last count
            self.subscriptions.labels(namespace).set(counts.get(namespace, 0))

    def _refresh_tree(self) -> None:
        seen = set()
        for path, status in _walk(self._tree()):
            seen.add(path)
            for state in ServiceState:
                self.states.labels(path, state.value).set(1.0 if status.state is state else 0.0)
            self.restarts.update(status.restarts, path)
        for path in self._paths - seen:  # a service no longer in the tree is in no state
            for state in ServiceState:
                self.states.labels(path, state.value).set(0.0)
        self._paths |= seen


class MetricsRefresher:
    """Under multiprocess mode, a service that keeps this worker's live values fresh
    in its metric files, and removes its live gauges' file when it stops."""

    def __init__(self, values: LiveValues, directory: str, interval: float = REFRESH_INTERVAL):
        self.values = values
        self.directory = directory
        self.interval = interval

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from prometheus_client import multiprocess

        try:
            self.values.refresh()
            task_status.started()
            while True:
                await trio.sleep(self.interval)
                self.values.refresh()
        finally:
            # A stopping worker no longer counts as live (the pool's parent does the
            # same for a worker that died without getting here).
            multiprocess.mark_process_dead(os.getpid(), self.directory)


def _walk(status: ServiceStatus, prefix: str = "") -> Iterator[tuple[str, ServiceStatus]]:
    path = f"{prefix}/{status.name}" if prefix else status.name
    yield path, status
    for child in status.children:
        yield from _walk(child, path)
