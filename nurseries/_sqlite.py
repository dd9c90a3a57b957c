"""One SQLite database for a Trio service: a single connection behind ``trio.to_thread``.

SQLite allows one writer at a time, and a thread hop costs about 0.1 ms, so a store
keeps one connection and one thread slot (a ``CapacityLimiter(1)``) for it. Writes
asked for together share a transaction, and so an fsync (:class:`GroupCommit`); each
runs in a savepoint of its own, so one write's exception (an invariant it found
broken) undoes only that write and reaches only its caller. Reads are grouped the
same way: calls asked for while the thread is busy go there together in its next
hop, one after another. Each hop hands the GIL to the thread and back, and on a busy
core that handover, not the query, was most of a small read's cost. A batch that is
already gathered (the writes', or a store's own group commit) takes a hop of its
own (:meth:`SqliteDatabase.hop`).

Error handling: ``sqlite3.Error`` is translated into the store's own ``error`` at
this one boundary; nothing in a failed call was written.

Processes sharing the file (a web process and its workers) take a :class:`WriteLock`
before each write transaction, so a writer kept waiting is woken when the lock is
free instead of when SQLite's busy handler next wakes up to retry.

Resource handling: :meth:`SqliteDatabase.run` opens the connection, runs the
committer in its nursery, and closes the connection and the write lock (shielded)
when it ends.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from ._group_commit import GroupCommit
from ._wall_clock import runs_inline
from ._write_lock import WriteLock

__all__ = ["SqliteDatabase"]

T = TypeVar("T")
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def _null(value: None) -> None:
    return None


def _adapt_none() -> None:
    """Python's sqlite3 binds int, float and str at once, but looks up an adapter for
    any other parameter, None included: in the registry, then as ``__adapt__`` on its
    protocol and ``__conform__`` on the value, and the first failed lookup formats an
    AttributeError message that is thrown away; a job's row has eight NULLs. An
    adapter for None is found at the first step and binds NULL as before.

    The registry is the process's, so this is done when a database is first opened
    (importing Canopy changes nothing), and only if no one else registered one."""
    if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _null)


def synchronous_level(level: str) -> str:
    """``level`` as SQLite spells it, or ``ValueError`` if it is not one."""
    if level.upper() not in SYNCHRONOUS:
        raise ValueError(f"synchronous: one of {', '.join(SYNCHRONOUS)}")
    return level.upper()


class SqliteDatabase:
    """``read`` and ``write`` run a function in the database's thread with the
    connection open; ``write``'s inside a savepoint of the group's transaction."""

    def __init__(
        self,
        path: str | Path,
        schema: str,
        *,
        error: type[Exception],
        batch_size: int = 200,
        synchronous: str = "FULL",
        migrate: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        """``migrate`` runs after the schema on every open: for a database made by an
        older release (a column added since, say)."""
        self.path = Path(path)
        self.schema = schema
        self.error = error
        self.synchronous = synchronous_level(synchronous)
        self.migrate = migrate
        self._limiter = trio.CapacityLimiter(1)
        self.write_lock = WriteLock(self.path.with_name(self.path.name + ".write-lock"))
        self._conn: sqlite3.Connection | None = None
        self._calls = GroupCommit[Callable[[], Any], Any](
            "call", self._hop_calls, batch_size, error=error
        )
        self._writes = GroupCommit[Callable[[], Any], Any](
            "write", self._commit, batch_size, error=error
        )
        self._own_hops = 0

    @property
    def commits(self) -> int:
        """Write transactions so far: fewer than writes when grouped."""
        return self._writes.commits

    @property
    def hops(self) -> int:
        """Trips to the database's thread so far: fewer than calls when grouped."""
        return self._calls.commits + self._own_hops

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self._conn = await self._in_thread(self._open)
        except sqlite3.Error as exc:
            raise self._translated(exc) from exc
        try:
            async with trio.open_nursery() as committers:
                await committers.start(self._calls.run)
                await committers.start(self._writes.run)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                conn, self._conn = self._conn, None
                await self._in_thread(self._close, conn)

    async def read(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in the database's thread (not in a transaction), in
        the next hop there with whatever else was asked for meanwhile."""
        return await self._calls.submit(partial(function, *args))

    async def hop(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in the database's thread, in a hop of its own: for a
        caller that has gathered a batch itself (a group commit's writer).

        Through ``read``, the batch would wait for ``read``'s committer task too, on
        the way there and back. On a busy event loop every task that has to be
        scheduled costs a round of all the runnable ones: an enqueue at 64
        connections waited 19 ms for a commit whose thread work took 2 ms."""
        self._own_hops += 1
        try:
            return await self._in_thread(function, *args)
        except sqlite3.Error as exc:
            raise self._translated(exc) from exc

    async def write(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a savepoint, answered once its transaction commits."""
        return await self._writes.submit(partial(function, *args))

    def connection(self) -> sqlite3.Connection:
        """For the functions given to ``read`` and ``write``: the open connection."""
        if self._conn is None:
            raise self.error(f"the database {self.path.name} is not open")
        return self._conn

    def _open(self) -> sqlite3.Connection:
        _adapt_none()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=5000")  # other processes may share the file
        # A statement inside a transaction that already wrote (a runner's claim after
        # its batch of finishes) keeps a statement journal, should it fail halfway:
        # past 64 KiB SQLite spills it to a temp file in /var/tmp, made, written and
        # unlinked each time, many times a second in a busy worker. It is short-lived.
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.executescript(self.schema)
        if self.migrate is not None:
            self.migrate(conn)
        return conn

    def _close(self, conn: sqlite3.Connection) -> None:
        conn.close()
        self.write_lock.close()

    @contextmanager
    def transaction(self, synchronous: str | None = None) -> Iterator[sqlite3.Connection]:
        """For a function given to ``read``: one write transaction of its own, taking
        the write lock at once, rolled back on any exception. (``write`` makes one per
        group; this is for a store that batches its writes itself.) Every write goes
        through here, so that it queues behind the other processes' on the
        :class:`WriteLock`.

        ``synchronous`` commits this transaction at another level than the
        database's: a store's bookkeeping that nobody was promised durability for (a
        job runner's claims and outcomes) need not wait for an fsync. In WAL mode
        NORMAL loses nothing when a process is killed; an OS crash or power loss can
        lose the transactions since the last fsync, never a part of one, and the next
        commit at FULL makes them durable with it, since the log is synced in order."""
        conn = self.connection()
        level = None if synchronous in (None, self.synchronous) else synchronous_level(synchronous)
        if level is not None:
            conn.execute(f"PRAGMA synchronous={level}")
        self.write_lock.acquire()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # A full disk (or an I/O error) may have rolled the transaction back
                # already; a second ROLLBACK would raise and hide why.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            self.write_lock.release()
            if level is not None:
                conn.execute(f"PRAGMA synchronous={self.synchronous}")

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        if runs_inline():
            # A run on a MockClock (see _wall_clock): the same call, on this thread,
            # with the checkpoints a hop has (cancellable before, not after).
            await trio.lowlevel.checkpoint_if_cancelled()
            result = function(*args)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return result
        return await trio.to_thread.run_sync(function, *args, limiter=self._limiter)

    async def _hop_calls(self, functions: list[Callable[[], Any]]) -> list[Any]:
        return await self._in_thread(self._run_calls, functions)

    def _run_calls(self, functions: list[Callable[[], Any]]) -> list[Any]:
        """Each call's result, or its exception (``sqlite3.Error`` as the store's)."""
        outcomes: list[Any] = []
        for function in functions:
            try:
                outcomes.append(function())
            except Exception as exc:
                outcomes.append(self._translated(exc))
        return outcomes

    async def _commit(self, functions: list[Callable[[], Any]]) -> list[Any]:
        return await self.hop(self._run_batch, functions)

    def _run_batch(self, functions: list[Callable[[], Any]]) -> list[Any]:
        outcomes: list[Any] = []
        with self.transaction() as conn:
            for function in functions:
                conn.execute("SAVEPOINT write")
                try:
                    outcomes.append(function())
                except Exception as exc:
                    if not conn.in_transaction:
                        # SQLite rolled back the whole transaction (a full disk, say):
                        # the writes before this one are gone too, so the batch fails
                        # as one and nothing in it is acknowledged.
                        raise
                    conn.execute("ROLLBACK TO write")
                    outcomes.append(self._translated(exc))
                conn.execute("RELEASE write")
        return outcomes

    def _translated(self, exc: Exception) -> Exception:
        """``sqlite3.Error`` as the store's own error, caused by it; anything else as is."""
        if not isinstance(exc, sqlite3.Error):
            return exc
        translated = self.error(f"sqlite: {exc}")
        translated.__cause__ = exc
        return translated
