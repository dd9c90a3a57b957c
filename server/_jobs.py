"""Putting background jobs in a supervision tree: for the server, and for ``canopy worker``."""

from __future__ import annotations

import logging
from typing import Any

from canopy.handlers import jobs, tasks
from canopy.handlers.orders import OrdersService, OrderStore, SimulatedGateway
from canopy.nurseries import Supervisor
from canopy.nurseries.fanout import Hub, HubError
from canopy.nurseries.jobs import (
    JobRunner,
    JobStore,
    Notify,
    PeriodicScheduler,
    SQLiteJobStore,
    TaskRegistry,
)

from ._redis import RedisConnections
from ._settings import Settings
from ._tracing import Tracing

__all__ = ["add_jobs"]

log = logging.getLogger("canopy.events")


def add_jobs(
    services: Supervisor,
    settings: Settings,
    redis: RedisConnections,
    *,
    run_jobs: bool,
    hub: Hub | None = None,
    observe: Notify | None = None,
    tracing: Tracing | None = None,
) -> jobs.JobsService:
    """Add the job store and, with ``run_jobs``, a runner and the periodic scheduler
    (``CANOPY_SCHEDULES``): started in that order, stopped in reverse. A web tier
    that leaves running to ``canopy worker`` processes passes ``run_jobs=False``;
    they share the store, and every process that runs jobs follows the schedules
    (each tick is enqueued once, by whichever gets there first)."""
    registry = TaskRegistry()
    tasks.register_examples(registry)
    store = _store(settings, redis)
    services.add("job_store", store, grace=settings.service_grace)
    order_store = OrderStore(
        settings.data_path / "orders.db", synchronous=settings.sqlite_synchronous
    )
    services.add("order_store", order_store, grace=settings.service_grace)
    orders_service = OrdersService(
        order_store,
        SimulatedGateway(
            latency=settings.payment_latency,
            failure_rate=settings.payment_failure_rate,
            decline_rate=settings.payment_decline_rate,
        ),
        publish=_publisher(hub),
    )
    orders_service.register_tasks(registry)
    if run_jobs:
        runner = JobRunner(
            store,
            registry,
            concurrency=settings.job_concurrency,
            lease=settings.job_lease,
            grace=settings.service_grace,
            notify=_notify(hub, observe, registry),
            instrument=tracing.job if tracing is not None else None,
        )
        services.add("job_runner", runner, grace=settings.service_grace + 1)
        if settings.schedules:
            scheduler = PeriodicScheduler(store, registry, list(settings.schedules))
            services.add("scheduler", scheduler, grace=settings.service_grace)
    service = jobs.JobsService(
        store, registry, stamp=tracing.stamp if tracing is not None else None
    )
    service.orders = orders_service
    orders_service.enqueue = service.enqueue_task
    return service


def _publisher(hub: Hub | None) -> Any:
    """Order and job events to the hub; a hub that refuses one (its broker is away, or
    every topic it holds has a subscriber) costs the event, never the order's step or
    the job, and one line in the log."""
    if hub is None:
        return None

    async def publish(topic: str, data: dict[str, Any]) -> None:
        try:
            await hub.publish(topic, data)
        except HubError as exc:
            log.warning("event to %s not published: %s", topic, exc)

    return publish


def _store(settings: Settings, redis: RedisConnections) -> JobStore:
    """The store ``CANOPY_STORE`` names (for Redis, its connection goes in the tree
    first, reconnecting with backoff for as long as Redis is away)."""
    sqlite_path = settings.sqlite_path
    if sqlite_path is not None:
        return SQLiteJobStore(
            sqlite_path,
            synchronous=settings.sqlite_synchronous,
            runner_synchronous=settings.sqlite_runner_synchronous,
            max_queued=settings.max_queued,
        )
    from canopy.nurseries.redis import RedisJobStore

    return RedisJobStore(
        redis.get(settings.store_url),
        prefix=settings.redis_prefix,
        max_queued=settings.max_queued,
        result_ttl=settings.job_result_ttl,
    )


def _notify(hub: Hub | None, observe: Notify | None, registry: TaskRegistry) -> Notify | None:
    """Job events go to the topic ``jobs.{id}`` (state changes and progress) unless
    the task says they are not worth it (``events=False``), and to ``observe`` (the
    metrics) always."""
    if hub is None and observe is None:
        return None
    publish = _publisher(hub)

    async def notify(job_id: str, event: dict[str, Any]) -> None:
        if observe is not None:
            await observe(job_id, event)
        if publish is not None and registry.publishes_events(event["task"]):
            await publish(f"jobs.{job_id}", event)

    return notify
