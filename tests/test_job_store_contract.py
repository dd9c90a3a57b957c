"""The contract every job store must pass (SQLite now; Redis joins the parameters)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from nurseries.jobs import (
    IdempotencyConflict,
    Job,
    JobState,
    JobStoreError,
    QueueFull,
    SQLiteJobStore,
)

StoreFactory = Callable[..., Any]


@pytest.fixture(params=["sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    def make(**options: Any) -> Any:
        return SQLiteJobStore(tmp_path / "jobs.db", **options)

    return make


@pytest.fixture
async def store(make_store: StoreFactory, nursery: trio.Nursery) -> AsyncIterator[Any]:
    running = make_store(max_queued=1000)
    await nursery.start(running.run)
    yield running


async def test_enqueue_then_get(store: Any) -> None:
    job, created = await store.enqueue(Job("t", {"n": 1}, priority=3))
    assert created
    stored = await store.get(job.id)
    assert stored == job
    assert await store.get("missing") is None


async def test_idempotency_key_returns_the_original_or_conflicts(store: Any) -> None:
    first, created = await store.enqueue(Job("t", {"n": 1}, idempotency_key="order-9"))
    again, created_again = await store.enqueue(Job("t", {"n": 1}, idempotency_key="order-9"))
    assert created and not created_again
    assert again.id == first.id
    with pytest.raises(IdempotencyConflict) as info:
        await store.enqueue(Job("t", {"n": 2}, idempotency_key="order-9"))
    assert info.value.existing.id == first.id


async def test_queue_bound_refuses_past_the_limit(
    make_store: StoreFactory, nursery: trio.Nursery
) -> None:
    small = make_store(max_queued=2)
    await nursery.start(small.run)
    for _ in range(2):
        await small.enqueue(Job("t", queue="mail"))
    with pytest.raises(QueueFull):
        await small.enqueue(Job("t", queue="mail"))
    await small.enqueue(Job("t", queue="other"))  # the bound is per queue


async def test_concurrent_enqueues_are_group_committed_and_durable(
    make_store: StoreFactory,
) -> None:
    first = make_store()
    ids: list[str] = []

    async def enqueue(n: int) -> None:
        job, _ = await first.enqueue(Job("t", {"n": n}))
        ids.append(job.id)

    async with trio.open_nursery() as outer:
        await outer.start(first.run)
        async with trio.open_nursery() as producers:
            for n in range(300):
                producers.start_soon(enqueue, n)
        assert len(ids) == 300
        assert first.commits < 300 / 5  # grouped, not a transaction per job
        outer.cancel_scope.cancel()
    reopened = make_store()
    async with trio.open_nursery() as outer:
        await outer.start(reopened.run)
        stored = await reopened.list_jobs(limit=1000)
        assert {job.id for job in stored} == set(ids)
        outer.cancel_scope.cancel()


async def test_claim_leases_due_jobs_by_priority(store: Any) -> None:
    low, _ = await store.enqueue(Job("t", priority=5))
    high, _ = await store.enqueue(Job("t", priority=1))
    await store.enqueue(Job("t", run_at=time.time() + 3600))  # not due yet
    await store.enqueue(Job("t", queue="other"))
    claimed = await store.claim("default", "worker-1", limit=10, lease=10)
    assert [job.id for job in claimed] == [high.id, low.id]
    assert all(j.state is JobState.RUNNING and j.lease_owner == "worker-1" for j in claimed)
    assert all(j.attempts == 1 and j.lease_expires > time.time() for j in claimed)
    assert await store.claim("default", "worker-2", limit=10, lease=10) == []


async def test_finish_only_by_the_lease_holder(store: Any) -> None:
    await store.enqueue(Job("t"))
    (job,) = await store.claim("default", "w1", limit=1, lease=10)
    done = job.moved(JobState.SUCCEEDED, result={"ok": True})
    assert not await store.finish(done, "someone-else")
    assert await store.finish(done, "w1")
    stored = await store.get(job.id)
    assert stored.state is JobState.SUCCEEDED and stored.result == {"ok": True}
    assert not await store.finish(done, "w1")  # no longer running


async def test_expired_leases_are_claimable_again(store: Any) -> None:
    await store.enqueue(Job("t"))
    (job,) = await store.claim("default", "dead-worker", limit=1, lease=0.2)
    assert await store.requeue_expired() == 0
    await trio.sleep(0.3)
    assert await store.requeue_expired() == 1
    (again,) = await store.claim("default", "w2", limit=1, lease=10)
    assert again.id == job.id and again.attempts == 2 and again.lease_owner == "w2"
    late = job.moved(JobState.SUCCEEDED)
    assert not await store.finish(late, "dead-worker")  # the old lease is worthless


async def test_cancel_waiting_at_once_and_flag_running_for_its_worker(store: Any) -> None:
    waiting, _ = await store.enqueue(Job("t"))
    cancelled = await store.cancel(waiting.id)
    assert cancelled.state is JobState.CANCELLED
    await store.enqueue(Job("t"))
    (running,) = await store.claim("default", "w1", limit=1, lease=10)
    assert (await store.cancel(running.id)).state is JobState.RUNNING
    assert await store.heartbeat("w1", [running.id], lease=10) == {running.id}
    assert await store.cancel("missing") is None


async def test_a_store_that_is_not_running_says_so(make_store: StoreFactory) -> None:
    with pytest.raises(JobStoreError, match="not running"):
        await make_store().enqueue(Job("t"))


async def test_pending_enqueues_are_refused_when_the_store_stops(
    make_store: StoreFactory,
) -> None:
    stopping = make_store()
    outcomes: list[object] = []

    async def enqueue() -> None:
        try:
            outcomes.append(await stopping.enqueue(Job("t")))
        except JobStoreError as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as outer:
        store_scope = trio.CancelScope()

        async def run_store(task_status: trio.TaskStatus[None]) -> None:
            with store_scope:
                await stopping.run(task_status=task_status)

        await outer.start(run_store)
        for _ in range(50):
            outer.start_soon(enqueue)
        store_scope.cancel()  # stop the store while enqueues are in flight
    assert len(outcomes) == 50
    assert all(isinstance(o, (tuple, JobStoreError)) for o in outcomes)


async def test_the_same_store_object_runs_again_after_a_stop(make_store: StoreFactory) -> None:
    restartable = make_store()  # what a supervisor does after a crash
    ids = []
    for _ in range(2):
        async with trio.open_nursery() as outer:
            await outer.start(restartable.run)
            job, _ = await restartable.enqueue(Job("t"))
            ids.append(job.id)
            assert [j.id for j in await restartable.list_jobs()] == ids[::-1]
            outer.cancel_scope.cancel()


async def test_one_idempotency_key_twice_in_one_batch(store: Any) -> None:
    results: list[Any] = []

    async def enqueue(args: dict[str, int]) -> None:
        try:
            results.append(await store.enqueue(Job("t", args, idempotency_key="same")))
        except IdempotencyConflict as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:  # arrive together: one transaction
        for args in ({"n": 1}, {"n": 1}, {"n": 2}):
            nursery.start_soon(enqueue, args)
    created = [r for r in results if isinstance(r, tuple) and r[1]]
    repeats = [r for r in results if isinstance(r, tuple) and not r[1]]
    assert (
        len(created) + len(repeats) + sum(isinstance(r, IdempotencyConflict) for r in results) == 3
    )
    assert len(created) == 1
    assert {r[0].id for r in repeats} <= {created[0][0].id}


async def test_retry_dead_requeues_only_dead_letters(store: Any) -> None:
    await store.enqueue(Job("t"))
    (job,) = await store.claim("default", "w1", limit=1, lease=10)
    assert await store.finish(job.moved(JobState.FAILED, error="boom"), "w1")
    again = await store.retry_dead(job.id)
    assert again.state is JobState.QUEUED and again.attempts == 0 and again.error is None
    assert (await store.retry_dead(job.id)).state is JobState.QUEUED  # unchanged now
    assert await store.retry_dead("missing") is None
