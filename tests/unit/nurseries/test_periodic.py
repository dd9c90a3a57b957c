"""Periodic jobs: ticks on an epoch grid, exactly one job per tick across schedulers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from canopy.nurseries.jobs import (
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


def _utc(text: str) -> float:
    return datetime.fromisoformat(f"2026-01-01T{text}+00:00").timestamp()


def test_cron_ticks_are_the_matching_minutes_in_utc() -> None:
    schedule = Periodic("five", "demo.echo", cron="*/5 * * * *")
    assert schedule.next_tick(_utc("00:04:59.9")) == _utc("00:05:00")
    assert schedule.next_tick(_utc("00:05:00")) == _utc("00:10:00")  # strictly after
    nightly = Periodic("nightly", "demo.echo", cron="0 3 * * *")
    assert nightly.next_tick(_utc("12:00:00")) == _utc("03:00:00") + 86400
    for bad in [{}, {"every": 5, "cron": "* * * * *"}, {"cron": "61 * * * *"}, {"cron": "x"}]:
        with pytest.raises(ValueError):
            Periodic("bad", "demo.echo", **bad)  # type: ignore[arg-type]


class _Enqueued:
    """Records what the scheduler enqueues: its timing is under test here; the store's
    one-job-per-tick across schedulers is tested against SQLite below."""

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    async def enqueue(self, job: Any) -> tuple[Any, bool]:
        self.jobs.append(job)
        return job, True


async def test_a_cron_schedule_enqueues_at_each_matching_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = _utc("00:04:30")
    store = _Enqueued()
    schedule = Periodic("five", "tick", cron="*/5 * * * *", args={"n": 1})
    scheduler = PeriodicScheduler(
        store,  # type: ignore[arg-type]
        registry(),
        [schedule],
        clock=lambda: start + trio.current_time(),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        await trio.sleep(16 * 60)
        nursery.cancel_scope.cancel()
    ticks = [datetime.fromtimestamp(job.run_at, UTC).strftime("%H:%M:%S") for job in store.jobs]
    assert ticks == ["00:05:00", "00:10:00", "00:15:00", "00:20:00"]
    assert {job.idempotency_key for job in store.jobs} == {
        tick_key(schedule, job.run_at) for job in store.jobs
    }
    assert all(job.args == {"n": 1} for job in store.jobs)


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
