"""The embedded job store: SQLite in WAL mode, called through ``trio.to_thread``.

One connection, used by one thread at a time (``nurseries.SqliteDatabase``). A thread
hop costs about 0.1 ms here and an fsync far more, so the two writes made once per
job go in batches: concurrent enqueues are group-committed (see ``nurseries.GroupCommit``),
each returning only after its job is committed; outcomes come in batches from the
runner (:meth:`SQLiteJobStore.finish_many`).

Durable is what was promised: an enqueue, a cancel and a retry commit at
``synchronous`` (FULL by default) before they are answered. The runner's own writes
about jobs already accepted (claims, leases, progress, outcomes, the sweeper's
requeues) commit at ``runner_synchronous`` (NORMAL by default): in WAL mode that
survives any crash of a process, and an OS crash or power loss can only undo the
last of them, so that a job is claimed again or runs again; no accepted job is lost.
The fsync of each outcome batch, which held the write lock the other processes
wait for, was an eighth of the end-to-end throughput.

Every process that uses the file writes in turn (the write lock), so what a write
does while it holds the lock is what the processes' writes add up to: rows are
encoded before the transaction and claimed rows decoded after it, and a queue's
bound is checked against a count kept in ``queue_depth`` rather than counted (a
``COUNT(*)`` of 20,000 waiting jobs took 1.2 ms, in every enqueue batch).

Retention: with ``result_ttl``, a finished job (succeeded, failed or cancelled) and
with it its idempotency key is deleted once it has been finished that long, as Redis
expires it; without, every job is kept. A :class:`~canopy.nurseries.Pruner` deletes
them ``PRUNE_BATCH`` at a time, each batch its own short transaction, so enqueues
from every process get the write lock between two batches. The file is not vacuumed:
SQLite reuses the pages a prune frees for the rows that come next, so under a steady
load the file stops growing once the oldest jobs are pruned as fast as new ones
arrive, and a VACUUM (which rewrites the whole file under the write lock) would give
back space only for the load to take again.

Resource handling: :meth:`SQLiteJobStore.run` is a service. It runs the database
(which opens the connection, creates or migrates the schema, and closes it on the
way out), the enqueue committer, the doorbell's listener and, with a
``result_ttl``, the pruner; reports started, and runs until cancelled.
"""

from __future__ import annotations

import json
import operator
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import trio

from .._doorbell import Doorbell
from .._group_commit import GroupCommit
from .._json import json_loads
from .._retention import PRUNE_BATCH, Pruner
from .._sqlite import SqliteDatabase, synchronous_level
from .._wall_clock import wall_time
from ._job import _FIELDS, _STATES, Job, _with_fields
from ._state import CLAIMABLE, JobState
from ._store import IdempotencyConflict, JobStoreError, QueueFull
from ._store_events import StoreEvents

__all__ = ["SQLiteJobStore"]


