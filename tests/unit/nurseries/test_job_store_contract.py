"""The contract every job store must pass: SQLite and Redis, the same tests."""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from canopy.nurseries.jobs import (
    IdempotencyConflict,
    Job,
    JobState,
    JobStoreError,
    QueueFull,
    SQLiteJobStore,
)
from canopy.nurseries.jobs._sqlite import _SCHEMA

StoreFactory = Callable[..., Any]  # see make_store in conftest


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


async def test_the_bound_counts_what_waits_through_every_change(
    make_store: StoreFactory, nursery: trio.Nursery
) -> None:
    """Claims, retries, dead-letter retries, cancels, sweeps and releases each move
    jobs into or out of what the bound counts (the SQLite store keeps that count
    instead of counting at each enqueue)."""
    small = make_store(max_queued=2)
    await nursery.start(small.run)

    async def accepted() -> bool:
        try:
            await small.enqueue(Job("t", queue="q"))
        except QueueFull:
            return False
        return True

    assert [await accepted() for _ in range(3)] == [True, True, False]
    a, b = await small.claim("q", "w1", limit=2, lease=10)  # none waiting
    assert await accepted()  # 1
    later = time.time() + 60
    assert await small.finish(a.moved(JobState.RETRYING, run_at=later, lease_owner=None), "w1")
    assert not await accepted()  # 2: the retry waits
    assert await small.finish(b.moved(JobState.FAILED, error="boom", lease_owner=None), "w1")
    assert not await accepted()  # still 2: a dead letter does not wait
    assert (await small.retry_dead(b.id)).state is JobState.QUEUED  # 3
    await small.cancel(a.id)
    await small.cancel(b.id)
    assert await accepted()  # 2 (the two enqueued since the claim)
    assert not await accepted()
    (c,) = await small.claim("q", "w1", limit=1, lease=0.2)  # 1
    await trio.sleep(0.3)
    assert await small.requeue_expired() == 1  # 2
    assert not await accepted()
    (c,) = await small.claim("q", "w2", limit=1, lease=10)  # 1
    released = c.moved(JobState.QUEUED, attempts=0, lease_owner=None, lease_expires=None)
    assert await small.finish(released, "w2")  # 2
    assert not await accepted()
    assert (await small.queue_stats())["q"][0] == 2


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
    assert await store.finish(done, "someone-else") is None
    assert await store.finish(done, "w1") is JobState.SUCCEEDED
    stored = await store.get(job.id)
    assert stored.state is JobState.SUCCEEDED and stored.result == {"ok": True}
    assert await store.finish(done, "w1") is None  # no longer running


async def test_finish_and_claim_writes_outcomes_then_leases_the_next(store: Any) -> None:
    for n in range(3):
        await store.enqueue(Job("t", {"n": n}))
    (first,) = await store.claim("default", "w1", limit=1, lease=10)
    done = first.moved(JobState.SUCCEEDED, result=1)
    written, claimed = await store.finish_and_claim([done], "w1", "default", 5, 10)
    assert written == [JobState.SUCCEEDED] and len(claimed) == 2
    assert {job.state for job in claimed} == {JobState.RUNNING}
    assert (await store.get(first.id)).state is JobState.SUCCEEDED
    # Not the lease holder: nothing written; and a limit of 0 leases nothing.
    written, claimed = await store.finish_and_claim(
        [claimed[0].moved(JobState.SUCCEEDED)], "w2", "default", 0, 10
    )
    assert (written, claimed) == ([None], [])
    assert (await store.get(first.id)).result == 1


async def test_expired_leases_are_claimable_again(store: Any) -> None:
    await store.enqueue(Job("t"))
    (job,) = await store.claim("default", "dead-worker", limit=1, lease=0.2)
    assert await store.requeue_expired() == 0
    await trio.sleep(0.3)
    announced = trio.Event()
    forget = store.on_enqueued(announced.set)
    assert await store.requeue_expired() == 1
    with trio.fail_after(1):
        await announced.wait()  # the runners hear of it, and need not poll
    forget()
    (again,) = await store.claim("default", "w2", limit=1, lease=10)
    assert again.id == job.id and again.attempts == 2 and again.lease_owner == "w2"
    late = job.moved(JobState.SUCCEEDED)
    assert await store.finish(late, "dead-worker") is None  # the old lease is worthless


