"""The job runner: a supervised nursery of jobs claimed from a store under leases.

Shape of :meth:`JobRunner.run`::

    writer nursery        the outcome writer: records outcomes in batches, shielded;
                          outlives everything below, and drains what they left it
      upkeep nursery      heartbeat (extends leases, hears cancel requests) and sweeper
                          (requeues jobs whose worker died); outlives the jobs
        jobs nursery      up to ``concurrency`` workers, started as jobs first need
                          them, each running started jobs one after another, each job
                          in its own CancelScope whose deadline is its timeout; the
                          nursery's deadline is the grace once the runner stops claiming

Claiming: as many jobs as there are free slots, again as soon as a slot frees (its
outcome written) or jobs are enqueued (``store.on_enqueued``); when the queue is
empty, looking again ``min_poll`` after a claim that found jobs, doubling while the
queue stays empty up to ``poll_interval``. Once there, a store that hears every
process's enqueues (``store.hears_enqueues``) lets the runner sleep until the next
job is due (``store.next_due``), at most ``heard_poll_interval``: an idle runner
costs a look a second, not twenty. None while the process's resident memory is over
``memory_limit``.

Error handling: what a task raises becomes a retry (after the policy's backoff) or,
past its attempts, a dead letter with the error and traceback. A timeout is a
failure like any other. A cancel request ends the job ``cancelled``, never retried.
A job still running when the grace ends is cancelled and its lease released, so it
runs again at once elsewhere, without the attempt counting against it.
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import trio

from .._failures import RepeatingFailure
from .._wall_clock import wall_time
from ._job import Job
from ._registry import TaskRegistry, UnknownTask
from ._retry import RetryPolicy
from ._state import JobState
from ._store import JobStore, JobStoreError

__all__ = ["JobContext", "JobRunner", "Notify", "job_event", "resident_memory"]

log = logging.getLogger("canopy.jobs")

FINISH_TIMEOUT = 5.0  # bound on writing a batch of outcomes, even while stopping
OUTCOME_BATCH = 500


@dataclass(frozen=True)
class JobContext:
    """What a task that takes a second parameter receives: its job, and a way to report."""

    job: Job
    _store: JobStore
    _owner: str
    _notify: Notify | None = None

    async def progress(self, value: Any) -> None:
        """Record progress (any JSON) on the job, for whoever watches it."""
        await self._store.report_progress(self.job.id, self._owner, value)
        event = {"task": self.job.task, "state": "running", "attempts": self.job.attempts}
        event["progress"] = value
        await _tell(self._notify, self.job.id, event)


# Told of every job this runner starts, each progress report, and each outcome it
# records: (job id, event). Every event has the job's ``task``, ``state`` and
# ``attempts``; an outcome also its ``runtime`` in seconds, and its ``result`` or
# ``error`` (``job_event``). The server publishes these to ``jobs.{id}`` and counts
# them in /metrics.
Notify = Callable[[str, dict[str, Any]], Awaitable[Any]]


def job_event(job: Job, state: JobState) -> dict[str, Any]:
    """``job``'s event as the store has it in ``state``: its task, state and attempts,
    and its result or its last error. One shape for the runner's outcomes and for a
    job's state read back from the store (the first message of its topic)."""
    event: dict[str, Any] = {"task": job.task, "state": state.value, "attempts": job.attempts}
    if job.state is JobState.SUCCEEDED:
        event["result"] = job.result
    elif job.error is not None:
        event["error"] = job.error
    return event


