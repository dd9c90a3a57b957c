"""The peer for bench/orders.py: the orders pipeline written the usual asyncio way.

FastAPI on Uvicorn accepts ``POST /orders`` (``uvicorn orders_seed:app``); an arq
worker runs reserve -> charge -> confirm as jobs on Redis
(``arq orders_seed.WorkerSettings``). State is in one SQLite file shared by both
processes (WAL, ``synchronous=FULL``, as Canopy's stores), reached through
``asyncio.to_thread``. The rules are Canopy's, so the two do the same work:

- an ``Idempotency-Key`` names one order (UNIQUE): a repeat with the same body gets
  the original, with another body a 409;
- a reservation takes every item's stock or none, and stock cannot go negative;
- each step checks the order's state first and enqueues the next with a job id of
  its own (``order:{id}:{step}``, arq's idempotent enqueue), so a step that runs
  twice does its work once;
- the charge uses the idempotency key ``{id}:charge`` at the simulated gateway
  (``BENCH_PAYMENT_LATENCY`` seconds per call) and is recorded once in ``charges``.

Tuned as a user would: one worker, ``max_jobs`` ``BENCH_MAX_JOBS`` (64), 10 ms polling.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

DATABASE = os.environ.get("BENCH_ORDERS_DB", "orders.db")
REDIS = RedisSettings(port=int(os.environ.get("BENCH_REDIS_PORT", "6379")))
LATENCY = float(os.environ.get("BENCH_PAYMENT_LATENCY", "0"))

SCHEMA = """
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

T = TypeVar("T")


class Database:
    """One connection per process, one statement batch at a time, off the loop."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)
        self.lock = threading.Lock()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._locked, work)

    def _locked(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(self.conn)
            except BaseException:
                self.conn.rollback()
                raise
            self.conn.commit()
            return result


# -- the web tier --------------------------------------------------------------------


class Item(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=1000)
    unit_price: int = Field(ge=0)


class OrderRequest(BaseModel):
    customer: str = Field(min_length=1, max_length=128)
    currency: str = Field(pattern="^[A-Z]{3}$")
    items: list[Item] = Field(min_length=1, max_length=100)


class Stock(BaseModel):
    available: int = Field(ge=0)


state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state["db"] = Database(DATABASE)
    state["arq"] = await create_pool(REDIS)
    yield
    await state["arq"].aclose()


app = FastAPI(lifespan=lifespan)


@app.put("/stock/{sku}")
async def set_stock(sku: str, stock: Stock) -> dict[str, Any]:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO stock (sku, available) VALUES (?, ?) "
            "ON CONFLICT (sku) DO UPDATE SET available = excluded.available",
            (sku, stock.available),
        )

    await state["db"].run(write)
    return {"sku": sku, "available": stock.available}


@app.post("/orders", status_code=202)
async def place(
    order: OrderRequest, idempotency_key: str = Header(min_length=1, max_length=200)
) -> dict[str, Any]:
    items = [item.model_dump() for item in order.items]
    request = json.dumps([order.customer, order.currency, items], sort_keys=True)
    new_id, now = uuid.uuid4().hex, time.time()
    total = sum(item["quantity"] * item["unit_price"] for item in items)

    def insert(conn: sqlite3.Connection) -> tuple[str, str, str]:
        row = conn.execute(
            "SELECT id, state, request FROM orders WHERE idempotency_key = ?", (idempotency_key,)
        ).fetchone()
        if row is not None:
            return row["id"], row["state"], row["request"]
        conn.execute(
            "INSERT INTO orders (id, customer, currency, items, total, state, reason, "
            "idempotency_key, request, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 'pending', NULL, ?, ?, ?, ?)",
            (
                new_id, order.customer, order.currency, json.dumps(items), total,
                idempotency_key, request, now, now,
            ),
        )  # fmt: skip
        return new_id, "pending", request

    order_id, order_state, stored_request = await state["db"].run(insert)
    if stored_request != request:
        raise HTTPException(409, "the idempotency key was used for a different order")
    if order_state == "pending":
        await state["arq"].enqueue_job("reserve", order_id, _job_id=f"order:{order_id}:reserve")
    return {"id": order_id, "state": order_state}


# -- the worker ----------------------------------------------------------------------


class Gateway:
    """The simulated payment gateway: a repeated key gets the first charge back."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.charged: dict[str, str] = {}

    async def charge(self, amount: int, currency: str, idempotency_key: str) -> str:
        await asyncio.sleep(self.latency)
        if idempotency_key not in self.charged:
            self.charged[idempotency_key] = f"ch_{secrets.token_hex(8)}"
        return self.charged[idempotency_key]


