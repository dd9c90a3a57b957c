"""Orders, stock, reservations and charges in SQLite (through ``trio.to_thread``).

Writes are group-committed (``nurseries.SqliteDatabase``): the pipeline's steps of many
orders share a transaction, and an fsync, as enqueues do in the job store.

The invariants live in the schema, so no interleaving of requests, retries or crashes
can break them: stock cannot go negative (a CHECK, and a reservation decrements only
``WHERE available >= quantity`` in one transaction for all of an order's items); an
idempotency key names one order (UNIQUE); an order has at most one charge per
attempt key (PRIMARY KEY (order_id, attempt_key)), so a charge is recorded once
whatever repeats it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from canopy.nurseries import PRUNE_BATCH, Pruner, SqliteDatabase, wall_time

from ._model import Order, OrderState

__all__ = ["OrderStore", "OrderStoreError", "OutOfStock"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    currency TEXT NOT NULL,
    items TEXT NOT NULL,
    total INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    idempotency_key TEXT NOT NULL UNIQUE,
    request TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer, created_at);
CREATE INDEX IF NOT EXISTS orders_by_state ON orders (state, updated_at);
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (order_id, sku)
);
CREATE TABLE IF NOT EXISTS charges (
    order_id TEXT NOT NULL,
    attempt_key TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    reference TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (order_id, attempt_key)
);
"""


class OrderStoreError(Exception):
    """The database failed; nothing in the failed call was written."""


class OutOfStock(Exception):
    def __init__(self, sku: str) -> None:
        super().__init__(f"not enough stock of {sku!r}")
        self.sku = sku


