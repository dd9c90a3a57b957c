"""SqliteDatabase: one connection in one thread, with the calls into it grouped."""

from __future__ import annotations

from pathlib import Path

import trio

from nurseries import SqliteDatabase


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
