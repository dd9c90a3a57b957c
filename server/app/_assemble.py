"""Assembling an app: its declarations and the loaded settings become a supervision tree.

Shape, serving (a worker has no access log, metrics or routes, and a hub only on a
shared broker, else the relay's client; ``canopy jobs`` runs the job store alone)::

    Supervisor "canopy"
      services                      stopped in reverse, each within its grace
        access_log
        redis connections           when a store or broker is on Redis
        hub                         fan-out
        event_relay                 on the memory broker: other processes' events in
        job_store
        <each capability's services, in the order they were included>
        <the app's own services>
        job_runner                  when this process runs jobs
        scheduler                   when there are periodic jobs
        metrics                     multiprocess refresher, with workers = N
      collector                     paces the cyclic collector (CANOPY_GC_THRESHOLD)
      http                          added by ``serve``: the first to stop

So a task finds the store, the hub and every service running when it starts, and
every service outlives the jobs that use it.
"""

from __future__ import annotations

import re
from typing import Any

from werkzeug.exceptions import HTTPException

from canopy.handlers import health
from canopy.handlers.jobs import JobsService
from canopy.handlers.topics import TopicsService
from canopy.nurseries import InflightLimit, Supervisor
from canopy.nurseries.fanout import RelayClient, RelayListener
from canopy.nurseries.jobs import DuplicateTask, TaskRegistry

from ..config._settings import Settings
from ..observe._access_log import AccessLog, RequestIds
from ..observe._metrics import CONTENT_TYPE, Metrics
from ..observe._tracing import tracing_for
from ..pipeline._app import CanopyApp, Runtime, _http_error, _unhandled_error, _version
from ..pipeline._openapi import install_openapi
from ._capability import Assembly, Mode
from ._declared import AppError, Declared, where
from ._jobs import (
    add_runner,
    add_store,
    job_states,
    job_version,
    notify_for,
    schedules_for,
)
from ._process import CollectorPacer
from ._redis import RedisConnections
from ._topics import JOB_TOPICS, add_topics

RELAY_SOCKET = "events.sock"  # in the data directory: a worker's events to the web tier

__all__ = ["assemble"]


def assemble(app: CanopyApp, declared: Declared, settings: Settings, mode: Mode) -> Runtime:
    """The tree of ``app`` and what it ``declared``, for ``mode``; nothing runs until it
    is served."""
    serving = mode is Mode.SERVE
    services = Supervisor("services")
    tree = Supervisor("canopy" if serving else "canopy-worker")
    # More than the runner's own grace (the jobs', then the release of their leases):
    # cut off by this deadline first, a stop left its running jobs leased.
    tree.add("services", services, grace=settings.service_grace + 2)
    limit = InflightLimit(settings.max_inflight, retry_after=settings.retry_after)
    runtime = Runtime(settings, tree, services, limit, AccessLog(), RequestIds())
    runtime.tracing = tracing_for(settings.tracing)
    if serving:
        services.add("access_log", runtime.access_log, grace=1.0)
    redis = RedisConnections(services, settings)
    runtime.topics = _topics(declared, mode, services, settings, redis)
    relay = _relay(mode, services, settings, runtime.topics)
    if serving:
        assert runtime.topics is not None
        runtime.metrics = Metrics(limit, tree.status, runtime.topics)
    registry = _registry(declared)
    store = add_store(services, settings, redis)
    runtime.jobs = JobsService(
        store,
        registry,
        on_enqueued=runtime.metrics.job_enqueued if runtime.metrics else None,
        stamp=runtime.tracing.stamp if runtime.tracing is not None else None,
    )
    if runtime.metrics is not None:
        runtime.metrics.store = store
    if runtime.topics is not None:
        runtime.topics.hub.on_demand(JOB_TOPICS, job_states(store, registry), job_version)
    assembly = Assembly(
        app,
        settings,
        mode,
        services,
        redis,
        runtime.jobs,
        registry,
        runtime.topics,
        runtime,
        relay,
    )
    for capability in declared.capabilities:
        _install(capability, assembly, declared)
    _add_services(declared, assembly)
    schedules = schedules_for(declared.periodic, settings, registry)
    if mode is Mode.WORKER or (serving and settings.run_jobs):
        observe = runtime.metrics.job_event if runtime.metrics else None
        # A worker's jobs' events reach the web tier's subscribers through the shared
        # broker, or on the memory broker through the relay to the web tier's hub.
        publish = assembly.publisher()
        notify = notify_for(publish, observe, registry)
        add_runner(
            services, settings, store, registry, schedules, notify=notify, tracing=runtime.tracing
        )
    if serving:
        _serve_web(app, runtime)
    if settings.gc_threshold and mode is not Mode.ADMIN:
        tree.add("collector", CollectorPacer())
    return runtime