async def test_cancel_waiting_at_once_and_flag_running_for_its_worker(store: Any) -> None:
    waiting, _ = await store.enqueue(Job("t"))
    cancelled = await store.cancel(waiting.id)
    assert cancelled.state is JobState.CANCELLED
    await store.enqueue(Job("t"))
    (running,) = await store.claim("default", "w1", limit=1, lease=10)
    assert (await store.cancel(running.id)).state is JobState.RUNNING
    assert await store.heartbeat("w1", [running.id], lease=10) == {running.id}
    assert await store.cancel("missing") is None


async def test_a_job_asked_to_cancel_is_not_run_again_when_its_worker_dies(store: Any) -> None:
    await store.enqueue(Job("t"))
    (job,) = await store.claim("default", "dead-worker", limit=1, lease=0.2)
    assert (await store.cancel(job.id)).state is JobState.RUNNING  # answered: asked
    await trio.sleep(0.3)
    announced: list[None] = []
    forget = store.on_enqueued(lambda: announced.append(None))
    assert await store.requeue_expired() == 1
    assert (await store.get(job.id)).state is JobState.CANCELLED
    assert await store.claim("default", "w2", limit=1, lease=10) == []
    assert await store.queue_stats() == {}
    await trio.sleep(0.1)  # Redis announces through pub/sub
    forget()
    assert announced == []  # nothing became claimable: no runner is woken for it


async def test_a_job_asked_to_cancel_is_not_retried_or_released(store: Any) -> None:
    for n in range(2):
        await store.enqueue(Job("t", {"n": n}, max_attempts=3))
    failing, stopping = await store.claim("default", "w1", limit=2, lease=10)
    for job in (failing, stopping):
        await store.cancel(job.id)
    # The cancel came after the runner had decided: a retry due now, and a release.
    retry = failing.moved(JobState.RETRYING, run_at=time.time(), error="boom")
    release = stopping.moved(JobState.QUEUED, attempts=0, lease_owner=None, lease_expires=None)
    recorded = await store.finish_many([retry, release], "w1")
    assert recorded == [JobState.CANCELLED, JobState.CANCELLED]
    assert {(await store.get(job.id)).state for job in (failing, stopping)} == {JobState.CANCELLED}
    assert await store.claim("default", "w2", limit=2, lease=10) == []
    assert await store.queue_stats() == {}
    assert await store.requeue_expired() == 0


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


async def test_delayed_and_retrying_jobs_are_claimed_once_due(store: Any) -> None:
    soon = time.time() + 0.3
    delayed, _ = await store.enqueue(Job("t", state=JobState.SCHEDULED, run_at=soon))
    await store.enqueue(Job("t", {"n": 2}))
    (first,) = await store.claim("default", "w1", limit=10, lease=10)
    retry = first.moved(JobState.RETRYING, run_at=soon, error="flaky", lease_owner=None)
    assert await store.finish(retry, "w1") is JobState.RETRYING
    assert (await store.get(first.id)).state is JobState.RETRYING
    assert await store.claim("default", "w1", limit=10, lease=10) == []
    await trio.sleep(0.35)
    claimed = await store.claim("default", "w1", limit=10, lease=10)
    assert {job.id for job in claimed} == {delayed.id, first.id}
    assert {job.id: job.attempts for job in claimed}[first.id] == 2