_FINISHED = ("succeeded", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    timeout REAL NOT NULL,
    run_at REAL NOT NULL,
    lease_owner TEXT,
    lease_expires REAL,
    idempotency_key TEXT UNIQUE,
    result TEXT,
    error TEXT,
    traceback TEXT,
    progress TEXT,
    headers TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (queue, state, priority, run_at);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at);
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (lease_expires) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS queue_depth (
    queue TEXT PRIMARY KEY,
    waiting INTEGER NOT NULL  -- jobs queued, scheduled or retrying: what the bound counts
) WITHOUT ROWID;
"""
_COLUMNS = (
    "id task args queue priority state attempts max_attempts timeout run_at lease_owner "
    "lease_expires idempotency_key result error traceback progress headers created_at "
    "updated_at"
).split()
_JSON_COLUMNS = frozenset({"args", "result", "progress", "headers"})
assert frozenset(_COLUMNS) == _FIELDS  # _job builds a record from a row alone
_SELECTED = ", ".join(_COLUMNS)  # what every read selects, in _COLUMNS' order (see _job)
_WAITING = tuple(sorted(state.value for state in CLAIMABLE))
_MARKS = ", ".join("?" for _ in _WAITING)
# The doorbell's messages (canopy.nurseries._doorbell): jobs became claimable; a cancel asked
# for the job whose id follows.
_ENQUEUED = b"enqueued"
_CANCEL = b"cancel:"
# Each write that moves jobs into or out of the waiting states adds what it moved, in
# the same transaction; each open recounts (see _migrate).
_ADD_WAITING = """INSERT INTO queue_depth (queue, waiting) VALUES (?, ?)
    ON CONFLICT (queue) DO UPDATE SET waiting = waiting + excluded.waiting"""


_encode = json.JSONEncoder(separators=(",", ":")).encode


class _Rows:
    """Makes a record's row of parameters for ``columns``: the values from the
    record's ``__dict__`` by one ``itemgetter`` (twenty ``getattr`` calls were most of
    it), then the JSON columns encoded and the state as its value. This runs for
    every job of every batch, in the database's thread."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self._values = operator.itemgetter(*self.columns)
        self._json = tuple(n for n, column in enumerate(self.columns) if column in _JSON_COLUMNS)
        self._state = self.columns.index("state") if "state" in self.columns else None

    def __call__(self, job: Job) -> list[Any]:
        values = list(self._values(vars(job)))
        for n in self._json:
            if values[n] is not None:
                values[n] = _encode(values[n])
        if self._state is not None:
            values[self._state] = values[self._state].value
        return values


_row = _Rows(_COLUMNS)
# What a job gets as it runs: unset in every job enqueued through a JobsService. Its
# row leaves them out and SQLite stores NULL, as sqlite3 binds a None only after an
# adapter lookup (see canopy.nurseries._sqlite): six fewer per job.
_RUN_COLUMNS = ("lease_owner", "lease_expires", "result", "error", "traceback", "progress")
_run_values = operator.itemgetter(*_RUN_COLUMNS)
_NOT_RUN = (None,) * len(_RUN_COLUMNS)
_new_row = _Rows([column for column in _COLUMNS if column not in _RUN_COLUMNS])


def _insert_row(job: Job) -> list[Any]:
    """The job's row for ``_INSERT_NEW`` when it has not run, else for ``_INSERT``."""
    return _new_row(job) if _run_values(vars(job)) == _NOT_RUN else _row(job)