async def startup(ctx: dict[str, Any]) -> None:
    ctx["db"] = Database(DATABASE)
    ctx["gateway"] = Gateway(LATENCY)


async def _next(ctx: dict[str, Any], step: str, order_id: str) -> None:
    redis: ArqRedis = ctx["redis"]
    await redis.enqueue_job(step, order_id, _job_id=f"order:{order_id}:{step}")


async def reserve(ctx: dict[str, Any], order_id: str) -> str:
    def write(conn: sqlite3.Connection) -> str:
        row = conn.execute("SELECT state, items FROM orders WHERE id = ?", (order_id,)).fetchone()
        if row is None or row["state"] != "pending":
            return row["state"] if row is not None else "missing"
        conn.execute("SAVEPOINT take")
        for item in json.loads(row["items"]):
            taken = conn.execute(
                "UPDATE stock SET available = available - ? WHERE sku = ? AND available >= ?",
                (item["quantity"], item["sku"], item["quantity"]),
            ).rowcount
            if not taken:
                conn.execute("ROLLBACK TO take")
                conn.execute(
                    "UPDATE orders SET state = 'failed', reason = ?, updated_at = ? WHERE id = ?",
                    (f"not enough stock of {item['sku']!r}", time.time(), order_id),
                )
                return "failed"
            conn.execute(
                "INSERT INTO reservations (order_id, sku, quantity) VALUES (?, ?, ?)",
                (order_id, item["sku"], item["quantity"]),
            )
        conn.execute("RELEASE take")
        conn.execute(
            "UPDATE orders SET state = 'reserved', updated_at = ? WHERE id = ?",
            (time.time(), order_id),
        )
        return "reserved"

    outcome = await ctx["db"].run(write)
    if outcome == "reserved":
        await _next(ctx, "charge", order_id)
    return outcome


async def charge(ctx: dict[str, Any], order_id: str) -> str:
    def read(conn: sqlite3.Connection) -> tuple[sqlite3.Row | None, str | None]:
        order = conn.execute(
            "SELECT state, total, currency FROM orders WHERE id = ?", (order_id,)
        ).fetchone()
        charged = conn.execute(
            "SELECT reference FROM charges WHERE order_id = ? AND attempt_key = 'charge'",
            (order_id,),
        ).fetchone()
        return order, charged["reference"] if charged else None

    order, reference = await ctx["db"].run(read)
    if order is None or order["state"] not in ("reserved", "paid"):
        return order["state"] if order is not None else "missing"
    if order["state"] == "reserved":
        if reference is None:
            reference = await ctx["gateway"].charge(
                order["total"], order["currency"], f"{order_id}:charge"
            )

        def record(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute(
                "INSERT INTO charges (order_id, attempt_key, amount, currency, reference, "
                "created_at) VALUES (?, 'charge', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (order_id, order["total"], order["currency"], reference, now),
            )
            conn.execute(
                "UPDATE orders SET state = 'paid', updated_at = ? "
                "WHERE id = ? AND state = 'reserved'",
                (now, order_id),
            )

        await ctx["db"].run(record)
    await _next(ctx, "confirm", order_id)
    return str(reference)


async def confirm(ctx: dict[str, Any], order_id: str) -> str:
    def write(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE orders SET state = 'confirmed', updated_at = ? WHERE id = ? AND state = 'paid'",
            (time.time(), order_id),
        )

    await ctx["db"].run(write)
    return "confirmed"


class WorkerSettings:
    functions = [reserve, charge, confirm]
    on_startup = startup
    redis_settings = REDIS
    max_jobs = int(os.environ.get("BENCH_MAX_JOBS", "64"))
    poll_delay = 0.01
    max_tries = 5
