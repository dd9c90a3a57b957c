"""SqliteDatabase: one connection in one thread, with the calls into it grouped."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import trio

from canopy.nurseries import SqliteDatabase


async def test_concurrent_reads_share_a_thread_hop(tmp_path: Path) -> None:
    """Calls into the database's thread asked for while it is busy go there together:
    fifty reads in a handful of hops, each answered with its own result or error."""
    db = SqliteDatabase(tmp_path / "t.db", "CREATE TABLE t (n INTEGER)", error=RuntimeError)
    results: dict[int, object] = {}

    def square(n: int) -> int:
        if n == 13:
            db.connection().execute("SELECT * FROM no_such_table")
        row = db.connection().execute("SELECT ? * ?", (n, n)).fetchone()
        return int(row[0])

    async def read(n: int) -> None:
        try:
            results[n] = await db.read(square, n)
        except RuntimeError as exc:
            results[n] = str(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(db.run)
        hops = db.hops
        async with trio.open_nursery() as readers:
            for n in range(50):
                readers.start_soon(read, n)
        assert db.hops - hops <= 3
        nursery.cancel_scope.cancel()
    assert results.pop(13) == "sqlite: no such table: no_such_table"
    assert results == {n: n * n for n in range(50) if n != 13}


async def test_a_transaction_commits_at_its_own_synchronous_level(tmp_path: Path) -> None:
    """A store's bookkeeping commits without the fsync; the database's own level is
    back for the next transaction, also after one that failed."""
    db = SqliteDatabase(tmp_path / "t.db", "CREATE TABLE t (n INTEGER)", error=RuntimeError)

    def level() -> int:
        return int(db.connection().execute("PRAGMA synchronous").fetchone()[0])

    def insert(synchronous: str | None, fail: bool = False) -> int:
        with db.transaction(synchronous) as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            inside = level()
            if fail:
                raise ValueError("undone")
        return inside

    async with trio.open_nursery() as nursery:
        await nursery.start(db.run)
        assert await db.read(level) == 2  # FULL
        assert await db.read(insert, "NORMAL") == 1
        assert await db.read(level) == 2
        try:
            await db.read(insert, "OFF", True)
        except ValueError:
            pass
        assert await db.read(level) == 2
        assert await db.read(insert, None) == 2
        rows = await db.read(lambda: db.connection().execute("SELECT COUNT(*) FROM t").fetchone())
        assert rows[0] == 2  # the failed one rolled back
        nursery.cancel_scope.cancel()


class _Steps(trio.abc.Instrument):
    """Counts the steps of tasks other than ``watched``'s caller while it is watched."""

    def __init__(self) -> None:
        self.caller: trio.lowlevel.Task | None = None
        self.others = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.caller is not None and task is not self.caller:
            self.others += 1


async def test_a_write_waits_for_one_committer_task_not_two(tmp_path: Path) -> None:
    """A write batch goes to the thread from its committer directly: on a busy event
    loop each task step on the way waits for a round of every runnable task. Four
    steps: the committer's three (woken, past the thread limiter's checkpoint, and
    answering) and Trio's delivery of the thread's result. Through ``read``'s group
    as well there were six."""
    db = SqliteDatabase(tmp_path / "t.db", "CREATE TABLE t (n INTEGER)", error=RuntimeError)

    def insert(n: int) -> int:
        db.connection().execute("INSERT INTO t VALUES (?)", (n,))
        return n

    steps = _Steps()
    async with trio.open_nursery() as nursery:
        await nursery.start(db.run)
        await db.write(insert, 0)  # the thread exists from here on
        trio.lowlevel.add_instrument(steps)
        steps.caller = trio.lowlevel.current_task()
        assert await db.write(insert, 1) == 1
        steps.caller = None
        trio.lowlevel.remove_instrument(steps)
        nursery.cancel_scope.cancel()
    assert steps.others <= 4


async def test_an_own_hop_raises_the_database_error(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db", "CREATE TABLE t (n INTEGER)", error=RuntimeError)
    async with trio.open_nursery() as nursery:
        await nursery.start(db.run)
        hops = db.hops
        try:
            await db.hop(lambda: db.connection().execute("SELECT * FROM nowhere"))
        except RuntimeError as exc:
            assert str(exc) == "sqlite: no such table: nowhere"
            assert exc.__cause__ is not None
        else:
            raise AssertionError("no error")
        assert db.hops == hops + 1
        nursery.cancel_scope.cancel()


async def test_none_is_bound_through_the_adapter_registry(tmp_path: Path) -> None:
    """sqlite3 looks up an adapter for every parameter that is not an int, float or
    str; for None, with no adapter registered, the lookup goes on to attributes that
    None lacks, formatting an AttributeError each time (eight per enqueued job). The
    registered adapter ends it at the first step, and binds NULL as before."""
    db = SqliteDatabase(tmp_path / "t.db", "CREATE TABLE t (a, b)", error=RuntimeError)

    def round_trip() -> list[tuple[object, ...]]:
        conn = db.connection()
        conn.execute("INSERT INTO t VALUES (?, ?)", (None, "x"))
        return [tuple(row) for row in conn.execute("SELECT a IS NULL, typeof(a), b FROM t")]

    async with trio.open_nursery() as nursery:
        await nursery.start(db.run)
        adapter = sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)]
        assert adapter(None) is None
        assert await db.read(round_trip) == [(1, "null", "x")]
        nursery.cancel_scope.cancel()


def test_importing_canopy_registers_no_adapter() -> None:
    """The adapter for None is registered when a database opens: importing Canopy
    changes nothing in the process's sqlite3."""
    code = (
        "import sqlite3, canopy.showcase, canopy.nurseries; "
        "print((type(None), sqlite3.PrepareProtocol) in sqlite3.adapters)"
    )
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert imported.stdout.strip() == "False", imported.stderr