def _order(row: sqlite3.Row) -> Order:
    return Order(
        id=row["id"],
        customer=row["customer"],
        currency=row["currency"],
        items=json.loads(row["items"]),
        total=row["total"],
        state=OrderState(row["state"]),
        reason=row["reason"],
        idempotency_key=row["idempotency_key"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_ENDED = (OrderState.CONFIRMED.value, OrderState.FAILED.value)


class OrderStore:
    """Orders, their stock reservations and charges, in one SQLite file.

    Retention: orders are business records, kept for ever by default. With a
    ``retention``, an order that ended (confirmed or failed) that long ago is deleted
    with its reservations, its charges and so its idempotency key, ``PRUNE_BATCH`` per
    write, by a :class:`~canopy.nurseries.Pruner` in the store's nursery."""

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 200,
        synchronous: str = "FULL",
        retention: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.pruner = (
            None
            if retention is None
            else Pruner("ended orders", retention, self._delete_ended, OrderStoreError)
        )
        # Writes that arrive together share one transaction (one fsync), each in a
        # savepoint of its own, so one write's failure (OutOfStock) undoes only it.
        self.db = SqliteDatabase(
            path, _SCHEMA, error=OrderStoreError, batch_size=batch_size, synchronous=synchronous
        )
        self._write = self.db.write
        self._db = self.db.read
        self._connection = self.db.connection

    @property
    def commits(self) -> int:
        """Write transactions so far: fewer than writes when grouped."""
        return self.db.commits

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.db.run)
            if self.pruner is not None:
                await nursery.start(self.pruner.run)
            task_status.started()

    @property
    def pruned(self) -> int:
        """Orders this process deleted so far."""
        return self.pruner.pruned if self.pruner is not None else 0

    async def prune(self) -> int:
        """Delete the orders that ended more than ``retention`` ago now (the pruner
        does it on its own); how many went."""
        return await self.pruner.prune() if self.pruner is not None else 0

    async def _delete_ended(self, cutoff: float) -> int:
        return int(await self._write(self._prune_batch, cutoff))

    def _prune_batch(self, cutoff: float) -> int:
        with self._transaction() as conn:
            ids = [
                row[0]
                for state in _ENDED
                for row in conn.execute(
                    "SELECT id FROM orders WHERE state = ? AND updated_at < ? LIMIT ?",
                    (state, cutoff, PRUNE_BATCH),
                )
            ][:PRUNE_BATCH]
            if not ids:
                return 0
            marks = ", ".join("?" * len(ids))
            for table in ("reservations", "charges"):
                conn.execute(f"DELETE FROM {table} WHERE order_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM orders WHERE id IN ({marks})", ids)
        return len(ids)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write's own part of its group's transaction: it runs inside the savepoint
        the database opened for it (an exception rolls back to it)."""
        conn = self._connection()
        assert conn.in_transaction, "a write goes through OrderStore._write"
        yield conn

    # -- stock ---------------------------------------------------------------------

    async def set_stock(self, sku: str, available: int) -> None:
        await self._write(self._set_stock, sku, available)

    def _set_stock(self, sku: str, available: int) -> None:
        self._connection().execute(
            "INSERT INTO stock (sku, available) VALUES (?, ?) "
            "ON CONFLICT (sku) DO UPDATE SET available = excluded.available",
            (sku, available),
        )

    async def stock(self, sku: str) -> int | None:
        return await self._db(self._stock, sku)

    def _stock(self, sku: str) -> int | None:
        row = self._connection().execute("SELECT available FROM stock WHERE sku = ?", (sku,))
        found = row.fetchone()
        return int(found[0]) if found else None

    # -- orders ----------------------------------------------------------------------

    async def insert(self, order: Order, request: str) -> tuple[Order, str]:
        """Store a new order; with a used key, the original and the request it came
        from (the caller compares them)."""
        return await self._write(self._insert, order, request)

    def _insert(self, order: Order, request: str) -> tuple[Order, str]:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT * FROM orders WHERE idempotency_key = ?", (order.idempotency_key,)
            ).fetchone()
            if row is not None:
                return _order(row), str(row["request"])
            conn.execute(
                "INSERT INTO orders (id, customer, currency, items, total, state, reason, "
                "idempotency_key, request, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order.id, order.customer, order.currency, json.dumps(order.items),
                    order.total, order.state.value, order.reason, order.idempotency_key,
                    request, order.created_at, order.updated_at,
                ),
            )  # fmt: skip
            return order, request

    async def get(self, order_id: str) -> Order | None:
        return await self._db(self._get, order_id)

    def _get(self, order_id: str) -> Order | None:
        row = self._connection().execute("SELECT * FROM orders WHERE id = ?", (order_id,))
        found = row.fetchone()
        return _order(found) if found else None

    async def by_customer(self, customer: str, limit: int) -> list[Order]:
        return await self._db(self._by_customer, customer, limit)

    def _by_customer(self, customer: str, limit: int) -> list[Order]:
        rows = self._connection().execute(
            "SELECT * FROM orders WHERE customer = ? ORDER BY created_at DESC LIMIT ?",
            (customer, limit),
        )
        return [_order(row) for row in rows]

    async def move(
        self, order_id: str, frm: OrderState, to: OrderState, reason: str | None = None
    ) -> Order | None:
        """``frm`` -> ``to``, or None if the order is not in ``frm`` (a repeat)."""
        return await self._write(self._move, order_id, frm, to, reason)

    def _move(
        self, order_id: str, frm: OrderState, to: OrderState, reason: str | None
    ) -> Order | None:
        with self._transaction() as conn:
            row = conn.execute(
                "UPDATE orders SET state = ?, reason = ?, updated_at = ? "
                "WHERE id = ? AND state = ? RETURNING *",
                (to.value, reason, wall_time(), order_id, frm.value),
            ).fetchone()
            return _order(row) if row is not None else None

    # -- the pipeline's steps, each one transaction ------------------------------------

    async def reserve(self, order_id: str) -> Order | None:
        """Take the order's items from stock (all or none) and mark it reserved;
        OutOfStock leaves stock as it was. None if it was not pending (a repeat)."""
        return await self._write(self._reserve, order_id)

    def _reserve(self, order_id: str) -> Order | None:
        with self._transaction() as conn:
            order = self._get(order_id)
            if order is None or order.state is not OrderState.PENDING:
                return None
            for item in order.items:
                taken = conn.execute(
                    "UPDATE stock SET available = available - ? WHERE sku = ? AND available >= ?",
                    (item["quantity"], item["sku"], item["quantity"]),
                ).rowcount
                if not taken:
                    raise OutOfStock(item["sku"])  # rolls the whole order back
                conn.execute(
                    "INSERT INTO reservations (order_id, sku, quantity) VALUES (?, ?, ?)",
                    (order_id, item["sku"], item["quantity"]),
                )
            row = conn.execute(
                "UPDATE orders SET state = ?, updated_at = ? WHERE id = ? RETURNING *",
                (OrderState.RESERVED.value, wall_time(), order_id),
            ).fetchone()
        return _order(row)

    async def release(self, order_id: str, reason: str) -> Order | None:
        """Compensation: give a reserved order's items back, and fail it with ``reason``."""
        return await self._write(self._release, order_id, reason)

    def _release(self, order_id: str, reason: str) -> Order | None:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT sku, quantity FROM reservations WHERE order_id = ?", (order_id,)
            ).fetchall()
            for row in rows:
                conn.execute(
                    "UPDATE stock SET available = available + ? WHERE sku = ?",
                    (row["quantity"], row["sku"]),
                )
            conn.execute("DELETE FROM reservations WHERE order_id = ?", (order_id,))
            row = conn.execute(
                "UPDATE orders SET state = ?, reason = ?, updated_at = ? "
                "WHERE id = ? AND state IN (?, ?) RETURNING *",
                (
                    OrderState.FAILED.value, reason, wall_time(), order_id,
                    OrderState.PENDING.value, OrderState.RESERVED.value,
                ),
            ).fetchone()  # fmt: skip
        return _order(row) if row is not None else None

    async def with_charge(self, order_id: str, attempt_key: str) -> tuple[Order | None, str | None]:
        """The order and its recorded charge's reference (None if there is none yet),
        read together: the charge step needs both, and one thread hop is half of two."""
        return await self._db(self._with_charge, order_id, attempt_key)

    def _with_charge(self, order_id: str, attempt_key: str) -> tuple[Order | None, str | None]:
        return self._get(order_id), self._charge_of(order_id, attempt_key)

    def _charge_of(self, order_id: str, attempt_key: str) -> str | None:
        row = (
            self._connection()
            .execute(
                "SELECT reference FROM charges WHERE order_id = ? AND attempt_key = ?",
                (order_id, attempt_key),
            )
            .fetchone()
        )
        return str(row[0]) if row else None

    async def record_charge(
        self, order_id: str, attempt_key: str, amount: int, currency: str, reference: str
    ) -> Order | None:
        """Record the charge (once: a repeat finds it there) and mark the order paid."""
        return await self._write(
            self._record_charge, order_id, attempt_key, amount, currency, reference
        )

    def _record_charge(
        self, order_id: str, attempt_key: str, amount: int, currency: str, reference: str
    ) -> Order | None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO charges (order_id, attempt_key, amount, currency, reference, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (order_id, attempt_key, amount, currency, reference, wall_time()),
            )
            row = conn.execute(
                "UPDATE orders SET state = ?, updated_at = ? WHERE id = ? AND state = ? "
                "RETURNING *",
                (OrderState.PAID.value, wall_time(), order_id, OrderState.RESERVED.value),
            ).fetchone()
        return _order(row) if row is not None else self._get(order_id)  # paid before: as it is

    async def charges(self, order_id: str) -> int:
        return await self._db(self._charges, order_id)

    def _charges(self, order_id: str) -> int:
        row = (
            self._connection()
            .execute("SELECT COUNT(*) FROM charges WHERE order_id = ?", (order_id,))
            .fetchone()
        )
        return int(row[0])
