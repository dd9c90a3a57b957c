"""Putting background jobs in a supervision tree: for the server, and for ``canopy worker``."""

from __future__ import annotations

from handlers import jobs, tasks
from nurseries import Supervisor
from nurseries.jobs import JobRunner, SQLiteJobStore, TaskRegistry

from ._settings import Settings

__all__ = ["add_jobs"]


def add_jobs(services: Supervisor, settings: Settings, *, run_jobs: bool) -> jobs.JobsService:
    """Add the job store and, with ``run_jobs``, a runner: started in that order,
    stopped runner first. A web tier that leaves running to ``canopy worker``
    processes passes ``run_jobs=False``; they share the store."""
    registry = TaskRegistry()
    tasks.register_examples(registry)
    store = SQLiteJobStore(
        settings.data_path / "canopy.db",
        synchronous=settings.sqlite_synchronous,
        max_queued=settings.max_queued,
    )
    services.add("job_store", store, grace=settings.service_grace)
    if run_jobs:
        runner = JobRunner(
            store,
            registry,
            concurrency=settings.job_concurrency,
            lease=settings.job_lease,
            grace=settings.service_grace,
        )
        services.add("job_runner", runner, grace=settings.service_grace + 1)
    return jobs.JobsService(store, registry)