async def test_next_due_is_when_the_queues_earliest_waiting_job_is_due(store: Any) -> None:
    """What an idle runner sleeps until (``JobRunner._idle_for``): any waiting state,
    due or not, of this queue only; a claimed job no longer counts."""
    assert store.hears_enqueues
    assert await store.next_due("default") is None
    now = time.time()
    await store.enqueue(Job("t", state=JobState.SCHEDULED, run_at=now + 60))
    await store.enqueue(Job("t", state=JobState.SCHEDULED, run_at=now + 30, priority=5))
    await store.enqueue(Job("t", queue="other", state=JobState.SCHEDULED, run_at=now + 5))
    assert await store.next_due("default") == pytest.approx(now + 30)
    assert await store.next_due("other") == pytest.approx(now + 5)
    due, _ = await store.enqueue(Job("t", run_at=now - 1))
    assert await store.next_due("default") == pytest.approx(now - 1)
    (claimed,) = await store.claim("default", "w1", limit=10, lease=10)
    assert claimed.id == due.id
    assert await store.next_due("default") == pytest.approx(now + 30)
    retry = claimed.moved(JobState.RETRYING, run_at=now + 10, error="flaky", lease_owner=None)
    assert await store.finish(retry, "w1") is JobState.RETRYING
    assert await store.next_due("default") == pytest.approx(now + 10)
    assert await store.next_due("nobody's") is None


async def test_released_lease_runs_again_at_once(store: Any) -> None:
    await store.enqueue(Job("t"))
    (job,) = await store.claim("default", "w1", limit=1, lease=10)
    released = job.moved(JobState.QUEUED, attempts=0, lease_owner=None, lease_expires=None)
    assert await store.finish(released, "w1") is JobState.QUEUED
    (again,) = await store.claim("default", "w2", limit=1, lease=10)
    assert again.id == job.id and again.attempts == 1


async def test_queue_stats_count_waiting_and_the_oldest_due(store: Any) -> None:
    assert await store.queue_stats() == {}
    old = time.time() - 60
    await store.enqueue(Job("t", run_at=old))
    await store.enqueue(Job("t"))
    await store.enqueue(Job("t", state=JobState.SCHEDULED, run_at=time.time() + 3600))
    await store.enqueue(Job("t", queue="later", run_at=time.time() + 3600))
    stats = await store.queue_stats()
    assert stats["default"][0] == 3 and stats["default"][1] == pytest.approx(old)
    assert stats["later"] == (1, None)
    await store.claim("default", "w1", limit=2, lease=10)
    assert (await store.queue_stats())["default"] == (1, None)


async def test_progress_is_recorded_for_the_lease_holder_only(store: Any) -> None:
    await store.enqueue(Job("t"))
    (job,) = await store.claim("default", "w1", limit=1, lease=10)
    assert await store.report_progress(job.id, "w1", {"done": 3, "of": 10})
    assert not await store.report_progress(job.id, "w2", {"done": 9})
    assert (await store.get(job.id)).progress == {"done": 3, "of": 10}


async def test_list_jobs_by_state_newest_first(store: Any) -> None:
    ids = [(await store.enqueue(Job("t", {"n": n})))[0].id for n in range(3)]
    claimed = await store.claim("default", "w1", limit=1, lease=10)
    assert await store.finish(claimed[0].moved(JobState.FAILED, error="x"), "w1")
    assert [j.id for j in await store.list_jobs(JobState.FAILED)] == [claimed[0].id]
    queued = await store.list_jobs(JobState.QUEUED)
    assert [j.id for j in queued] == [i for i in ids[::-1] if i != claimed[0].id]
    assert len(await store.list_jobs(limit=2)) == 2


async def test_list_jobs_pages_through_every_job_once(store: Any) -> None:
    """Pages of 4 from each page's last job: every job once, newest first, also the
    ones created at the same instant (ordered by id then)."""
    same = time.time()
    made = [Job("t", {"n": n}, created_at=same, updated_at=same) for n in range(6)]
    made += [Job("t", {"n": n}) for n in range(6, 11)]
    for job in made:
        await store.enqueue(job)
    newest_first = sorted(made, key=lambda job: (job.created_at, job.id), reverse=True)
    seen: list[str] = []
    before = None
    while True:
        page = await store.list_jobs(JobState.QUEUED, limit=4, before=before)
        seen += [job.id for job in page]
        if len(page) < 4:
            break
        before = (page[-1].created_at, page[-1].id)
    assert seen == [job.id for job in newest_first]
    assert await store.list_jobs(limit=4, before=(same, "")) == []  # nothing older


async def test_a_cancel_request_reaches_listeners_of_the_store(store: Any) -> None:
    heard: list[str] = []
    forget = store.on_cancel_requested(heard.append)
    await store.enqueue(Job("t"))
    (job,) = await store.claim("default", "w1", limit=1, lease=10)
    await store.cancel(job.id)
    assert job.id in heard
    forget()