def _topics(
    declared: Declared,
    mode: Mode,
    services: Supervisor,
    settings: Settings,
    redis: RedisConnections,
) -> TopicsService | None:
    """A worker has a hub only where one reaches the serving processes' subscribers:
    on a shared broker."""
    if mode is Mode.ADMIN or (mode is Mode.WORKER and settings.broker.startswith("memory://")):
        return None
    return add_topics(services, settings, redis, declared.topics, declared.anonymous_operations)


def _relay(
    mode: Mode, services: Supervisor, settings: Settings, topics: TopicsService | None
) -> RelayClient | None:
    """On the memory broker the web tier's hub owns the topics: it listens for other
    processes' events on ``events.sock`` in the data directory (after the hub in the
    tree, so stopped before it), and a worker publishes through it."""
    if not settings.broker.startswith("memory://") or mode is Mode.ADMIN:
        return None
    path = settings.data_path / RELAY_SOCKET
    if mode is Mode.WORKER:
        client = RelayClient(path)
        services.add("event_relay", client, grace=settings.service_grace)
        return client
    assert topics is not None
    services.add("event_relay", RelayListener(topics.hub, path), grace=settings.service_grace)
    return None


def _registry(declared: Declared) -> TaskRegistry:
    registry = TaskRegistry()
    for name, concurrency in declared.queues.items():
        registry.queue(name, concurrency=concurrency)
    for task in declared.tasks.values():
        task.register(registry)
    return registry


def _install(capability: Any, assembly: Assembly, declared: Declared) -> None:
    """A capability's install, its clashes with the app's names said as such."""
    try:
        capability.install(assembly)
    except DuplicateTask as exc:
        if exc.name not in declared.tasks:
            raise  # two capabilities' own: Canopy's mistake or theirs, not the app's
        raise AppError(
            f"task {exc.name!r} is declared twice: {where(declared.tasks[exc.name].function)}"
            f" and by the capability {capability!r}"
        ) from None


def _add_services(declared: Declared, assembly: Assembly) -> None:
    for service in declared.services.values():
        if not (assembly.serving or (assembly.mode is Mode.WORKER and service.worker)):
            continue
        try:
            assembly.add_service(
                service.name, service, grace=service.grace, restart=service.restart
            )
        except ValueError:  # the supervisor's duplicate child name
            raise AppError(
                f"service {service.name!r} is declared twice: {where(service.function)} "
                "and by Canopy or a capability the app includes"
            ) from None


def _serve_web(app: CanopyApp, runtime: Runtime) -> None:
    """What every served app has: the request pipeline's error answers, health,
    metrics and the OpenAPI document; then no route may be declared twice."""
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_body_size
    app.register_error_handler(HTTPException, _http_error)
    # None in a WebSocket session, which the handler has closed: Quart sends nothing.
    app.register_error_handler(Exception, _unhandled_error)  # type: ignore[arg-type]
    metrics = runtime.metrics
    assert metrics is not None
    if (refresher := metrics.refresher()) is not None:
        runtime.services.add("metrics", refresher, grace=1.0)

    @app.get("/metrics")
    async def metrics_route() -> tuple[bytes, int, dict[str, str]]:
        """Prometheus text format (server/observe/_metrics.py says what is counted)."""
        return await metrics.render(), 200, {"Content-Type": CONTENT_TYPE}

    install_openapi(app, _version())
    app.register_blueprint(health.create_blueprint(health.HealthService(runtime.tree.status)))
    _check_routes(app)


def _check_routes(app: CanopyApp) -> None:
    """Werkzeug serves the first of two rules for one path and method and never the
    second: a route declared twice is a start-up error naming both."""
    seen: dict[tuple[str, str], str] = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:([^:>]+):)?[^>]+>", lambda m: f"<{m.group(1) or 'string'}>", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            first = seen.setdefault((path, method), rule.endpoint)
            if first != rule.endpoint:
                raise AppError(
                    f"route {method} {rule.rule} is declared twice: by {first!r} and by "
                    f"{rule.endpoint!r}"
                )