async def _tell(notify: Notify | None, job_id: str, event: dict[str, Any]) -> None:
    if notify is None:
        return
    try:
        await notify(job_id, event)
    except Exception:  # a watcher's failure is never the job's
        log.exception("could not publish an event of job %s", job_id)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory() -> int:
    """This process's resident memory in bytes, from /proc (0 where there is none: no
    bound can hold there)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


@dataclass(eq=False)
class _Running:
    job: Job
    scope: trio.CancelScope
    cancel_requested: bool = False


@dataclass(eq=False)
class JobRunner:
    store: JobStore
    registry: TaskRegistry
    queue: str = "default"
    concurrency: int = 1000  # jobs that wait cost a task each; memory_limit bounds the rest
    lease: float = 10.0
    sweep_interval: float = 1.0
    poll_interval: float = 0.05
    # After a claim that found jobs, look again soon: a worker that drained the queue
    # while another process kept enqueuing would otherwise wait ``poll_interval``
    # each time and sit idle between batches.
    min_poll: float = 0.002
    # The longest idle wait when the store hears every process's enqueues: what is
    # due is waited for by its due time, so this is only the net for a lost
    # announcement (a full socket buffer, a worker that began listening a moment ago).
    heard_poll_interval: float = 1.0
    grace: float = 5.0
    # Claim no more while this process's resident memory is over this many bytes
    # (None: no bound): jobs that wait cost a task each, so ``concurrency`` can be
    # high, and this is what keeps a flood of big ones from taking the process down.
    memory_limit: int | None = None
    memory: Callable[[], int] = field(default_factory=lambda: resident_memory)
    notify: Notify | None = None
    # Entered around each run of a task, with its job: the server's tracing opens the
    # job's span here (from the trace context in its headers). None costs nothing.
    instrument: Callable[[Job], AbstractContextManager[Any]] | None = None
    owner: str = field(default_factory=lambda: f"runner-{uuid.uuid4().hex[:12]}")
    _running: dict[str, _Running] = field(default_factory=dict, init=False)
    _stop: trio.Event = field(default_factory=trio.Event, init=False)
    # The claim loop parks here; _wake() unparks it when a slot frees, this process
    # enqueues jobs (store.on_enqueued), or the runner stops.
    _claimer: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot, init=False)
    # The heartbeat parks here while no job runs; _start unparks it.
    _beats: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot, init=False)
    _woken: bool = field(default=False, init=False)  # a wake came while not parked
    _outcomes: trio.MemorySendChannel[tuple[Job, float]] | None = field(default=None, init=False)
    # Slots asked for by claims still in flight: the claim loop and the outcome writer
    # both claim, and together they must not lease more than ``concurrency``.
    _reserved: int = field(default=0, init=False)
    _jobs: trio.Nursery | None = field(default=None, init=False)  # open while claiming
    # The same nursery, until it closes: ready jobs still get workers while they drain.
    _pool: trio.Nursery | None = field(default=None, init=False)
    # Started jobs not yet taken by a worker, and the workers waiting for one. Workers
    # live as long as the jobs nursery (a task spawned per job is a large share of a
    # short job's CPU), and are started as they are first needed, up to
    # ``concurrency``: a runner allowed 10,000 jobs at once that runs ten keeps ten.
    _ready: deque[_Running] = field(default_factory=deque, init=False)
    _idle: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot, init=False)
    _workers: int = field(default=0, init=False)
    _called: int = field(default=0, init=False)
    # While the store is away every loop fails each turn: said when it starts, counted
    # now and then, and said when it ends (see RepeatingFailure).
    _claim_failures: RepeatingFailure = field(
        default_factory=lambda: RepeatingFailure(log, "claim failed"), init=False
    )
    _heartbeat_failures: RepeatingFailure = field(
        default_factory=lambda: RepeatingFailure(log, "heartbeat failed"), init=False
    )
    _sweep_failures: RepeatingFailure = field(
        default_factory=lambda: RepeatingFailure(log, "sweep failed"), init=False
    )  # workers woken or started, not running yet
    _executing: int = field(default=0, init=False)  # workers inside a job (so, waiting in it)
    _arrivals: int = field(default=0, init=False)  # workers that came when called, so far
    # Whether jobs wait inside (so each needs its own worker), as the last ones did;
    # until it is known, they are taken to.
    _jobs_wait: bool = field(default=True, init=False)

    @property
    def running(self) -> int:
        return len(self._running)

    def shutdown(self) -> None:
        """Stop claiming; running jobs get ``grace`` seconds, then are released."""
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        self._woken = True
        self._claimer.unpark_all()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._stop = trio.Event()
        forget = self.store.on_enqueued(self._wake)
        forget_cancels = self.store.on_cancel_requested(self._cancel_requested)
        try:
            await self._run(task_status)
        finally:
            forget_cancels()
            forget()

    def _cancel_requested(self, job_id: str) -> None:
        entry = self._running.get(job_id)
        if entry is not None:
            entry.cancel_requested = True
            entry.scope.cancel()

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        # Unbounded, so a job hands over its outcome without waiting (also when it is
        # being cancelled); in practice bounded, as claims wait on the same store.
        outcomes, to_write = trio.open_memory_channel[tuple[Job, float]](math.inf)
        self._outcomes = outcomes
        self._ready.clear()
        self._workers = self._called = self._executing = 0
        self._jobs_wait = True
        async with trio.open_nursery() as writer:
            writer.start_soon(self._write_outcomes, to_write)
            async with trio.open_nursery() as upkeep:
                upkeep.start_soon(self._heartbeat)
                upkeep.start_soon(self._sweep)
                try:
                    async with trio.open_nursery() as jobs:
                        self._jobs = self._pool = jobs
                        task_status.started()
                        try:
                            await self._claim_until_stopped()
                        finally:
                            self._jobs = None  # the writer claims no more either
                            # Idle workers end; busy ones drain.
                            self._called += len(self._idle.unpark_all())
                        jobs.cancel_scope.deadline = trio.current_time() + self.grace
                finally:
                    self._pool = None
                    # Cut off (by the grace, or a cancel from outside) before a worker
                    # took them: released like the jobs that were running.
                    while self._ready:
                        outcomes.send_nowait((_released(self._ready.popleft().job), 0.0))
                upkeep.cancel_scope.cancel()
            outcomes.close()  # every job has handed over its outcome; the writer drains

    async def _claim_until_stopped(self) -> None:
        """Claim as many jobs as there are free slots; when none is free, wait for one
        (not for the poll interval: a busy runner would idle between jobs); when the
        queue had fewer than asked for, poll again: soon while claims find jobs, less
        and less often while they find none. A claim is never cut short: what it
        leased is started."""
        wait = self.min_poll
        while not self._stop.is_set():
            free = self.concurrency - len(self._running) - self._reserved
            if free > 0 and self._over_memory():
                # Looked at again as jobs end, and at the poll interval: memory can
                # also fall with no job of ours ending.
                with trio.move_on_after(self.poll_interval):
                    await self._claimer.park()
                continue
            if free <= 0:
                await self._claimer.park()
                continue
            self._woken = False
            self._reserved += free
            try:
                claimed = await self.store.claim(self.queue, self.owner, free, self.lease)
            except JobStoreError as exc:
                self._claim_failures.failed(exc)
                claimed = []
            else:
                self._claim_failures.succeeded()
            finally:
                self._reserved -= free
            self._start(claimed)
            if len(claimed) < free:
                if not self._woken:  # else a slot or jobs came while claiming: again
                    idle = await self._idle_for(wait) if not claimed else wait
                    if not self._woken:  # nor while asking when the next is due
                        with trio.move_on_after(idle):
                            await self._claimer.park()
                wait = self.min_poll if claimed else min(2 * wait, self.poll_interval)

    async def _idle_for(self, wait: float) -> float:
        """How long an empty claim is followed by a wait for a wake: ``wait`` while the
        queue was busy a moment ago or the store hears only this process; once the
        backoff has reached ``poll_interval`` and the store hears every process, until
        the next job is due, at most ``heard_poll_interval`` (or ``poll_interval``, if
        that was set longer: it was asked for fewer looks)."""
        if wait < self.poll_interval or not self.store.hears_enqueues:
            return wait
        try:
            due = await self.store.next_due(self.queue)
        except JobStoreError:
            return wait  # the claims say so, in their own words
        longest = max(self.heard_poll_interval, self.poll_interval)
        if due is None:
            return longest
        return min(max(due - wall_time(), self.min_poll), longest)

    def _over_memory(self) -> bool:
        return self.memory_limit is not None and self.memory() > self.memory_limit

    def _start(self, claimed: list[Job]) -> None:
        """Hand claimed jobs to the workers (see ``_work`` for how many are called)."""
        for job in claimed:
            scope = trio.CancelScope(deadline=trio.current_time() + job.timeout)
            entry = self._running[job.id] = _Running(job, scope)
            self._ready.append(entry)
        if claimed:
            self._call(self._wanted())
            if self._beats:
                self._beats.unpark_all()

    def _wanted(self) -> int:
        """A worker for each ready job if jobs wait in them (some is waiting now, or
        the last ones did), else one."""
        return len(self._ready) if self._executing or self._jobs_wait else 1

    def _call(self, wanted: int) -> None:
        """See that ``wanted`` workers are on their way to the ready jobs: idle ones
        woken, new ones started up to ``concurrency``. There is always one for every
        job, as slots are only claimed up to ``concurrency`` and a slot is freed once
        its outcome is written, after its worker is free again."""
        wanted -= self._called
        if wanted <= 0:
            return
        woken = len(self._idle.unpark(count=wanted))
        while woken < wanted and self._workers < self.concurrency and self._pool is not None:
            self._pool.start_soon(self._work)
            self._workers += 1
            woken += 1
        self._called += woken

    async def _work(self) -> None:
        """One worker: run started jobs as they come, until the runner stops claiming
        and none is left (or the grace ends, which cancels it with its job).

        Jobs that wait (on I/O, a sleep) need a worker each, called at once. Jobs
        that never wait (a no-op, a computation) do not: one worker runs them one
        after another, sparing a wake-up per job.
        Which kind comes is learnt as they run. Before a job, a worker calls one
        more worker for the jobs left, should this one wait. One that arrives to
        find jobs left while another is inside its job knows that they wait, and
        calls a worker for each; one that ran several jobs while no worker arrived,
        not even the one it called, knows that they do not. Until the first jobs
        ran, they are taken to wait. A batch of waiting jobs after a batch that did
        not wait is under way within three passes of the scheduler."""
        ready = self._ready
        while True:
            self._called -= 1
            self._arrivals += 1
            if ready and self._executing:
                self._jobs_wait = True
            arrivals, ran = self._arrivals, 0
            while ready:
                entry = ready.popleft()
                if ready:
                    self._call(self._wanted())
                self._executing += 1
                try:
                    await self._execute(entry)
                finally:
                    self._executing -= 1
                ran += 1
            if ran > 1 and self._called and self._arrivals == arrivals:
                self._jobs_wait = False
            if self._jobs is None:
                return
            await self._idle.park()

    async def _execute(self, entry: _Running) -> None:
        job = entry.job
        outcome: Job | None = None
        started = time.perf_counter()
        try:
            if self.notify is not None:  # no event built for nobody
                event = {"task": job.task, "state": "running", "attempts": job.attempts}
                await _tell(self.notify, job.id, event)
            outcome = await self._outcome(entry)
        finally:
            if outcome is None:  # cut off (the grace ended): released, to run again at once
                outcome = _released(job)
            # The slot stays taken (and the lease renewed) until the outcome is
            # written: what a crash can make run twice stays within `concurrency`.
            assert self._outcomes is not None
            self._outcomes.send_nowait((outcome, time.perf_counter() - started))

    async def _outcome(self, entry: _Running) -> Job:
        job = entry.job
        try:
            spec = self.registry.get(job.task)
        except UnknownTask:
            return _failed(job, f"unknown task {job.task!r}", None, None)
        try:
            with entry.scope, self.instrument(job) if self.instrument else nullcontext():
                if spec.takes_context:
                    result = await spec.function(
                        job.args, JobContext(job, self.store, self.owner, self.notify)
                    )
                else:
                    result = await spec.function(job.args)
                return _settled(job, JobState.SUCCEEDED, result=result)
        except Exception as exc:
            return _failed(job, repr(exc), traceback.format_exc(), spec.retry)
        if entry.cancel_requested:
            return _settled(job, JobState.CANCELLED)
        return _failed(job, f"timed out after {job.timeout:g} s", None, spec.retry)

    async def _write_outcomes(self, to_write: trio.MemoryReceiveChannel[tuple[Job, float]]) -> None:
        """Record outcomes as they come, in one write per batch, until the jobs are
        over and the channel is drained."""
        async for first in to_write:
            batch = [first]
            while len(batch) < OUTCOME_BATCH:
                try:
                    batch.append(to_write.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    # EndOfChannel: the last outcome was handed to us as the jobs
                    # ended, and the channel closed before we ran. Write what we have.
                    break
            # Shielded so outcomes are written even while the runner is being
            # cancelled, bounded so a store that hangs cannot hold the stop open.
            recorded: list[JobState | None] = []
            claimed: list[Job] = []
            # The slots these outcomes hold, and any the claim loop left, are filled in
            # the same write while the runner is claiming: one commit per batch of
            # jobs instead of two (a finish, then the claim it woke).
            want = 0
            if self._jobs is not None and not self._stop.is_set() and not self._over_memory():
                want = max(0, self.concurrency - len(self._running) - self._reserved + len(batch))
            self._reserved += want
            try:
                with trio.CancelScope(shield=True), trio.move_on_after(FINISH_TIMEOUT):
                    try:
                        recorded, claimed = await self.store.finish_and_claim(
                            [job for job, _ in batch], self.owner, self.queue, want, self.lease
                        )
                    except JobStoreError as exc:
                        log.error("could not record %d job outcomes: %s", len(batch), exc)
            finally:
                self._reserved -= want
            for outcome, _ in batch:
                self._running.pop(outcome.id, None)
            if claimed:
                if self._jobs is not None:
                    self._start(claimed)
                else:  # the runner stopped while they were leased: straight back
                    await self._release(claimed)
            self._wake()
            if not recorded:  # the store failed: logged above
                continue
            for (outcome, runtime), state in zip(batch, recorded, strict=True):
                if state is None:
                    log.warning("lease lost before finishing job %s", outcome.id)
                    continue
                if self.notify is None:
                    continue
                # The store's state, not the runner's: a retry or release becomes
                # ``cancelled`` if a cancel came in as the runner decided on it.
                event = job_event(outcome, state)
                event["runtime"] = round(runtime, 6)
                await _tell(self.notify, outcome.id, event)

    async def _release(self, claimed: list[Job]) -> None:
        """Give back jobs leased as the runner stopped, so another runner takes them at
        once instead of after their lease (their attempt is not counted)."""
        released = [_released(job) for job in claimed]
        with trio.CancelScope(shield=True), trio.move_on_after(FINISH_TIMEOUT):
            try:
                await self.store.finish_many(released, self.owner)
            except JobStoreError as exc:
                log.warning(
                    "could not release %d jobs (they run after their lease): %s", len(released), exc
                )

    async def _heartbeat(self) -> None:
        """Extend the leases of running jobs, and hear cancel requests the store did
        not push (``on_cancel_requested``), every half second at most."""
        interval = min(self.lease / 3, 0.5)
        while True:
            while not self._running:  # an idle worker has no lease to extend
                await self._beats.park()
            await trio.sleep(interval)
            ids = list(self._running)
            if not ids:
                continue
            try:
                cancelled = await self.store.heartbeat(self.owner, ids, self.lease)
            except JobStoreError as exc:
                self._heartbeat_failures.failed(exc)
                continue
            self._heartbeat_failures.succeeded()
            for job_id in cancelled:
                self._cancel_requested(job_id)

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(self.sweep_interval)
            try:
                await self.store.requeue_expired()
            except JobStoreError as exc:
                self._sweep_failures.failed(exc)
            else:
                self._sweep_failures.succeeded()


def _settled(job: Job, state: JobState, **changes: Any) -> Job:
    """The job in ``state`` with its lease given up: every outcome a runner writes."""
    return job.moved(state, lease_owner=None, lease_expires=None, **changes)


def _released(job: Job) -> Job:
    """Back in the queue, lease given up and the attempt not counted: a job the runner
    did not finish because it stopped, which another runner takes at once."""
    return _settled(job, JobState.QUEUED, attempts=job.attempts - 1)


def _failed(job: Job, error: str, trace: str | None, policy: RetryPolicy | None) -> Job:
    """A retry after the policy's backoff while attempts remain, else a dead letter.

    The job's own ``max_attempts`` counts (its task's, unless the enqueue gave one),
    so a change to the task's policy does not change jobs already accepted. No policy
    (the task is unknown) means no retry: nothing could ever run it.
    """
    if policy is not None and job.attempts < job.max_attempts:
        run_at = wall_time() + policy.next_retry_delay(job.attempts)
        return _settled(job, JobState.RETRYING, run_at=run_at, error=error, traceback=trace)
    return _settled(job, JobState.FAILED, error=error, traceback=trace)
