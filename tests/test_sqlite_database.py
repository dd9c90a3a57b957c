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
