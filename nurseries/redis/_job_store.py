"""The job store for several processes and machines: Redis, through coredis.

Same contract as the SQLite store (``canopy.nurseries.jobs.JobStore``), different engine:
jobs wait in Redis Streams read by a consumer group (a claim is XREADGROUP, the
acknowledgement XACK comes only with the outcome), delayed jobs and priorities in
sorted sets, records in hashes that expire ``result_ttl`` after they end,
idempotency keys by SET NX, cancel requests and jobs made claimable announced over
pub/sub (so runners in any process act at once, not at their next poll or
heartbeat). Every change is one Lua
script (``_job_scripts``): atomic, one round trip, and batched like the SQLite
store (concurrent enqueues are group-committed; outcomes come in batches).

Leases: a running job's lease expiry is kept in a sorted set that heartbeats
extend, and the sweeper requeues what expired there. That is the equivalent of
XAUTOCLAIM with per-job leases: a stream entry's idle time is reset only by a
re-claim, and runners may use different lease lengths.

Durability: an enqueue is acknowledged once Redis has applied it; it survives a
Redis restart as far as Redis persists it. Run Redis with ``appendonly yes`` and
``appendfsync always`` for "acknowledged means on disk" (``everysec`` can lose the
last second of acknowledged jobs if the machine, not just Redis, goes down).

Resource handling: :meth:`RedisJobStore.run` is a service that depends on a
running :class:`RedisConnection` (which also holds the pub/sub subscription for
those announcements). It runs the enqueue committer until cancelled.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import coredis.exceptions
import trio

from .._group_commit import GroupCommit
from .._wall_clock import wall_time
from ..jobs import (
    IdempotencyConflict,
    Job,
    JobState,
    JobStoreError,
    QueueFull,
)
from ..jobs._store_events import StoreEvents
from . import _job_scripts as scripts
from ._connection import RedisConnection, RedisUnavailable

__all__ = ["RedisJobStore"]

log = logging.getLogger("canopy.jobs.redis")

_encode = json.JSONEncoder(separators=(",", ":")).encode
_JSON_FIELDS = frozenset({"args", "result", "progress", "headers"})
_INT_FIELDS = frozenset({"priority", "attempts", "max_attempts"})
_FLOAT_FIELDS = frozenset({"timeout", "run_at", "lease_expires", "created_at", "updated_at"})
_FIELDS = (
    "id task args queue priority state attempts max_attempts timeout run_at lease_owner "
    "lease_expires idempotency_key result error traceback progress headers created_at "
    "updated_at"
).split()
_OUTCOME_FIELDS = (
    "state attempts run_at result error traceback lease_owner lease_expires updated_at".split()
)


def _strings(job: Job, fields: Sequence[str]) -> dict[str, str | None]:
    """The fields as the scripts store them: strings, floats by repr, None to delete."""
    out: dict[str, str | None] = {}
    for name in fields:
        value = getattr(job, name)
        if value is None:
            out[name] = None
        elif name in _JSON_FIELDS:
            out[name] = _encode(value)
        elif name == "state":
            out[name] = value.value
        else:
            out[name] = repr(value) if isinstance(value, float) else str(value)
    return out


def _job(fields: str | dict[str, str]) -> Job:
    """A job from its hash: as the scripts encode it (JSON), or as HGETALL gives it."""
    decoded: dict[str, str] = json.loads(fields) if isinstance(fields, str) else fields
    data: dict[str, Any] = {}
    for name, value in decoded.items():
        if name in _JSON_FIELDS:
            data[name] = json.loads(value)
        elif name in _INT_FIELDS:
            data[name] = int(value)
        elif name in _FLOAT_FIELDS:
            data[name] = float(value)
        elif name in _FIELD_SET:
            data[name] = value
    return Job.from_dict(data)


_FIELD_SET = frozenset(_FIELDS)


class RedisJobStore:
    def __init__(
        self,
        connection: RedisConnection,
        *,
        prefix: str = "canopy",
        max_queued: int = 100_000,
        result_ttl: float = 7 * 24 * 3600,
        batch_size: int = 500,
    ) -> None:
        if not prefix or any(c in prefix for c in "{}"):
            raise ValueError("prefix must be non-empty, without braces")
        self.connection = connection
        self.prefix = "{" + prefix + "}"  # the hash tag: one Cluster slot for all keys
        self.max_queued = max_queued
        self.result_ttl = result_ttl
        self.batch_size = batch_size
        self._route = [f"{self.prefix}:jobs"]
        self._scripts: dict[str, Any] = {}
        self._scripts_for = -1  # the connection generation they were made for
        self._enqueues = GroupCommit[Job, tuple[Job, bool]](
            "job", self._write_enqueues, batch_size, error=JobStoreError
        )
        self._events = StoreEvents()
        self.on_enqueued = self._events.on_enqueued
        self.on_cancel_requested = self._events.on_cancel_requested
        self._running = False
        # Cancel requests from any process, heard as they are published; a heartbeat
        # finds them too, later, should one be missed (pub/sub is at-most-once). And
        # jobs made claimable by any process (the scripts announce them on :ready),
        # for which runners would otherwise wait until their next poll.
        connection.listen(
            {
                f"{self.prefix}:cancel": self._events.cancel_requested,
                f"{self.prefix}:ready": lambda _: self._events.enqueued(),
            }
        )

    @property
    def commits(self) -> int:
        """Enqueue scripts run so far: fewer than enqueues when grouped."""
        return self._enqueues.commits

    @property
    def hears_enqueues(self) -> bool:
        return True  # announced on :ready by every script that makes a job claimable

    # -- service -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._enqueues.run)
                task_status.started()
        finally:
            self._running = False

    # -- calls -----------------------------------------------------------------------

    async def _call(self, name: str, *args: Any) -> Any:
        if not self._running:
            raise JobStoreError("the job store is not running")
        try:
            connection = self.connection
            client = connection.client
            if self._scripts_for != connection.generation:
                self._scripts = {
                    script: client.register_script(getattr(scripts, script))
                    for script in scripts.__all__
                }
                self._scripts_for = connection.generation
            return await self._scripts[name](keys=self._route, args=[self.prefix, *args])
        except RedisUnavailable as exc:
            raise JobStoreError(str(exc)) from exc
        except (coredis.exceptions.RedisError, OSError) as exc:
            raise JobStoreError(f"redis: {exc!r}") from exc

    # -- enqueue, group-committed ----------------------------------------------------

    async def enqueue(self, job: Job) -> tuple[Job, bool]:
        return await self._enqueues.submit(job)

    async def _write_enqueues(self, jobs: list[Job]) -> list[tuple[Job, bool] | Exception]:
        encoded = [_encode(_strings(job, _FIELDS)) for job in jobs]
        replies = await self._call("ENQUEUE", repr(wall_time()), self.max_queued, *encoded)
        outcomes: list[tuple[Job, bool] | Exception] = []
        for job, reply in zip(jobs, replies, strict=True):
            if reply[0] == "new":
                outcomes.append((job, True))
            elif reply[0] == "full":
                outcomes.append(QueueFull(job.queue, self.max_queued))
            else:
                existing = _job(reply[1])
                if existing.same_request(job):
                    outcomes.append((existing, False))
                else:
                    assert job.idempotency_key is not None
                    outcomes.append(IdempotencyConflict(job.idempotency_key, existing))
        if any(isinstance(o, tuple) and o[1] for o in outcomes):
            self._events.enqueued()
        return outcomes

    # -- reads and state changes -----------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        if not self._running:
            raise JobStoreError("the job store is not running")
        try:
            flat = await self.connection.client.hgetall(f"{self.prefix}:job:{job_id}")
        except RedisUnavailable as exc:
            raise JobStoreError(str(exc)) from exc
        except (coredis.exceptions.RedisError, OSError) as exc:
            raise JobStoreError(f"redis: {exc!r}") from exc
        return _job(flat) if flat else None

    async def list_jobs(
        self,
        state: JobState | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
    ) -> list[Job]:
        index = "jobs" if state is None else f"state:{state.value}"
        score, after = ("", "") if before is None else (repr(before[0]), before[1])
        return [_job(encoded) for encoded in await self._call("LIST", index, limit, score, after)]

    async def claim(self, queue: str, owner: str, limit: int, lease: float) -> list[Job]:
        now = wall_time()
        claimed = await self._call("CLAIM", repr(now), queue, owner, limit, repr(now + lease))
        return [_job(encoded) for encoded in claimed]

    async def next_due(self, queue: str) -> float | None:
        due = await self._call("NEXT_DUE", queue)
        return float(due) if due else None

    async def heartbeat(self, owner: str, job_ids: Sequence[str], lease: float) -> set[str]:
        if not job_ids:
            return set()
        return set(await self._call("HEARTBEAT", owner, repr(wall_time() + lease), *job_ids))

    async def report_progress(self, job_id: str, owner: str, progress: object) -> bool:
        encoded = _encode(progress)
        return bool(await self._call("PROGRESS", job_id, owner, encoded, repr(wall_time())))

    async def finish(self, job: Job, owner: str) -> JobState | None:
        return (await self.finish_many([job], owner))[0]

    async def finish_many(self, jobs: Sequence[Job], owner: str) -> list[JobState | None]:
        if not jobs:
            return []
        outcomes = [_encode({"id": job.id, **_strings(job, _OUTCOME_FIELDS)}) for job in jobs]
        ttl = max(1, math.ceil(self.result_ttl))
        recorded = await self._call("FINISH", repr(wall_time()), owner, ttl, *outcomes)
        return [JobState(state) if state else None for state in recorded]

    async def finish_and_claim(
        self, jobs: Sequence[Job], owner: str, queue: str, limit: int, lease: float
    ) -> tuple[list[JobState | None], list[Job]]:
        # Two scripts: Redis has no fsync per call to save, only a round trip.
        recorded = await self.finish_many(jobs, owner)
        if limit <= 0:
            return recorded, []
        try:
            return recorded, await self.claim(queue, owner, limit, lease)
        except JobStoreError as exc:  # the outcomes are written; the claim loop retries
            log.warning("claim after finishing failed: %s", exc)
            return recorded, []

    async def cancel(self, job_id: str) -> Job | None:
        ttl = max(1, math.ceil(self.result_ttl))
        encoded = await self._call("CANCEL", repr(wall_time()), job_id, ttl)
        if not encoded:
            return None
        job = _job(encoded)
        if job.state is JobState.RUNNING:
            self._events.cancel_requested(job_id)  # a job of this process: at once, not a hop later
        return job

    async def retry_dead(self, job_id: str) -> Job | None:
        encoded = await self._call("RETRY_DEAD", repr(wall_time()), job_id)
        return _job(encoded) if encoded else None

    async def queue_stats(self) -> dict[str, tuple[int, float | None]]:
        rows = await self._call("QUEUE_STATS", repr(wall_time()))
        return {
            queue: (int(count), float(oldest) if oldest else None) for queue, count, oldest in rows
        }

    async def requeue_expired(self) -> int:
        return int(await self._call("REQUEUE_EXPIRED", repr(wall_time()), self.result_ttl))
