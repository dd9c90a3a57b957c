"""Background jobs in a supervision tree: the store ``CANOPY_STORE`` names, the runner
and the periodic scheduler, for ``canopy serve`` and ``canopy worker`` alike."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from canopy.nurseries import Supervisor
from canopy.nurseries.fanout import Snapshot
from canopy.nurseries.jobs import (
    JobRunner,
    JobState,
    JobStore,
    Notify,
    Periodic,
    PeriodicScheduler,
    SQLiteJobStore,
    TaskRegistry,
    job_event,
)

from ..config._settings import Settings, SettingsError
from ..observe._tracing import Tracing
from ._capability import Publish
from ._redis import RedisConnections

__all__ = ["add_runner", "add_store", "job_states", "job_version", "notify_for", "schedules_for"]


def add_store(services: Supervisor, settings: Settings, redis: RedisConnections) -> JobStore:
    """The store ``CANOPY_STORE`` names, in the tree (for Redis, its connection goes in
    first, reconnecting with backoff for as long as Redis is away)."""
    store = _store(settings, redis)
    services.add("job_store", store, grace=settings.service_grace)
    return store


def add_runner(
    services: Supervisor,
    settings: Settings,
    store: JobStore,
    registry: TaskRegistry,
    schedules: Sequence[Periodic],
    *,
    notify: Notify | None,
    tracing: Tracing | None,
) -> None:
    """A runner per queue, then the scheduler when there are schedules: started last, after
    everything a task may use, and so stopped first. Every process that runs jobs
    follows the schedules (each tick is enqueued once, by whichever gets there first)."""
    memory_limit = settings.job_memory_limit * 2**20 or None
    for queue, concurrency in registry.queues().items():
        runner = JobRunner(
            store,
            registry,
            queue=queue,
            concurrency=concurrency or settings.job_concurrency,
            lease=settings.job_lease,
            poll_interval=settings.job_poll_interval,
            grace=settings.service_grace,
            memory_limit=memory_limit,
            notify=notify,
            instrument=tracing.job if tracing is not None else None,
        )
        # One runner per queue: a queue's jobs never wait for another's to end.
        name = "job_runner" if queue == "default" else f"job_runner:{queue}"
        services.add(name, runner, grace=settings.service_grace + 1)
    if schedules:
        scheduler = PeriodicScheduler(store, registry, list(schedules))
        services.add("scheduler", scheduler, grace=settings.service_grace)


def schedules_for(
    declared: Sequence[Periodic], settings: Settings, registry: TaskRegistry
) -> list[Periodic]:
    """The app's periodic jobs and the operator's ``CANOPY_SCHEDULES``, each of a task
    the app has."""
    names = {schedule.name for schedule in declared}
    for schedule in settings.schedules:
        if schedule.task not in registry:
            known = ", ".join(spec.name for spec in registry) or "none"
            raise SettingsError(
                f"CANOPY_SCHEDULES: {schedule.name}: must name a known task ({known}), "
                f"not {schedule.task!r}"
            )
        if schedule.name in names:
            raise SettingsError(
                f"CANOPY_SCHEDULES: {schedule.name}: the app schedules that name already"
            )
    return [*declared, *settings.schedules]


def notify_for(
    publish: Publish | None, observe: Notify | None, registry: TaskRegistry
) -> Notify | None:
    """Job events go to the topic ``jobs.{id}`` (state changes and progress) unless
    the task says they are not worth it (``events=False``), and to ``observe`` (the
    metrics) always."""
    if publish is None and observe is None:
        return None

    async def notify(job_id: str, event: dict[str, Any]) -> None:
        if observe is not None:
            await observe(job_id, event)
        if publish is not None and registry.publishes_events(event["task"]):
            await publish(f"jobs.{job_id}", event)

    return notify


def job_states(store: JobStore, registry: TaskRegistry) -> Snapshot:
    """A job's state as its topic's first message, shaped as its events are (see
    ``notify_for``): what a subscriber that opens ``jobs.{id}`` starts from, since the
    hub keeps no log of a job nobody watches (``Hub.on_demand``)."""

    async def state(topic: str) -> dict[str, Any] | None:
        job = await store.get(topic.removeprefix("jobs."))
        if job is None or not registry.publishes_events(job.task):
            return None
        event = job_event(job, job.state)
        if job.progress is not None and job.state is JobState.RUNNING:
            event["progress"] = job.progress
        return event

    return state


# Within an attempt: waiting for it, running it, past it (retrying, or released to run
# again), ended.
_PHASES = {"queued": 0, "scheduled": 0, "running": 1, "retrying": 2}


def job_version(event: Any) -> tuple[float, int]:
    """Orders a job's events: by attempt, then by how far into it. An event that does
    not say sorts after everything (it is never taken for an older one)."""
    if not isinstance(event, dict) or not isinstance(event.get("attempts"), int):
        return (math.inf, 0)
    state = event.get("state")
    phase = _PHASES.get(state, 3) if isinstance(state, str) else 3
    if state == "queued" and event["attempts"]:
        phase = 2  # released by a worker that stopped: after its attempt
    return (event["attempts"], phase)


def _store(settings: Settings, redis: RedisConnections) -> JobStore:
    sqlite_path = settings.sqlite_path
    if sqlite_path is not None:
        return SQLiteJobStore(
            sqlite_path,
            synchronous=settings.sqlite_synchronous,
            runner_synchronous=settings.sqlite_runner_synchronous,
            max_queued=settings.max_queued,
            result_ttl=settings.job_result_ttl,
        )
    from canopy.nurseries.redis import RedisJobStore

    return RedisJobStore(
        redis.get(settings.store_url),
        prefix=settings.redis_prefix,
        max_queued=settings.max_queued,
        result_ttl=settings.job_result_ttl,
    )