def _migrate(conn: sqlite3.Connection) -> None:
    columns = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "headers" not in columns:  # a database made before jobs carried headers
        conn.execute("ALTER TABLE jobs ADD COLUMN headers TEXT")
    # jobs_by_state and jobs_running (the schema's) took its place.
    conn.execute("DROP INDEX IF EXISTS jobs_leases")
    # Recounted at every open, in a write transaction of its own so that it is exact:
    # a database from before queue_depth gets its counts, and one that a process of
    # an older Canopy wrote to (without keeping them) gets them right again.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM queue_depth")
        conn.execute(
            f"""INSERT INTO queue_depth (queue, waiting) SELECT queue, COUNT(*) FROM jobs
                WHERE state IN ({_MARKS}) GROUP BY queue""",
            _WAITING,
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _add_waiting(conn: sqlite3.Connection, queues: Iterable[str], sign: int = 1) -> None:
    """Count jobs (one per item of ``queues``, a job's queue) in or out of waiting."""
    conn.executemany(_ADD_WAITING, [(q, sign * n) for q, n in Counter(queues).items()])


def _job(row: sqlite3.Row) -> Job:
    """A row of ``SELECT {_SELECTED}`` as a Job: by position, as looking up twenty
    columns by name costs more than the rest of the conversion; and straight to
    the record, as the row holds every field (``Job.from_dict`` checks for that)."""
    data = dict(zip(_COLUMNS, row, strict=True))
    data["state"] = _STATES[data["state"]]
    for column in _JSON_COLUMNS:
        value = data[column]
        if value is not None:
            data[column] = json_loads(value)
    return _with_fields(data)


# What an outcome changes; the rest of a job is fixed at enqueue, and its progress is
# written only by report_progress (the runner's copy of the job does not see it).
_OUTCOME_COLUMNS = (
    "state attempts run_at result error traceback lease_owner lease_expires updated_at".split()
)
# An outcome's columns, bound by number (?1 is the state), then the job's id and the
# lease holder: one row of parameters serves both finishes.
_SET_OUTCOME = ", ".join(f"{c} = ?{n}" for n, c in enumerate(_OUTCOME_COLUMNS, 1) if c != "state")
_WHERE_LEASED = f"""WHERE id = ?{len(_OUTCOME_COLUMNS) + 1} AND state = 'running'
    AND lease_owner = ?{len(_OUTCOME_COLUMNS) + 2}"""
_FINISH = f"UPDATE jobs SET {_SET_OUTCOME}, state = ?1, cancel_requested = 0 {_WHERE_LEASED}"
# An outcome that would have the job wait again (a retry, a release by a runner that
# stopped) ends it cancelled instead if a cancel was asked for while it ran: the
# cancel was answered, and a cancelled job never runs again. Only those outcomes pay
# for the CASE and the RETURNING, which would slow every finish.
_FINISH_WAITING = f"""UPDATE jobs SET {_SET_OUTCOME},
    state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE ?1 END,
    cancel_requested = 0 {_WHERE_LEASED} RETURNING state"""


def _insert(columns: Sequence[str]) -> str:
    return f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


_INSERT = _insert(_COLUMNS)
_INSERT_NEW = _insert(_new_row.columns)
_outcome_row = _Rows(_OUTCOME_COLUMNS)


def _outcome_rows(jobs: list[Job], owner: str) -> list[tuple[Any, ...]]:
    """``_FINISH``'s parameters for each outcome, made before the transaction."""
    return [(*_outcome_row(job), job.id, owner) for job in jobs]


def _finish_in(
    conn: sqlite3.Connection, jobs: list[Job], rows: list[tuple[Any, ...]]
) -> list[JobState | None]:
    recorded: list[JobState | None] = []
    waiting: list[str] = []  # queues of the retries, and of jobs released to run again
    for job, row in zip(jobs, rows, strict=True):
        if job.state not in CLAIMABLE:
            recorded.append(job.state if conn.execute(_FINISH, row).rowcount == 1 else None)
            continue
        state = conn.execute(_FINISH_WAITING, row).fetchall()
        if not state:
            recorded.append(None)
        elif state[0][0] == JobState.CANCELLED.value:
            recorded.append(JobState.CANCELLED)
        else:
            recorded.append(job.state)
            waiting.append(job.queue)
    if waiting:
        _add_waiting(conn, waiting)
    return recorded


_DUE = f"SELECT 1 FROM jobs WHERE queue = ? AND state IN ({_MARKS}) AND run_at <= ? LIMIT 1"
_NEXT_DUE = f"SELECT MIN(run_at) FROM jobs WHERE queue = ? AND state IN ({_MARKS})"


def _claim_in(
    conn: sqlite3.Connection, now: float, queue: str, owner: str, limit: int, lease: float
) -> list[sqlite3.Row]:
    """The claimed rows, decoded by ``_claimed`` once the transaction is over."""
    rows = conn.execute(
        f"""UPDATE jobs SET state = 'running', attempts = attempts + 1,
               lease_owner = ?, lease_expires = ?, updated_at = ?
           WHERE id IN (
               SELECT id FROM jobs WHERE queue = ? AND state IN ({_MARKS}) AND run_at <= ?
               ORDER BY priority, run_at LIMIT ?)
           RETURNING {_SELECTED}""",
        (owner, now + lease, now, queue, *_WAITING, now, limit),
    ).fetchall()
    if rows:
        conn.execute(_ADD_WAITING, (queue, -len(rows)))
    return rows


def _claimed(rows: list[sqlite3.Row]) -> list[Job]:
    return sorted((_job(row) for row in rows), key=lambda j: (j.priority, j.run_at))


class _Batch:
    """Decides, job by job, what one enqueue transaction accepts.

    Idempotency keys are checked against the table and against earlier jobs of the
    same batch (two enqueues with one key can meet in a batch); queue bounds are
    counted once per queue per batch.
    """

    def __init__(self, conn: sqlite3.Connection, max_queued: int) -> None:
        self.conn = conn
        self.max_queued = max_queued
        self.rows: list[list[Any]] = []
        # The queue of each accepted job that waits: what the batch adds to queue_depth.
        self.waiting_queues: list[str] = []
        self._keys: dict[str, Job] = {}
        self._waiting: dict[str, int] = {}  # per queue: queue_depth's count + this batch's

    def admit(self, job: Job, row: list[Any]) -> tuple[Job, bool] | JobStoreError:
        key = job.idempotency_key
        if key is not None:
            existing = self._keys.get(key) or self._stored(key)
            if existing is not None:
                if not existing.same_request(job):
                    return IdempotencyConflict(key, existing)
                return existing, False
        if self._count(job.queue) >= self.max_queued:
            return QueueFull(job.queue, self.max_queued)
        self._waiting[job.queue] += 1
        if key is not None:
            self._keys[key] = job
        self.rows.append(row)
        if job.state in CLAIMABLE:
            self.waiting_queues.append(job.queue)
        return job, True

    def _stored(self, key: str) -> Job | None:
        row = self.conn.execute(
            f"SELECT {_SELECTED} FROM jobs WHERE idempotency_key = ?", (key,)
        ).fetchone()
        return _job(row) if row is not None else None

    def _count(self, queue: str) -> int:
        if queue not in self._waiting:
            row = self.conn.execute(
                "SELECT waiting FROM queue_depth WHERE queue = ?", (queue,)
            ).fetchone()
            self._waiting[queue] = row[0] if row is not None else 0
        return self._waiting[queue]


class SQLiteJobStore:
    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        runner_synchronous: str = "NORMAL",
        max_queued: int = 100_000,
        batch_size: int = 500,
        result_ttl: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.pruner = (
            None
            if result_ttl is None
            else Pruner("finished jobs", result_ttl, self._delete_finished, JobStoreError)
        )
        self.db = SqliteDatabase(
            path, _SCHEMA, error=JobStoreError, synchronous=synchronous, migrate=_migrate
        )
        self.runner_synchronous = synchronous_level(runner_synchronous)
        self.max_queued = max_queued
        self.batch_size = batch_size
        self._db = self.db.read
        self._connection = self.db.connection
        self._idle_queues: set[str] = set()  # whose last claim found nothing (see _claim)
        self._enqueues = GroupCommit[Job, tuple[Job, bool]](
            "job", self._write_enqueues, batch_size, error=JobStoreError
        )
        self._events = StoreEvents()
        # The other processes on this file (a web tier, workers) hear of this one's
        # enqueues and cancels at once, and it of theirs (see canopy.nurseries._doorbell).
        self.doorbell = Doorbell(path)
        self.on_enqueued = self._events.on_enqueued
        self.on_cancel_requested = self._events.on_cancel_requested

    @property
    def commits(self) -> int:
        """Enqueue transactions so far: fewer than enqueues when grouped."""
        return self._enqueues.commits

    @property
    def hears_enqueues(self) -> bool:
        return self.doorbell.listening

    # -- service -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The database (its connection, closed last), the enqueue committer, and the
        # doorbell's listener.
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.db.run)
                await nursery.start(self._enqueues.run)
                await nursery.start(self.doorbell.listen, self._heard)
                if self.pruner is not None:
                    await nursery.start(self.pruner.run)
                task_status.started()
        finally:
            self.doorbell.close()

    @property
    def pruned(self) -> int:
        """Finished jobs this process deleted so far."""
        return self.pruner.pruned if self.pruner is not None else 0

    async def prune_finished(self) -> int:
        """Delete the jobs finished more than ``result_ttl`` ago now, a batch per
        transaction (the pruner does it on its own); how many went."""
        return await self.pruner.prune() if self.pruner is not None else 0

    async def _delete_finished(self, cutoff: float) -> int:
        return await self._db(self._prune_batch, cutoff)

    def _prune_batch(self, cutoff: float) -> int:
        deleted = 0
        with self.db.transaction(self.runner_synchronous) as conn:
            for state in _FINISHED:
                # A job's created_at is before its updated_at: the index's range on
                # created_at holds every candidate, and updated_at says which ended.
                deleted += conn.execute(
                    """DELETE FROM jobs WHERE id IN (
                           SELECT id FROM jobs INDEXED BY jobs_by_state
                           WHERE state = ? AND created_at < ? AND updated_at < ? LIMIT ?)""",
                    (state, cutoff, cutoff, PRUNE_BATCH - deleted),
                ).rowcount
                if deleted >= PRUNE_BATCH:
                    break
        return deleted

    def _heard(self, message: bytes) -> None:
        """Another process's ring: what it did, as if done here."""
        if message == _ENQUEUED:
            self._events.enqueued()
        elif message.startswith(_CANCEL):
            self._events.cancel_requested(message[len(_CANCEL) :].decode("ascii", "replace"))

    def _claimable(self) -> None:
        """Jobs became claimable: tell this process's runners and ring the others'."""
        self._events.enqueued()
        self.doorbell.ring(_ENQUEUED)

    # -- enqueue, group-committed ----------------------------------------------------

    async def enqueue(self, job: Job) -> tuple[Job, bool]:
        return await self._enqueues.submit(job)

    async def _write_enqueues(self, jobs: list[Job]) -> list[tuple[Job, bool] | Exception]:
        outcomes = await self.db.hop(self._insert_batch, jobs)
        if any(isinstance(o, tuple) and o[1] for o in outcomes):
            self._claimable()
        return outcomes

    def _insert_batch(self, jobs: list[Job]) -> list[tuple[Job, bool] | Exception]:
        rows = [_insert_row(job) for job in jobs]
        with self.db.transaction() as conn:
            accepted = _Batch(conn, self.max_queued)
            outcomes: list[tuple[Job, bool] | Exception] = [
                accepted.admit(job, row) for job, row in zip(jobs, rows, strict=True)
            ]
            # One C loop for the whole batch; jobs that have run (given back by an
            # embedder, say) in a second one.
            new = [row for row in accepted.rows if len(row) == len(_new_row.columns)]
            conn.executemany(_INSERT_NEW, new)
            if len(new) < len(accepted.rows):
                ran = [row for row in accepted.rows if len(row) == len(_COLUMNS)]
                conn.executemany(_INSERT, ran)
            _add_waiting(conn, accepted.waiting_queues)
        return outcomes

    # -- reads and state changes -----------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        return await self._db(self._get, job_id)

    def _get(self, job_id: str) -> Job | None:
        row = (
            self._connection()
            .execute(f"SELECT {_SELECTED} FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        return _job(row) if row is not None else None

    async def list_jobs(
        self,
        state: JobState | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
    ) -> list[Job]:
        return await self._db(self._list, state, limit, before)

    def _list(
        self, state: JobState | None, limit: int, before: tuple[float, str] | None
    ) -> list[Job]:
        if state is None:
            return self._list_every_state(limit, before)
        where = "state = ?"
        params: list[Any] = [state.value]
        if before is not None:
            where += " AND (created_at, id) < (?, ?)"
            params.extend(before)
        rows = self._connection().execute(
            f"SELECT {_SELECTED} FROM jobs WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [_job(row) for row in rows]

    def _list_every_state(self, limit: int, before: tuple[float, str] | None) -> list[Job]:
        """The newest of every state: one page from each state's run of the
        (state, created_at) index, merged. There is no index on created_at alone,
        which every enqueue would pay for, and without one this list would sort the
        whole table while holding the database's thread."""
        after = "" if before is None else " AND (created_at, id) < (?, ?)"
        page = (
            f"SELECT * FROM (SELECT {_SELECTED} FROM jobs WHERE state = ?{after}"
            " ORDER BY created_at DESC, id DESC LIMIT ?)"
        )
        params: list[Any] = []
        for each in JobState:
            params.extend((each.value, *(before or ()), limit))
        rows = self._connection().execute(
            " UNION ALL ".join(page for _ in JobState)
            + " ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [_job(row) for row in rows]

    async def claim(self, queue: str, owner: str, limit: int, lease: float) -> list[Job]:
        return await self._db(self._claim, wall_time(), queue, owner, limit, lease)

    async def next_due(self, queue: str) -> float | None:
        return await self._db(self._next_due, queue)

    def _next_due(self, queue: str) -> float | None:
        due: float | None = self._connection().execute(_NEXT_DUE, (queue, *_WAITING)).fetchone()[0]
        return due

    def _claim(self, now: float, queue: str, owner: str, limit: int, lease: float) -> list[Job]:
        # While the last claim found nothing, a look before the write lock: an idle
        # runner polls, and a poll that finds nothing must not queue behind the other
        # processes' writes, nor hold them up, for a write transaction that changes
        # nothing. A job that comes due just after is the next poll's, as it would be
        # had the claim run. (A busy queue's claims skip the look.)
        idle = self._idle_queues
        if (
            queue in idle
            and self._connection().execute(_DUE, (queue, *_WAITING, now)).fetchone() is None
        ):
            return []
        with self.db.transaction(self.runner_synchronous) as conn:
            rows = _claim_in(conn, now, queue, owner, limit, lease)
        if rows:
            idle.discard(queue)
        else:
            idle.add(queue)
        return _claimed(rows)

    async def heartbeat(self, owner: str, job_ids: Sequence[str], lease: float) -> set[str]:
        return await self._db(self._heartbeat, wall_time() + lease, owner, list(job_ids))

    def _heartbeat(self, expires: float, owner: str, job_ids: list[str]) -> set[str]:
        if not job_ids:
            return set()
        marks = ", ".join("?" for _ in job_ids)
        with self.db.transaction(self.runner_synchronous) as conn:
            conn.execute(
                f"""UPDATE jobs SET lease_expires = ? WHERE id IN ({marks})
                    AND state = 'running' AND lease_owner = ?""",
                (expires, *job_ids, owner),
            )
        rows = self._connection().execute(
            f"SELECT id FROM jobs WHERE id IN ({marks}) AND cancel_requested = 1", job_ids
        )
        return {row["id"] for row in rows}

    async def report_progress(self, job_id: str, owner: str, progress: object) -> bool:
        encoded = _encode(progress)  # refuse what is not JSON before the thread hop
        return await self._db(self._report_progress, wall_time(), job_id, owner, encoded)

    def _report_progress(self, now: float, job_id: str, owner: str, encoded: str) -> bool:
        with self.db.transaction(self.runner_synchronous) as conn:
            cursor = conn.execute(
                """UPDATE jobs SET progress = ?, updated_at = ?
                   WHERE id = ? AND state = 'running' AND lease_owner = ?""",
                (encoded, now, job_id, owner),
            )
        return cursor.rowcount == 1

    async def finish(self, job: Job, owner: str) -> JobState | None:
        return (await self.finish_many([job], owner))[0]

    async def finish_many(self, jobs: Sequence[Job], owner: str) -> list[JobState | None]:
        recorded = await self._db(self._finish_many, list(jobs), owner)
        self._announce_released(recorded)
        return recorded

    def _announce_released(self, recorded: list[JobState | None]) -> None:
        """Jobs a stopping runner gave back run again at once, in any process."""
        if JobState.QUEUED in recorded:
            self._claimable()

    def _finish_many(self, jobs: list[Job], owner: str) -> list[JobState | None]:
        rows = _outcome_rows(jobs, owner)
        with self.db.transaction(self.runner_synchronous) as conn:
            return _finish_in(conn, jobs, rows)

    async def finish_and_claim(
        self, jobs: Sequence[Job], owner: str, queue: str, limit: int, lease: float
    ) -> tuple[list[JobState | None], list[Job]]:
        recorded, claimed = await self._db(
            self._finish_and_claim, wall_time(), list(jobs), owner, queue, limit, lease
        )
        self._announce_released(recorded)
        return recorded, claimed

    def _finish_and_claim(
        self, now: float, jobs: list[Job], owner: str, queue: str, limit: int, lease: float
    ) -> tuple[list[JobState | None], list[Job]]:
        rows = _outcome_rows(jobs, owner)
        with self.db.transaction(self.runner_synchronous) as conn:
            recorded = _finish_in(conn, jobs, rows)
            claimed = _claim_in(conn, now, queue, owner, limit, lease) if limit > 0 else []
        return recorded, _claimed(claimed)

    async def cancel(self, job_id: str) -> Job | None:
        job = await self._db(self._cancel, wall_time(), job_id)
        if job is not None and job.state is JobState.RUNNING:
            self._events.cancel_requested(job_id)  # a runner of this process: now
            self.doorbell.ring(_CANCEL + job_id.encode())  # another's: now, not at its heartbeat
        return job

    def _cancel(self, now: float, job_id: str) -> Job | None:
        with self.db.transaction() as conn:
            cancelled = conn.execute(
                f"""UPDATE jobs SET state = 'cancelled', updated_at = ?
                    WHERE id = ? AND state IN ({_MARKS}) RETURNING queue""",
                (now, job_id, *_WAITING),
            ).fetchall()
            _add_waiting(conn, [row[0] for row in cancelled], -1)
            conn.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'running'",
                (job_id,),
            )
        return self._get(job_id)

    async def retry_dead(self, job_id: str) -> Job | None:
        job = await self._db(self._retry_dead, wall_time(), job_id)
        if job is not None and job.state is JobState.QUEUED:
            self._claimable()
        return job

    def _retry_dead(self, now: float, job_id: str) -> Job | None:
        with self.db.transaction() as conn:
            requeued = conn.execute(
                """UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?, updated_at = ?,
                       error = NULL, traceback = NULL
                   WHERE id = ? AND state = 'failed' RETURNING queue""",
                (now, now, job_id),
            ).fetchall()
            _add_waiting(conn, [row[0] for row in requeued])
        return self._get(job_id)

    async def queue_stats(self) -> dict[str, tuple[int, float | None]]:
        return await self._db(self._queue_stats, wall_time())

    def _queue_stats(self, now: float) -> dict[str, tuple[int, float | None]]:
        rows = self._connection().execute(
            f"""SELECT queue, COUNT(*), MIN(CASE WHEN run_at <= ? THEN run_at END)
                FROM jobs WHERE state IN ({_MARKS}) GROUP BY queue""",
            (now, *_WAITING),
        )
        return {queue: (count, oldest) for queue, count, oldest in rows}

    async def requeue_expired(self) -> int:
        cancelled, requeued = await self._db(self._requeue_expired, wall_time())
        if requeued:  # only jobs that run again are news to the runners
            self._claimable()
        return cancelled + requeued

    def _requeue_expired(self, now: float) -> tuple[int, int]:
        with self.db.transaction(self.runner_synchronous) as conn:
            # Its worker died after a cancel was answered: cancelled, not run again.
            # Both statements seek the expired leases in jobs_running, which holds
            # running jobs only (the planner, without statistics, picks jobs_by_state
            # and reads every running job, from every worker, each sweep).
            cancelled = conn.execute(
                """UPDATE jobs INDEXED BY jobs_running SET state = 'cancelled',
                       lease_owner = NULL, lease_expires = NULL, cancel_requested = 0,
                       updated_at = ?
                   WHERE state = 'running' AND lease_expires < ? AND cancel_requested = 1""",
                (now, now),
            ).rowcount
            requeued = conn.execute(
                """UPDATE jobs INDEXED BY jobs_running SET state = 'queued', lease_owner = NULL,
                       lease_expires = NULL, updated_at = ?
                   WHERE state = 'running' AND lease_expires < ? RETURNING queue""",
                (now, now),
            ).fetchall()
            _add_waiting(conn, [row[0] for row in requeued])
        return cancelled, len(requeued)