async def test_an_enqueued_record_keeps_every_field_it_came_with(store: Any) -> None:
    """A record that has run (an embedder giving one back) is stored with its result,
    error, progress and lease fields, in the same batch as a fresh one."""
    fresh = Job("t", {"n": 1})
    given = Job("t", {"n": 2}, result={"r": [1]}, error="boom", traceback="tb", progress=0.5)
    given = Job.from_dict({**given.to_dict(), "lease_owner": "w9", "lease_expires": 5.0})
    stored: dict[str, Job] = {}

    async def enqueue(job: Job) -> None:
        stored[job.id], _ = await store.enqueue(job)

    async with trio.open_nursery() as nursery:
        for job in (fresh, given):
            nursery.start_soon(enqueue, job)
    for job in (fresh, given):
        assert await store.get(job.id) == job == stored[job.id]


async def test_a_sqlite_insert_leaves_out_what_a_fresh_job_has_not_got(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """sqlite3 binds a None only after an adapter lookup: a fresh job's row leaves out
    the six columns it gets as it runs (NULL by default)."""
    store = SQLiteJobStore(tmp_path / "jobs.db")
    await nursery.start(store.run)
    statements: list[str] = []
    store.db.connection().set_trace_callback(statements.append)
    await store.enqueue(Job("t"))
    store.db.connection().set_trace_callback(None)
    (insert,) = [sql for sql in statements if sql.startswith("INSERT INTO jobs")]
    columns = insert.split("(")[1].split(")")[0].split(", ")
    assert "task" in columns and "headers" in columns
    for column in ("lease_owner", "lease_expires", "result", "error", "traceback", "progress"):
        assert column not in columns


async def test_a_sqlite_database_from_before_headers_is_migrated(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A jobs table made before jobs carried headers gains the column on open, and its
    jobs stay readable."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        old_schema = _SCHEMA.replace("    headers TEXT,\n", "")
        assert "headers" not in old_schema
        conn.executescript(old_schema)
    store = SQLiteJobStore(path)
    await nursery.start(store.run)
    job, _ = await store.enqueue(Job("t", headers={"traceparent": "00-abc"}))
    assert (await store.get(job.id)).headers == {"traceparent": "00-abc"}  # type: ignore[union-attr]


async def test_a_sqlite_list_by_state_reads_a_page_not_the_whole_state(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Listing jobs in one state (the dashboard's dead letters, every second) walks an
    index on (state, created_at) from the page's start: at 200,000 dead letters a
    page took 170 ms to sort without it, 0.1-0.4 ms with it. A database made with
    the index it replaced (on state and lease expiry) loses that one on open; the
    sweeper's has running jobs only."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(
            _SCHEMA.replace(
                "jobs_by_state ON jobs (state, created_at)",
                "jobs_leases ON jobs (state, lease_expires)",
            )
        )
    store = SQLiteJobStore(path)
    await nursery.start(store.run)

    def plans(state: JobState | None) -> list[str]:
        conn = store.db.connection()
        indexes = [row[1] for row in conn.execute("PRAGMA index_list(jobs)")]
        assert "jobs_leases" not in indexes
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        store._list(state, 10, (1.0, "x"))
        conn.set_trace_callback(None)
        (select,) = statements
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {select}")]

    (plan, *sort) = await store.db.read(plans, JobState.FAILED)
    assert plan.startswith("SEARCH jobs USING INDEX jobs_by_state (state=? AND created_at<?)")
    assert all("RIGHT PART" in step for step in sort)  # ties only, never the whole state

    # Every state: a page from each state's run of the index, merged; before, the
    # whole table was sorted (670 ms at 400,000 jobs).
    every = await store.db.read(plans, None)
    searches = [step for step in every if "jobs" in step.split()]
    assert searches == ["SEARCH jobs USING INDEX jobs_by_state (state=? AND created_at<?)"] * len(
        JobState
    )
    assert not any(step.startswith("SCAN jobs") for step in every)

    def sweep_plans() -> list[str]:
        conn = store.db.connection()
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        store._requeue_expired(time.time())
        conn.set_trace_callback(None)
        updates = [sql for sql in statements if sql.lstrip().startswith("UPDATE")]
        return [row[3] for sql in updates for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]

    # The sweeper seeks expired leases among running jobs only.
    sweeps = await store.db.read(sweep_plans)
    assert sweeps == ["SEARCH jobs USING INDEX jobs_running (lease_expires<?)"] * 2


async def test_a_sqlite_store_commits_what_it_answers_durably_and_its_runners_writes_not(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Enqueues, cancels and retries are answered after an fsync (``synchronous``);
    the runner's claims, leases, progress, outcomes and the sweeper's requeues commit
    at ``runner_synchronous``. Read from the statements SQLite ran."""
    store = SQLiteJobStore(tmp_path / "jobs.db")
    await nursery.start(store.run)
    statements: list[str] = []
    store.db.connection().set_trace_callback(statements.append)

    def levels() -> list[str]:
        """The level each transaction since the last call committed at."""
        level, committed = store.db.synchronous, []
        for statement in statements:
            if statement.startswith("PRAGMA synchronous="):
                level = statement.split("=")[1]
            elif statement == "COMMIT":
                committed.append(level)
        statements.clear()
        return committed

    job, _ = await store.enqueue(Job("t", max_attempts=1))
    assert levels() == ["FULL"]
    (job,) = await store.claim("default", "w1", limit=1, lease=0.2)
    await store.heartbeat("w1", [job.id], lease=0.2)
    await store.report_progress(job.id, "w1", {"done": 1})
    await trio.sleep(0.3)
    await store.requeue_expired()
    assert levels() == ["NORMAL"] * 4
    (job,) = await store.claim("default", "w1", limit=1, lease=10)
    await store.finish(job.moved(JobState.FAILED, error="boom"), "w1")
    assert levels() == ["NORMAL"] * 2
    await store.retry_dead(job.id)
    await store.cancel(job.id)
    assert levels() == ["FULL"] * 2
    assert (await store.get(job.id)).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert levels() == []  # a read commits nothing
    pragma = await store.db.read(store.db.connection().execute, "PRAGMA synchronous")
    assert pragma.fetchone()[0] == 2  # the connection's own level is back


async def test_a_sqlite_store_recounts_its_queues_when_it_opens(tmp_path: Path) -> None:
    """The waiting count is rebuilt from the jobs on open: a database from before it was
    kept, or one an older Canopy wrote to without keeping it, is bounded correctly."""
    path = tmp_path / "jobs.db"
    async with trio.open_nursery() as nursery:
        store = SQLiteJobStore(path, max_queued=2)
        await nursery.start(store.run)
        for _ in range(2):
            await store.enqueue(Job("t", queue="q"))
        nursery.cancel_scope.cancel()
    tamperings = [
        "UPDATE queue_depth SET waiting = 0",  # what an older writer leaves
        "DROP TABLE queue_depth",  # a database from before it existed
    ]
    for tampering in tamperings:
        with sqlite3.connect(path) as conn:
            conn.execute(tampering)
        async with trio.open_nursery() as nursery:
            reopened = SQLiteJobStore(path, max_queued=2)
            await nursery.start(reopened.run)
            with pytest.raises(QueueFull):
                await reopened.enqueue(Job("t", queue="q"))
            nursery.cancel_scope.cancel()


async def test_args_read_back_as_json_wrote_them(store: Any) -> None:
    """Whatever enqueue accepts comes back from a claim: NaN, and integers beyond 64
    bits as integers, to the last digit. The SQLite store decodes with orjson, which
    refuses NaN but turns such an integer into a float (2**70 + 1 came back as 2**70),
    so both must reach json. One job each: a NaN beside the integers would send the
    whole object to json and hide the second."""
    big = {"big": [2**70 + 1, -(2**63) - 1, 2**64], "text": "ü", "nested": [1.5, None, True]}
    await store.enqueue(Job("t", big, priority=0))
    await store.enqueue(Job("t", {"nan": math.nan}, priority=1))
    first, second = await store.claim("default", "w1", limit=2, lease=10)
    assert first.args == big
    assert [type(n) for n in first.args["big"]] == [int, int, int]
    assert math.isnan(second.args["nan"])


class Heard:
    """What a store's listeners were told, and a wait for the next of it."""

    def __init__(self) -> None:
        self.claimable = 0
        self.cancels: list[str] = []
        self._changed = trio.Event()

    def enqueued(self) -> None:
        self.claimable += 1
        self._changed.set()

    def cancel_requested(self, job_id: str) -> None:
        self.cancels.append(job_id)
        self._changed.set()

    async def until(self, heard: Callable[[], bool]) -> None:
        while not heard():
            self._changed = trio.Event()
            await self._changed.wait()


async def test_another_store_on_the_same_data_hears_of_claimable_jobs_and_cancels(
    make_store: StoreFactory, store: Any, nursery: trio.Nursery
) -> None:
    """Two stores over one database stand for two processes (a web tier and a worker):
    the worker's store tells its runners at once of jobs the other made claimable
    (enqueued, released) and of a cancel of a job it runs. SQLite rings a doorbell,
    Redis publishes; without them the runner would wait for its next poll, and the
    cancel for its heartbeat."""
    other = make_store(max_queued=1000)
    await nursery.start(other.run)
    heard = Heard()
    other.on_enqueued(heard.enqueued)
    other.on_cancel_requested(heard.cancel_requested)
    with trio.fail_after(3):
        while not heard.claimable:  # Redis's subscription may take a moment to start
            await store.enqueue(Job("t"))
            with trio.move_on_after(0.2):
                await heard.until(lambda: heard.claimable > 0)
    (job,) = await store.claim("default", "w1", limit=1, lease=10)
    before = heard.claimable
    released = job.moved(JobState.QUEUED, attempts=0, lease_owner=None, lease_expires=None)
    assert await store.finish(released, "w1") is JobState.QUEUED
    with trio.fail_after(2):
        await heard.until(lambda: heard.claimable > before)
    (job,) = await store.claim("default", "w2", limit=1, lease=10)
    await store.cancel(job.id)
    with trio.fail_after(2):
        await heard.until(lambda: job.id in heard.cancels)


async def test_sqlite_prunes_finished_jobs_and_their_keys_after_the_result_ttl(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """As Redis expires them: a finished job, dead letters too, goes with its key once
    finished for result_ttl; a waiting one stays however old. The pruner runs in the
    store's own nursery, every tenth of the TTL."""
    from canopy.nurseries import PRUNE_BATCH, follow_trio_clock

    with follow_trio_clock():
        async with trio.open_nursery() as nursery:
            store = SQLiteJobStore(tmp_path / "jobs.db", result_ttl=60)
            await nursery.start(store.run)
            done, _ = await store.enqueue(Job("t", idempotency_key="once"))
            dead, _ = await store.enqueue(Job("t"))
            waiting, _ = await store.enqueue(Job("t", queue="later"))
            first, second = await store.claim("default", "w1", 2, lease=600)
            await store.finish_many(
                [first.moved(JobState.SUCCEEDED, result=1), second.moved(JobState.FAILED)], "w1"
            )
            await trio.sleep(59)
            assert await store.get(done.id) is not None and await store.get(dead.id) is not None
            await trio.sleep(8)  # past the TTL, and a pruner's round
            assert await store.get(done.id) is None and await store.get(dead.id) is None
            assert (await store.get(waiting.id)).state is JobState.QUEUED  # type: ignore[union-attr]
            again, created = await store.enqueue(Job("t", {"other": 1}, idempotency_key="once"))
            assert created and again.id != done.id  # the key went with its job
            # Many at once go a batch per transaction, every one of them.
            many = [Job("t", queue="bulk") for _ in range(PRUNE_BATCH + 20)]
            for job in many:
                await store.enqueue(job)
            claimed = await store.claim("bulk", "w1", len(many), lease=600)
            await store.finish_many([j.moved(JobState.CANCELLED) for j in claimed], "w1")
            pruned_before = store.pruned
            await trio.sleep(60 + 7)  # the TTL, and a round
            assert await store.prune_finished() == 0  # the pruner got there first
            assert store.pruned - pruned_before == len(many)
            nursery.cancel_scope.cancel()
