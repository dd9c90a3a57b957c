"""What a job store must do, whatever keeps the data (SQLite now, Redis later).

Error handling: a store raises only the errors below, whatever its backend raises::

    JobStoreError          the backend failed (I/O, corruption, unreachable)
    ├── QueueFull          the queue holds its maximum of waiting jobs; retry later
    └── IdempotencyConflict  the key was used before with a different task or args
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from ._job import Job
from ._state import JobState

__all__ = ["IdempotencyConflict", "JobStore", "JobStoreError", "QueueFull"]


class JobStoreError(Exception):
    """The store's backend failed; nothing in the failed call was accepted."""


class QueueFull(JobStoreError):
    def __init__(self, queue: str, limit: int) -> None:
        super().__init__(f"queue {queue!r} holds its maximum of {limit} waiting jobs")
        self.queue = queue
        self.limit = limit


class IdempotencyConflict(JobStoreError):
    def __init__(self, key: str, existing: Job) -> None:
        super().__init__(f"idempotency key {key!r} was used for a different request")
        self.key = key
        self.existing = existing


class JobStore(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The store as a service: ready to be called once started, until cancelled."""
        ...

    def on_enqueued(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (no arguments, must not block) after jobs this process
        enqueued are committed, so a runner in the same process need not wait for its
        next poll; and after other processes' too, where ``hears_enqueues``. Returns the
        function that removes the listener."""
        ...

    @property
    def hears_enqueues(self) -> bool:
        """Whether ``on_enqueued`` hears every process, not only this one: jobs enqueued,
        released or requeued anywhere (SQLite: over its doorbell, while it listens;
        Redis: over pub/sub). An idle runner then waits for the next job's due time
        (``next_due``) rather than polling. Either announcement is a hint that can be
        lost, so the runner still looks now and then."""
        ...

    def on_cancel_requested(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener`` (with a job id, must not block) when a cancel is asked for a
        running job, so the runner holding it cancels it at once instead of at its next
        heartbeat. A store hears what its own process asks (SQLite) or every process
        (Redis, over pub/sub); heartbeats still report every request. Returns the
        function that removes the listener."""
        ...

    async def enqueue(self, job: Job) -> tuple[Job, bool]:
        """Store ``job`` durably; return (the stored job, whether it is new).

        Returns only after the job is committed. A repeated idempotency key returns
        the original job with ``False``, or raises IdempotencyConflict.
        """
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def list_jobs(
        self,
        state: JobState | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
    ) -> list[Job]:
        """The most recently created jobs, optionally only those in ``state``, newest
        first (by ``created_at``, then ``id``). ``before`` pages through them: the
        ``(created_at, id)`` of the last job of the page before, whose older jobs
        follow."""
        ...

    async def claim(self, queue: str, owner: str, limit: int, lease: float) -> list[Job]:
        """Lease up to ``limit`` due jobs of ``queue`` to ``owner`` for ``lease`` seconds."""
        ...

    async def next_due(self, queue: str) -> float | None:
        """When the earliest waiting job of ``queue`` is due (Unix time; past if one is
        due now), or None if none waits."""
        ...

    async def heartbeat(self, owner: str, job_ids: Sequence[str], lease: float) -> set[str]:
        """Extend the leases ``owner`` still holds; return the ids asked to cancel."""
        ...

    async def report_progress(self, job_id: str, owner: str, progress: object) -> bool:
        """Record a running job's progress (any JSON), if ``owner`` holds its lease."""
        ...

    async def finish(self, job: Job, owner: str) -> JobState | None:
        """Write a claimed job's outcome, if ``owner`` still holds its lease: the state
        recorded, or None if the lease was lost. The state is ``job.state`` except
        where a cancel was asked for while the job ran and the outcome would have it
        wait again (a retry, a release): then it is ``cancelled``, and so is the job."""
        ...

    async def finish_many(self, jobs: Sequence[Job], owner: str) -> list[JobState | None]:
        """:meth:`finish` for several jobs at once (one write where the store can):
        each outcome's recorded state, in order."""
        ...

    async def finish_and_claim(
        self, jobs: Sequence[Job], owner: str, queue: str, limit: int, lease: float
    ) -> tuple[list[JobState | None], list[Job]]:
        """:meth:`finish_many`, then :meth:`claim` up to ``limit`` jobs (none for 0),
        in one write where the store can: a busy runner's slots change hands without a
        second commit. Atomic where the store makes it so; either way, an outcome is
        written before its slot's next job is leased."""
        ...

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a waiting job at once; ask the worker running one to cancel it."""
        ...

    async def retry_dead(self, job_id: str) -> Job | None:
        """Queue a dead letter (``failed``) again with fresh attempts; None if missing.

        A job in any other state is returned unchanged.
        """
        ...

    async def queue_stats(self) -> dict[str, tuple[int, float | None]]:
        """Per queue with waiting jobs: how many wait (queued, scheduled or retrying),
        and the earliest ``run_at`` among those already due (None if none is)."""
        ...

    async def requeue_expired(self) -> int:
        """Make jobs whose lease expired (their worker died) claimable again, or
        cancelled if a cancel was asked for while they ran; how many there were."""
        ...
