"""Alerts in SQLite (``nurseries.SqliteDatabase``).

An alert triggers once: ``UPDATE ... WHERE state = 'active'`` in the same batch that
the book fired it in, so a restart (which reloads active alerts) or a cancel racing
the trigger cannot fire it twice. ``delivered`` is set after its notice was
published; on start, triggered alerts not yet delivered are published again.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import trio

from canopy.nurseries import SqliteDatabase

from ._model import Alert, AlertState, Direction

__all__ = ["AlertStore", "AlertStoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    symbol TEXT NOT NULL,
    direction TEXT NOT NULL,
    threshold REAL NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    triggered_at REAL,
    trigger_price REAL,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS alerts_by_owner ON alerts (owner, created_at);
CREATE INDEX IF NOT EXISTS alerts_by_state ON alerts (state, delivered);
"""


class AlertStoreError(Exception):
    """The database failed; nothing in the failed call was written."""


def _alert(row: sqlite3.Row) -> Alert:
    return Alert(
        owner=row["owner"],
        symbol=row["symbol"],
        direction=Direction(row["direction"]),
        threshold=row["threshold"],
        id=row["id"],
        state=AlertState(row["state"]),
        created_at=row["created_at"],
        triggered_at=row["triggered_at"],
        trigger_price=row["trigger_price"],
        delivered=bool(row["delivered"]),
    )


class AlertStore:
    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.db = SqliteDatabase(path, _SCHEMA, error=AlertStoreError, synchronous=synchronous)
        self._conn = self.db.connection

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.db.run(task_status=task_status)

    async def add(self, alert: Alert) -> None:
        await self.db.write(self._add, alert)

    def _add(self, alert: Alert) -> None:
        self._conn().execute(
            "INSERT INTO alerts (id, owner, symbol, direction, threshold, state, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                alert.id, alert.owner, alert.symbol, alert.direction.value, alert.threshold,
                alert.state.value, alert.created_at,
            ),
        )  # fmt: skip

    async def by_owner(self, owner: str, limit: int) -> list[Alert]:
        return await self.db.read(self._by_owner, owner, limit)

    def _by_owner(self, owner: str, limit: int) -> list[Alert]:
        rows = self._conn().execute(
            "SELECT * FROM alerts WHERE owner = ? ORDER BY created_at DESC LIMIT ?",
            (owner, limit),
        )
        return [_alert(row) for row in rows]

    async def count_active(self, owner: str) -> int:
        return await self.db.read(self._count_active, owner)

    def _count_active(self, owner: str) -> int:
        row = (
            self._conn()
            .execute("SELECT COUNT(*) FROM alerts WHERE owner = ? AND state = 'active'", (owner,))
            .fetchone()
        )
        return int(row[0])

    async def get(self, alert_id: str) -> Alert | None:
        return await self.db.read(self._get, alert_id)

    def _get(self, alert_id: str) -> Alert | None:
        row = self._conn().execute("SELECT * FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return _alert(row) if row else None

    async def active(self) -> list[Alert]:
        return await self.db.read(self._in_state, "active", None)

    async def undelivered(self) -> list[Alert]:
        return await self.db.read(self._in_state, "triggered", False)

    def _in_state(self, state: str, delivered: bool | None) -> list[Alert]:
        sql, args = "SELECT * FROM alerts WHERE state = ?", list[object]([state])
        if delivered is not None:
            sql += " AND delivered = ?"
            args.append(int(delivered))
        return [_alert(row) for row in self._conn().execute(sql, args)]

    async def trigger(self, fired: list[tuple[str, float]]) -> list[Alert]:
        """(alert id, price) each: the alerts that were still active, now triggered."""
        return await self.db.write(self._trigger, fired)

    def _trigger(self, fired: list[tuple[str, float]]) -> list[Alert]:
        now, done = time.time(), []
        for alert_id, price in fired:
            row = (
                self._conn()
                .execute(
                    "UPDATE alerts SET state = 'triggered', triggered_at = ?, trigger_price = ? "
                    "WHERE id = ? AND state = 'active' RETURNING *",
                    (now, price, alert_id),
                )
                .fetchone()
            )
            if row is not None:
                done.append(_alert(row))
        return done

    async def mark_delivered(self, alert_ids: list[str]) -> None:
        await self.db.write(self._mark_delivered, alert_ids)

    def _mark_delivered(self, alert_ids: list[str]) -> None:
        self._conn().executemany(
            "UPDATE alerts SET delivered = 1 WHERE id = ?", [(i,) for i in alert_ids]
        )

    async def cancel(self, alert_id: str) -> Alert | None:
        """Cancelled now, or None if it was not active."""
        return await self.db.write(self._cancel, alert_id)

    def _cancel(self, alert_id: str) -> Alert | None:
        row = (
            self._conn()
            .execute(
                "UPDATE alerts SET state = 'cancelled' WHERE id = ? AND state = 'active' "
                "RETURNING *",
                (alert_id,),
            )
            .fetchone()
        )
        return _alert(row) if row else None
