"""The job runner against each real store (SQLite, Redis): success, retries, timeouts,
cancel, stop."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from canopy.nurseries.fanout import Hub
from canopy.nurseries.jobs import (
    Job,
    JobContext,
    JobRunner,
    JobState,
    JobStore,
    RetryPolicy,
    SQLiteJobStore,
    TaskRegistry,
    UnknownQueue,
    resident_memory,
)
from canopy.server.app._capability import hub_publisher
from canopy.server.app._jobs import notify_for
from tests.fanout_sinks import RecordingSink

FAST_RETRY = RetryPolicy(max_attempts=3, base=0.05, cap=0.05, jitter=False)


@pytest.fixture
async def store(make_store: Callable[..., Any], nursery: trio.Nursery) -> AsyncIterator[JobStore]:
    running = make_store()
    await nursery.start(running.run)
    yield running


def runner(store: JobStore, registry: TaskRegistry, **options: Any) -> JobRunner:
    defaults: dict[str, Any] = {"lease": 2.0, "sweep_interval": 0.1, "poll_interval": 0.02}
    return JobRunner(store, registry, **{**defaults, **options})


async def wait_for_state(store: JobStore, job_id: str, *states: JobState) -> Job:
    with trio.fail_after(5):
        while True:
            job = await store.get(job_id)
            if job is not None and job.state in states:
                return job
            await trio.sleep(0.02)


def count_at_once(
    registry: TaskRegistry, name: str, pause: Callable[[int], float]
) -> dict[str, int]:
    """Declare a task that sleeps ``pause(n)``; the dict counts how many ran at once."""
    counts = {"running": 0, "most": 0}

    @registry.task(name)
    async def task(args: dict[str, int]) -> int:
        counts["running"] += 1
        counts["most"] = max(counts["most"], counts["running"])
        try:
            await trio.sleep(pause(args["n"]))
        finally:
            counts["running"] -= 1
        return args["n"]

    return counts


def signalling() -> tuple[TaskRegistry, trio.Event]:
    """A registry whose task ``signal`` sets the event when a job of it runs."""
    registry, started = TaskRegistry(), trio.Event()

    @registry.task("signal")
    async def signal(args: dict[str, Any]) -> None:
        started.set()

    return registry, started


class Held:
    """Declares a task ``held`` whose jobs wait for ``release``; ``all_running`` is set
    once ``count`` of them run at once. ``again()`` starts a new round."""

    def __init__(self, registry: TaskRegistry, count: int) -> None:
        self.count = count
        self.again()

        @registry.task("held")
        async def held(args: dict[str, int]) -> None:
            self.running.append(args["n"])
            if len(self.running) == self.count:
                self.all_running.set()
            await self.release.wait()

    def again(self) -> None:
        self.running: list[int] = []
        self.release, self.all_running = trio.Event(), trio.Event()


async def due_together(store: JobStore, task: str, count: int) -> list[Job]:
    """``count`` jobs of ``task`` due together, so that one claim takes them all."""
    due = time.time() + 0.2
    return [(await store.enqueue(Job(task, {"n": n}, run_at=due)))[0] for n in range(count)]


async def test_runs_jobs_concurrently_to_success(store: JobStore, nursery: Any) -> None:
    registry = TaskRegistry()
    seen: list[int] = []

    @registry.task("add")
    async def add(args: dict[str, int]) -> int:
        await trio.sleep(0.05)
        seen.append(args["n"])
        return args["n"] * 2

    jobs = [(await store.enqueue(Job("add", {"n": n})))[0] for n in range(20)]
    worker = runner(store, registry, concurrency=8)
    await nursery.start(worker.run)
    for job in jobs:
        done = await wait_for_state(store, job.id, JobState.SUCCEEDED)
        assert done.result == job.args["n"] * 2 and done.attempts == 1
    assert sorted(seen) == list(range(20))
    worker.shutdown()


async def test_a_busy_runner_claims_as_soon_as_a_slot_frees(store: JobStore, nursery: Any) -> None:
    """Not after the poll interval: that is for an empty queue only."""
    registry = TaskRegistry()

    @registry.task("quick")
    async def quick(args: dict[str, int]) -> int:
        await trio.lowlevel.checkpoint()
        return args["n"]

    jobs = [(await store.enqueue(Job("quick", {"n": n})))[0] for n in range(20)]
    worker = runner(store, registry, concurrency=2, poll_interval=1.0)
    started = trio.current_time()
    await nursery.start(worker.run)
    for job in jobs:
        await wait_for_state(store, job.id, JobState.SUCCEEDED)
    # Ten rounds of two: polling when full would take ten poll intervals.
    assert trio.current_time() - started < 0.9
    worker.shutdown()


async def test_slots_are_refilled_as_outcomes_are_written_never_past_the_limit(
    store: JobStore, nursery: Any
) -> None:
    """The outcome writer claims for the slots it frees, in the same write, while the
    claim loop claims too: together they never run more than ``concurrency``."""
    registry = TaskRegistry()
    at_once = count_at_once(registry, "short", lambda n: 0.001 * (n % 5))

    jobs = [(await store.enqueue(Job("short", {"n": n})))[0] for n in range(120)]
    worker = runner(store, registry, concurrency=6, poll_interval=1.0)
    finished: list[int] = []
    original = store.finish_and_claim

    async def recording(*args: Any) -> tuple[list[JobState | None], list[Job]]:
        written, claimed = await original(*args)
        finished.append(len(claimed))
        return written, claimed

    store.finish_and_claim = recording  # type: ignore[method-assign]
    await nursery.start(worker.run)
    for job in jobs:
        done = await wait_for_state(store, job.id, JobState.SUCCEEDED)
        assert done.attempts == 1
    assert at_once["most"] == 6
    assert sum(finished) > 0  # the writer did refill slots itself
    worker.shutdown()


async def test_workers_are_started_as_needed_and_kept(store: JobStore, nursery: Any) -> None:
    """A runner allowed 1,000 jobs at once that is given 5 at a time starts 5 workers
    (not 1,000 idle tasks), and reuses them for the next 5."""
    registry = TaskRegistry()
    held = Held(registry, 5)

    def workers() -> int:
        tasks: list[Any] = [trio.lowlevel.current_root_task()]
        found = 0
        while tasks:
            task = tasks.pop()
            found += task.name.endswith("JobRunner._work")
            tasks.extend(t for n in task.child_nurseries for t in n.child_tasks)
        return found

    worker = runner(store, registry, concurrency=1000, poll_interval=0.02)
    await nursery.start(worker.run)
    assert workers() == 0
    for _round in range(3):
        held.again()
        jobs = [(await store.enqueue(Job("held", {"n": n})))[0] for n in range(5)]
        with trio.fail_after(5):
            await held.all_running.wait()
        assert workers() == 5
        held.release.set()
        for job in jobs:
            await wait_for_state(store, job.id, JobState.SUCCEEDED)
    assert workers() == 5
    worker.shutdown()


async def test_jobs_that_never_wait_share_a_worker_and_waiting_ones_get_one_each(
    store: JobStore, nursery: Any
) -> None:
    """A batch of jobs that never wait runs in one worker, one after another (a wake-up
    per job was 9 % of a no-op job's cost); the runner learns it from the first batch.
    Jobs that wait, coming after them, are still all under way at once."""
    registry = TaskRegistry()
    ran_in: list[Any] = []
    held = Held(registry, 8)

    @registry.task("compute")
    async def compute(args: dict[str, int]) -> int:
        ran_in.append(trio.lowlevel.current_task())
        return args["n"] * 2

    class WorkerSteps(trio.abc.Instrument):
        """Counts the scheduler's steps of the runner's workers."""

        steps = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.steps += task.name.endswith("JobRunner._work")

    worker = runner(store, registry, concurrency=8, poll_interval=0.02)
    await nursery.start(worker.run)
    for _round in range(2):  # the first teaches the runner that these do not wait
        ran_in.clear()
        steps = WorkerSteps()
        trio.lowlevel.add_instrument(steps)
        try:
            for job in await due_together(store, "compute", 8):
                await wait_for_state(store, job.id, JobState.SUCCEEDED)
        finally:
            trio.lowlevel.remove_instrument(steps)
    assert len(ran_in) == 8 and len(set(ran_in)) == 1
    # One worker ran the eight; the one it called found nothing (a worker woken per
    # job would have been eight steps).
    assert steps.steps == 2

    jobs = await due_together(store, "held", 8)
    with trio.fail_after(5):
        await held.all_running.wait()  # eight at once: none waits behind another
    assert sorted(held.running) == list(range(8)) and worker.running == 8
    held.release.set()
    for job in jobs:
        await wait_for_state(store, job.id, JobState.SUCCEEDED)
    worker.shutdown()


async def test_jobs_claimed_as_the_runner_stops_still_get_a_worker_each(
    store: JobStore, nursery: Any
) -> None:
    """The runner has learnt that jobs do not wait and has two workers; then it claims
    four that do wait, and is told to stop at that moment. Each still gets a worker
    and its grace, started while the runner drains, not released unrun."""
    registry = TaskRegistry()
    held = Held(registry, 4)

    @registry.task("compute")
    async def compute(args: dict[str, int]) -> int:
        return args["n"]

    worker = runner(store, registry, concurrency=4, poll_interval=0.02, grace=5.0)
    await nursery.start(worker.run)
    for job in await due_together(
        store, "compute", 2
    ):  # two workers; the first ran both: jobs that do not wait
        await wait_for_state(store, job.id, JobState.SUCCEEDED)

    claim = store.claim

    async def claim_then_stop(*args: Any) -> list[Job]:
        claimed = await claim(*args)
        if claimed:
            worker.shutdown()
        return claimed

    store.claim = claim_then_stop  # type: ignore[method-assign]
    jobs = await due_together(store, "held", 4)
    with trio.fail_after(3):
        await held.all_running.wait()
    held.release.set()
    for job in jobs:
        done = await wait_for_state(store, job.id, JobState.SUCCEEDED)
        assert done.attempts == 1


async def test_jobs_another_process_enqueues_are_polled_for_soon_after_a_busy_spell(
    make_store: Callable[..., Any], store: JobStore, nursery: Any
) -> None:
    """Jobs enqueued elsewhere and not announced (on SQLite, by a store whose doorbell
    is silent, see tests/unit/nurseries/test_doorbell.py) are polled for. Soon after a
    claim that found jobs (``min_poll``, then doubling), so a worker process keeping up
    with a web tier's enqueues does not idle ``poll_interval`` each time the queue runs
    dry; further apart once the queue has stayed empty."""
    registry = TaskRegistry()
    done: dict[int, float] = {}
    last = trio.Event()

    @registry.task("note")
    async def note(args: dict[str, int]) -> None:
        done[args["n"]] = trio.current_time()
        if args["n"] == 2:
            last.set()

    elsewhere = make_store()  # another process's store over the same data
    if hasattr(elsewhere, "doorbell"):
        elsewhere.doorbell.enabled = False  # it rings no one: polling is what is tested
    await nursery.start(elsewhere.run)
    worker = runner(store, registry, concurrency=4, poll_interval=1.0)
    await nursery.start(worker.run)
    await elsewhere.enqueue(Job("note", {"n": 0}))
    await wait_for_state(
        store, (await elsewhere.enqueue(Job("note", {"n": 1})))[0].id, JobState.SUCCEEDED
    )
    await trio.sleep(0.05)  # the queue ran dry a moment ago
    enqueued = trio.current_time()
    await elsewhere.enqueue(Job("note", {"n": 2}))
    with trio.fail_after(5):
        await last.wait()
    assert done[2] - enqueued < 0.5  # a poll_interval would be 1 s
    worker.shutdown()


def count_claims(store: JobStore) -> list[int]:
    """``store.claim`` counted from now on, in the list's one item."""
    looks = [0]
    original = store.claim

    async def counted(*args: Any) -> list[Job]:
        looks[0] += 1
        return await original(*args)

    store.claim = counted  # type: ignore[method-assign]
    return looks


async def test_an_idle_runner_whose_store_hears_every_process_looks_seldom(
    store: JobStore, nursery: Any
) -> None:
    """Every ``heard_poll_interval``, not every ``poll_interval``: other processes'
    enqueues are announced, and what comes due is waited for by its due time."""
    assert store.hears_enqueues
    looks = count_claims(store)
    worker = runner(store, TaskRegistry(), poll_interval=0.02, heard_poll_interval=0.2)
    await nursery.start(worker.run)
    await trio.sleep(0.3)  # the backoff has reached poll_interval
    before = looks[0]
    await trio.sleep(1.0)
    assert 4 <= looks[0] - before <= 6  # every poll_interval would be 50
    worker.shutdown()


async def test_an_idle_runner_wakes_for_a_retry_when_it_comes_due(
    store: JobStore, nursery: Any
) -> None:
    """A retry's due time is announced to no one: the idle runner asks the store when
    the next job is due and sleeps until then, not until its next look."""
    registry = TaskRegistry()
    attempts: list[float] = []

    @registry.task("flaky", retry=RetryPolicy(max_attempts=2, base=0.4, cap=0.4, jitter=False))
    async def flaky(args: dict[str, Any]) -> None:
        attempts.append(trio.current_time())
        if len(attempts) == 1:
            raise RuntimeError("once")

    worker = runner(store, registry, heard_poll_interval=30.0)
    await nursery.start(worker.run)
    job, _ = await store.enqueue(Job("flaky", max_attempts=2))
    assert (await wait_for_state(store, job.id, JobState.SUCCEEDED)).attempts == 2
    assert 0.4 <= attempts[1] - attempts[0] < 0.7
    worker.shutdown()


async def test_a_ring_lost_costs_at_most_the_heard_poll_interval(
    tmp_path: Path, nursery: Any
) -> None:
    """The net under the doorbell: a job another process enqueued without ringing (a
    full socket buffer, a listener it has not listed yet) is found at the next look."""
    store, elsewhere = SQLiteJobStore(tmp_path / "jobs.db"), SQLiteJobStore(tmp_path / "jobs.db")
    elsewhere.doorbell.enabled = False
    await nursery.start(store.run)
    await nursery.start(elsewhere.run)
    registry, started = signalling()
    worker = runner(store, registry, heard_poll_interval=0.3)
    await nursery.start(worker.run)
    await trio.sleep(0.5)  # idle, looking every 0.3 s
    enqueued = trio.current_time()
    await elsewhere.enqueue(Job("signal"))
    with trio.fail_after(2):
        await started.wait()
    assert trio.current_time() - enqueued < 0.45
    worker.shutdown()


async def test_a_claim_in_flight_holds_its_slots_against_the_writer(
    store: JobStore, nursery: Any
) -> None:
    """The claim loop's claim is slow here; meanwhile jobs finish and the writer claims
    for the slots they free. Counting the loop's slots as taken keeps the total at
    ``concurrency``."""
    registry = TaskRegistry()
    at_once = count_at_once(registry, "short", lambda n: 0.01)

    original = store.claim

    async def slow_claim(*args: Any) -> list[Job]:
        await trio.sleep(0.05)
        return await original(*args)

    store.claim = slow_claim  # type: ignore[method-assign]
    for n in range(3):
        await store.enqueue(Job("short", {"n": n}))
    worker = runner(store, registry, concurrency=6, poll_interval=5.0)
    await nursery.start(worker.run)
    await trio.sleep(0.2)  # three ran; the loop found too few and waits out its poll
    jobs = [(await store.enqueue(Job("short", {"n": n})))[0] for n in range(3)]
    # The enqueues woke the loop: its slow claim for the free slots is in flight while
    # the queue fills and the writer refills the slots of the jobs that finish.
    await trio.sleep(0.06)
    jobs += [(await store.enqueue(Job("short", {"n": n})))[0] for n in range(60)]
    for job in jobs:
        await wait_for_state(store, job.id, JobState.SUCCEEDED)
    assert at_once["most"] <= 6
    worker.shutdown()


async def test_a_job_enqueued_in_the_same_process_starts_without_waiting_for_a_poll(
    store: JobStore, nursery: Any
) -> None:
    registry, started = signalling()
    worker = runner(store, registry, poll_interval=30.0)
    await nursery.start(worker.run)
    await trio.sleep(0.2)  # the runner found nothing and is waiting out its poll
    with trio.fail_after(2):  # not 30 s
        await store.enqueue(Job("signal"))
        await started.wait()
    worker.shutdown()


async def test_failures_retry_then_become_dead_letters(store: JobStore, nursery: Any) -> None:
    registry = TaskRegistry()
    calls: list[float] = []

    @registry.task("flaky", retry=FAST_RETRY)
    async def flaky(args: dict[str, Any]) -> None:
        calls.append(trio.current_time())
        raise ValueError("upstream said no")

    job, _ = await store.enqueue(registry.get("flaky").new_job({}))
    assert job.max_attempts == 3  # the task's policy
    await nursery.start(runner(store, registry).run)
    dead = await wait_for_state(store, job.id, JobState.FAILED)
    assert dead.attempts == 3 and len(calls) == 3
    assert "upstream said no" in (dead.error or "")
    assert "Traceback" in (dead.traceback or "") and "ValueError" in (dead.traceback or "")
    assert all(later - earlier >= 0.04 for earlier, later in itertools.pairwise(calls))


async def test_a_jobs_own_attempts_count_over_its_tasks(store: JobStore, nursery: Any) -> None:
    """An enqueue that gave ``max_attempts`` keeps it: one attempt here, five there,
    whatever the task's policy says (three)."""
    registry = TaskRegistry()
    calls: dict[str, int] = {}

    @registry.task("flaky", retry=FAST_RETRY)
    async def flaky(args: dict[str, Any]) -> None:
        calls[args["name"]] = calls.get(args["name"], 0) + 1
        raise ValueError("upstream said no")

    spec = registry.get("flaky")
    once, _ = await store.enqueue(spec.new_job({"name": "once"}, max_attempts=1))
    five, _ = await store.enqueue(spec.new_job({"name": "five"}, max_attempts=5))
    await nursery.start(runner(store, registry).run)
    assert (await wait_for_state(store, once.id, JobState.FAILED)).attempts == 1
    assert (await wait_for_state(store, five.id, JobState.FAILED)).attempts == 5
    assert calls == {"once": 1, "five": 5}


async def test_timeout_cancels_the_job_and_counts_as_a_failure(
    store: JobStore, nursery: Any
) -> None:
    registry = TaskRegistry()
    cancelled: list[bool] = []

    @registry.task("slow", retry=RetryPolicy(max_attempts=1))
    async def slow(args: dict[str, Any]) -> None:
        try:
            await trio.sleep(30)
        except trio.Cancelled:
            cancelled.append(True)
            raise

    job, _ = await store.enqueue(Job("slow", timeout=0.2, max_attempts=1))
    await nursery.start(runner(store, registry).run)
    dead = await wait_for_state(store, job.id, JobState.FAILED)
    assert dead.error == "timed out after 0.2 s" and cancelled == [True]


async def cancelled_while_running(store: JobStore, nursery: Any) -> tuple[Job, float]:
    """A long job, cancelled once it runs: the job as cancelled, and how long it took."""
    registry = TaskRegistry()
    started = trio.Event()

    @registry.task("long")
    async def long(args: dict[str, Any]) -> None:
        started.set()
        await trio.sleep(30)

    job, _ = await store.enqueue(Job("long"))
    await nursery.start(runner(store, registry).run)
    await started.wait()
    asked = trio.current_time()
    await store.cancel(job.id)
    done = await wait_for_state(store, job.id, JobState.CANCELLED)
    return done, trio.current_time() - asked


async def test_cancelling_a_running_job_within_a_second(store: JobStore, nursery: Any) -> None:
    done, took = await cancelled_while_running(store, nursery)
    assert took < 1.0
    assert done.attempts == 1  # and it is not retried
    await trio.sleep(0.2)
    assert (await store.get(done.id)).state is JobState.CANCELLED  # type: ignore[union-attr]


async def test_a_cancel_whose_push_is_lost_arrives_with_the_heartbeat(
    store: JobStore, nursery: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push that carries a cancel (this process's event, the SQLite doorbell,
    Redis pub/sub) can be lost; the heartbeat's answer then carries it, within a
    heartbeat (a third of the lease, at most half a second)."""
    monkeypatch.setattr(store, "on_cancel_requested", lambda listener: lambda: None)
    done, took = await cancelled_while_running(store, nursery)
    assert took < 1.5
    assert done.attempts == 1


async def test_graceful_stop_releases_the_lease_for_the_next_runner(
    store: JobStore, nursery: Any
) -> None:
    registry = TaskRegistry()
    runs: list[str] = []
    started = trio.Event()

    @registry.task("long")
    async def long(args: dict[str, Any]) -> str:
        runs.append("start")
        started.set()
        await trio.sleep(30 if len(runs) == 1 else 0)
        return "finished"

    job, _ = await store.enqueue(Job("long"))
    first = runner(store, registry, grace=0.2)
    async with trio.open_nursery() as scope:
        await scope.start(first.run)
        await started.wait()
        stopped_at = trio.current_time()
        first.shutdown()
    assert trio.current_time() - stopped_at < 1.0
    released = await store.get(job.id)
    assert released is not None and released.state is JobState.QUEUED
    assert released.lease_owner is None and released.attempts == 0
    second = runner(store, registry)
    await nursery.start(second.run)
    done = await wait_for_state(store, job.id, JobState.SUCCEEDED)  # at once, no lease wait
    assert done.result == "finished" and done.attempts == 1


async def test_a_dead_workers_job_is_taken_over_after_its_lease(
    store: JobStore, nursery: Any
) -> None:
    registry = TaskRegistry()

    @registry.task("work")
    async def work(args: dict[str, Any]) -> str:
        return "done"

    job, _ = await store.enqueue(Job("work"))
    (claimed,) = await store.claim("default", "worker-that-died", 1, lease=0.3)
    assert claimed.id == job.id
    claimed_at = trio.current_time()
    await nursery.start(runner(store, registry).run)
    done = await wait_for_state(store, job.id, JobState.SUCCEEDED)
    assert 0.3 <= trio.current_time() - claimed_at < 1.5  # lease + sweep, not hours
    assert done.attempts == 2


async def test_unknown_task_is_a_dead_letter_at_once(store: JobStore, nursery: Any) -> None:
    job, _ = await store.enqueue(Job("nobody.registered.this"))
    await nursery.start(runner(store, TaskRegistry()).run)
    dead = await wait_for_state(store, job.id, JobState.FAILED)
    assert dead.error == "unknown task 'nobody.registered.this'" and dead.attempts == 1


async def test_a_task_reports_progress_while_it_runs(store: JobStore, nursery: Any) -> None:
    registry = TaskRegistry()
    halfway = trio.Event()
    resume = trio.Event()

    @registry.task("steps")
    async def steps(args: dict[str, Any], ctx: JobContext) -> str:
        await ctx.progress({"done": 1, "of": 2})
        halfway.set()
        await resume.wait()
        await ctx.progress({"done": 2, "of": 2})
        return ctx.job.id

    job, _ = await store.enqueue(Job("steps"))
    await nursery.start(runner(store, registry).run)
    await halfway.wait()
    running = await store.get(job.id)
    assert running is not None and running.progress == {"done": 1, "of": 2}
    assert not await store.report_progress(job.id, "not-the-owner", {"done": 9})
    resume.set()
    done = await wait_for_state(store, job.id, JobState.SUCCEEDED)
    assert done.result == job.id and done.progress == {"done": 2, "of": 2}


async def test_state_changes_and_progress_are_published_through_notify(
    store: JobStore, nursery: Any
) -> None:
    registry = TaskRegistry()
    hub = Hub()
    await nursery.start(hub.run)
    sink = RecordingSink()

    @registry.task("steps")
    async def steps(args: dict[str, Any], ctx: JobContext) -> str:
        await ctx.progress(50)
        return "ok"

    @registry.task("broken", retry=RetryPolicy(max_attempts=1))
    async def broken(args: dict[str, Any]) -> None:
        raise ValueError("no")

    async def publish(job_id: str, event: dict[str, Any]) -> Any:
        return await hub.publish(f"jobs.{job_id}", event)

    await hub.subscribe("jobs.*", sink)
    good, _ = await store.enqueue(Job("steps"))
    bad, _ = await store.enqueue(Job("broken", max_attempts=1))
    await nursery.start(runner(store, registry, notify=publish).run)
    await wait_for_state(store, good.id, JobState.SUCCEEDED)
    await wait_for_state(store, bad.id, JobState.FAILED)
    await trio.sleep(0.1)
    events = {
        job.id: [m.data for m in sink.messages if m.topic == f"jobs.{job.id}"]
        for job in (good, bad)
    }
    outcome = events[good.id][-1]
    assert 0 <= outcome.pop("runtime") < 5
    assert events[good.id] == [
        {"task": "steps", "state": "running", "attempts": 1},
        {"task": "steps", "state": "running", "attempts": 1, "progress": 50},
        {"task": "steps", "state": "succeeded", "attempts": 1, "result": "ok"},
    ]
    assert [e["state"] for e in events[bad.id]] == ["running", "failed"]
    assert "ValueError" in events[bad.id][-1]["error"]
    hub.shutdown()


async def test_a_retry_the_store_recorded_as_cancelled_is_published_as_cancelled(
    store: JobStore, nursery: Any
) -> None:
    """A cancel that comes in after the task failed and before its retry is written
    ends the job cancelled (the store's rule); the event says so, not ``retrying``."""
    registry = TaskRegistry()

    @registry.task("flaky", retry=FAST_RETRY)
    async def flaky(args: dict[str, Any]) -> None:
        raise ValueError("no")

    events: list[dict[str, Any]] = []

    async def record(job_id: str, event: dict[str, Any]) -> None:
        events.append(event)

    original = store.finish_and_claim

    async def cancelled_first(jobs: list[Job], *args: Any) -> Any:
        for job in jobs:
            await store.cancel(job.id)  # as the runner was about to write the retry
        return await original(jobs, *args)

    store.finish_and_claim = cancelled_first  # type: ignore[method-assign]
    job, _ = await store.enqueue(Job("flaky", max_attempts=3))
    worker = runner(store, registry, notify=record)
    await nursery.start(worker.run)
    await wait_for_state(store, job.id, JobState.CANCELLED)
    await trio.sleep(0.1)
    assert [e["state"] for e in events] == ["running", "cancelled"]
    assert (await store.get(job.id)).attempts == 1  # type: ignore[union-attr]
    worker.shutdown()


async def test_the_server_publishes_no_events_of_a_task_declared_without_them(
    store: JobStore, nursery: Any
) -> None:
    """``events=False`` (the order pipeline's steps): the metrics still hear every
    event, and no ``jobs.{id}`` topic is made for it."""
    registry = TaskRegistry()

    @registry.task("loud")
    async def loud(args: dict[str, Any]) -> int:
        return 1

    @registry.task("quiet", events=False)
    async def quiet(args: dict[str, Any]) -> int:
        return 2

    hub = Hub()
    await nursery.start(hub.run)
    sink = RecordingSink()
    await hub.subscribe("jobs.*", sink)
    observed: list[tuple[str, str]] = []

    async def observe(job_id: str, event: dict[str, Any]) -> None:
        observed.append((job_id, event["state"]))

    noisy, _ = await store.enqueue(Job("loud"))
    silent, _ = await store.enqueue(Job("quiet"))
    await nursery.start(
        runner(store, registry, notify=notify_for(hub_publisher(hub), observe, registry)).run
    )
    await wait_for_state(store, noisy.id, JobState.SUCCEEDED)
    await wait_for_state(store, silent.id, JobState.SUCCEEDED)
    await trio.sleep(0.1)
    assert {m.topic for m in sink.messages} == {f"jobs.{noisy.id}"}
    assert [s for j, s in observed if j == silent.id] == ["running", "succeeded"]
    assert (await hub.history(f"jobs.{silent.id}")).offset == 0  # no such topic
    hub.shutdown()


async def test_the_outcome_handed_over_as_the_runner_stops_is_written(
    store: JobStore, nursery: Any
) -> None:
    """The last job hands its outcome straight to the parked writer, and the jobs'
    end closes the channel before the writer runs: it writes the outcome (before,
    it crashed the runner and the job ran again after its lease)."""
    job, _ = await store.enqueue(Job("t"))
    worker = runner(store, TaskRegistry())
    (claimed,) = await store.claim("default", worker.owner, 1, 10.0)
    send, receive = trio.open_memory_channel[tuple[Job, float]](math.inf)
    async with trio.open_nursery() as writer:
        writer.start_soon(worker._write_outcomes, receive)
        await trio.testing.wait_all_tasks_blocked()
        done = claimed.moved(JobState.SUCCEEDED, lease_owner=None, lease_expires=None, result=1)
        send.send_nowait((done, 0.0))
        send.close()  # in the same tick, as the runner does once the jobs are over
    written = await store.get(job.id)
    assert written is not None and written.state is JobState.SUCCEEDED and written.result == 1


async def test_no_claims_while_the_process_is_over_its_memory_bound(
    store: JobStore, nursery: Any
) -> None:
    registry = TaskRegistry()
    counts = count_at_once(registry, "work", lambda n: 0.0)
    resident = {"bytes": 300}
    worker = runner(store, registry, memory_limit=200, memory=lambda: resident["bytes"])
    await nursery.start(worker.run)
    jobs = [await store.enqueue(registry.get("work").new_job({"n": n})) for n in range(5)]
    await trio.sleep(0.3)  # fifteen poll intervals
    assert counts["most"] == 0
    states = [(await store.get(job.id)).state for job, _ in jobs]  # type: ignore[union-attr]
    assert states == [JobState.QUEUED] * 5
    resident["bytes"] = 100  # back under: claimed at the next look
    for job, _ in jobs:
        await wait_for_state(store, job.id, JobState.SUCCEEDED)


def test_resident_memory_is_read_from_proc() -> None:
    measured = resident_memory()
    if not Path("/proc/self/statm").exists():
        assert measured == 0
        return
    ballast = bytearray(64 * 2**20)  # touched: resident
    assert resident_memory() >= measured + 60 * 2**20
    del ballast


async def test_a_runner_takes_only_its_own_queues_jobs(store: JobStore, nursery: Any) -> None:
    registry = TaskRegistry()
    counts = count_at_once(registry, "work", lambda n: 0.0)
    registry.queue("slow", concurrency=2)
    default, slow = runner(store, registry), runner(store, registry, queue="slow", concurrency=2)
    await nursery.start(default.run)
    spec = registry.get("work")
    on_slow = [await store.enqueue(spec.new_job({"n": n}, queue="slow")) for n in range(3)]
    on_default = await store.enqueue(spec.new_job({"n": 9}))
    await wait_for_state(store, on_default[0].id, JobState.SUCCEEDED)
    await trio.sleep(0.2)
    states = [(await store.get(job.id)).state for job, _ in on_slow]  # type: ignore[union-attr]
    assert states == [JobState.QUEUED] * 3
    await nursery.start(slow.run)
    for job, _ in on_slow:
        await wait_for_state(store, job.id, JobState.SUCCEEDED)
    assert counts["most"] >= 1


def test_queues_are_the_tasks_and_the_declared_ones() -> None:
    registry = TaskRegistry()
    registry.queue("cpu", concurrency=2)

    @registry.task("mail", queue="mail")
    async def mail(args: dict[str, Any]) -> None: ...

    assert registry.queues() == {"default": None, "cpu": 2, "mail": None}
    registry.check_queue("mail")
    with pytest.raises(UnknownQueue, match="'nowhere'"):
        registry.check_queue("nowhere")
    with pytest.raises(ValueError, match="at least 1"):
        registry.queue("none", concurrency=0)
    with pytest.raises(ValueError, match="another concurrency"):
        registry.queue("cpu", concurrency=3)
