"""Periodic jobs: ticks on an epoch grid, exactly one job per tick across schedulers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from nurseries.jobs import (
    Periodic,
    PeriodicScheduler,
    SQLiteJobStore,
    TaskRegistry,
    UnknownTask,
    next_tick,
    tick_key,
)


def test_ticks_are_on_the_epoch_grid() -> None:
    assert next_tick(60, 125.0) == 180.0
    assert next_tick(60, 180.0) == 240.0  # strictly after
    assert next_tick(0.5, 10.2) == 10.5
    schedule = Periodic("report", "demo.echo", every=60)
    assert tick_key(schedule, 180.0) == "periodic:report:180000"
    with pytest.raises(ValueError):
        Periodic("bad", "demo.echo", every=0)


@pytest.fixture
async def store(tmp_path: Path, nursery: trio.Nursery) -> Any:
    running = SQLiteJobStore(tmp_path / "jobs.db")
    await nursery.start(running.run)
    return running


def registry() -> TaskRegistry:
    tasks = TaskRegistry()

    @tasks.task("tick")
    async def tick(args: dict[str, Any]) -> None:
        return None

    return tasks


async def test_one_job_per_tick_however_many_schedulers(store: SQLiteJobStore) -> None:
    schedule = Periodic("beat", "tick", every=60, args={"k": 1})
    schedulers = [PeriodicScheduler(store, registry(), [schedule]) for _ in range(3)]
    results: list[Any] = []

    async def enqueue(scheduler: PeriodicScheduler, tick: float) -> None:
        results.append(await scheduler.enqueue_tick(schedule, tick))

    async with trio.open_nursery() as nursery:
        for tick in (60.0, 120.0):
            for scheduler in schedulers:
                nursery.start_soon(enqueue, scheduler, tick)
    created = [job for job, new in results if new]
    assert sorted(job.run_at for job in created) == [60.0, 120.0]
    assert len(await store.list_jobs()) == 2


async def test_schedulers_running_together_enqueue_each_tick_once(
    store: SQLiteJobStore,
) -> None:
    schedule = Periodic("fast", "tick", every=0.1)
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            await nursery.start(PeriodicScheduler(store, registry(), [schedule]).run)
        await trio.sleep(0.55)
        nursery.cancel_scope.cancel()
    jobs = await store.list_jobs(limit=100)
    keys = [job.idempotency_key for job in jobs]
    assert 4 <= len(jobs) <= 6 and len(set(keys)) == len(keys)


async def test_an_unknown_task_refuses_to_start(store: SQLiteJobStore) -> None:
    scheduler = PeriodicScheduler(store, TaskRegistry(), [Periodic("x", "missing", every=1)])
    with pytest.raises(UnknownTask, match="missing"):
        await scheduler.run()
