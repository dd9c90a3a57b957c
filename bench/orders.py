"""Orders end to end: Canopy against the same pipeline on FastAPI + Uvicorn + arq.

Usage (from the repository root, after ``pip install -e . -r bench/requirements.txt``
and with ``redis-server`` on the PATH)::

    python bench/orders.py [--duration 8] [--rounds 3] [--latencies 0,0.1]

Three systems, each in a fresh directory, at each gateway latency (seconds the
simulated payment gateway takes per charge):

- ``canopy``: ``canopy serve`` on the embedded default (SQLite, ``synchronous=FULL``,
  jobs run in the same process), pinned to core 0;
- ``canopy+worker``: the same with ``CANOPY_RUN_JOBS=false``, and one ``canopy worker``
  on core 1 running the steps; its events reach the web tier's hub over the relay;
- ``seed``: ``bench/orders_seed.py``, FastAPI on Uvicorn and one arq worker
  (``max_jobs`` 64, 10 ms polling) on core 0, on a redis-server on core 1; the same
  schema, stock and idempotency rules, steps and simulated gateway.

The same load for each: from core 1, ``--inflight`` orders kept under way for
``--duration`` seconds, each a ``POST /orders`` (one item, a new idempotency key)
after a warm-up of ``WARMUP`` orders. An order is done when its end state can be read
from the system's ``orders`` table, which the bench polls every 10 ms for the orders
under way: one way to see confirmation, the same for every system. Canopy also
delivers every state change as an event; one WebSocket subscriber on ``customers.*``
counts the ``confirmed`` events, and the run says if any was missing.

Checked after each run, in each system's own database: every accepted order ended
(0 lost), exactly one charge per confirmed order and none for any other (0 double
charges), and the stock taken equals the items of the orders that hold it.

Printed: per round, confirmed orders/s and p50 / p99 from the POST to the state being
read; then per latency the median and range over rounds, and Canopy's ratio to the
seed stack round by round. Bounded: about rounds x systems x latencies x (duration + 8) s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio
from _poster import Poster, PostError
from _procs import cpu_seconds, free_port, raise_fd_limit, running

from canopy.handlers.topics import TokenIssuer
from canopy.handlers.topics.client import TopicMessage, connect_topics

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
SKU = "bench-sku"
STOCK = 10**9
CUSTOMERS = 16
WARMUP = 200
POLL = 0.01
OUTCOME_TIMEOUT = 30.0
SYSTEMS = ("canopy", "canopy+worker", "seed")


@dataclass
class Run:
    """One system at one latency: what the load saw."""

    latencies: list[float] = field(default_factory=list)
    placed: int = 0
    confirmed: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # POSTs not accepted, by why
    lost: int = 0
    elapsed: float = 0.0
    # The orders under way: id -> (sent, event set when its end state is read).
    waiting: dict[str, tuple[float, trio.Event]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    confirmed_ids: set[str] = field(default_factory=set)
    event_confirmed: set[str] | None = None  # Canopy's: ids with a confirmed event
    unheard: set[str] | None = None  # after the window: confirmed, no event yet
    all_heard: trio.Event = field(default_factory=trio.Event)
    close_codes: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # seconds in the window, by role

    @property
    def rate(self) -> float:
        return self.confirmed / self.elapsed if self.elapsed else 0.0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@dataclass
class System:
    name: str
    port: int
    database: Path
    events: tuple[str, str] | None  # (ws url, token) where the system publishes events
    processes: dict[str, int] = field(default_factory=dict)  # its processes' pids by role


async def poll_outcomes(database: Path, run: Run) -> None:
    """Reads the end state of the orders under way, every POLL seconds."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)

    def ended(ids: list[str]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            found += conn.execute(
                f"SELECT id, state FROM orders WHERE id IN ({marks}) "
                "AND state IN ('confirmed', 'failed')",
                chunk,
            ).fetchall()
        return found

    try:
        while True:
            if run.waiting:
                for order_id, state in await trio.to_thread.run_sync(ended, list(run.waiting)):
                    sent, done = run.waiting.pop(order_id)
                    run.outcomes[order_id] = state
                    if state == "confirmed":
                        run.latencies.append(time.monotonic() - sent)
                    done.set()
            await trio.sleep(POLL)
    finally:
        conn.close()


async def listen(url: str, token: str, run: Run, *, task_status: trio.TaskStatus[None]) -> None:
    """Every order event of every customer, on one connection."""
    run.event_confirmed = set()
    async with (
        connect_topics(url, token=token, queue_size=100_000) as client,
        client.subscribe("customers.*") as events,
    ):
        task_status.started()
        run.close_codes = client.close_codes
        async for event in events:
            if isinstance(event, TopicMessage) and event.data["state"] == "confirmed":
                run.event_confirmed.add(event.data["id"])
                if run.unheard is not None:
                    run.unheard.discard(event.data["id"])
                    if not run.unheard:
                        run.all_heard.set()


async def place(client: Poster, n: int, run: Run, counted: bool) -> None:
    body = {
        "customer": f"bench-{n % CUSTOMERS}",
        "currency": "EUR",
        "items": [{"sku": SKU, "quantity": 1, "unit_price": 250}],
    }
    sent = time.monotonic()
    try:
        status, answer = await client.post(
            "/orders", body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
    except PostError as exc:
        run.errors[str(exc)] += 1
        return
    if status != 202:
        run.errors[f"HTTP {status}: {answer}"[:120]] += 1
        return
    order_id = answer["id"]
    done = trio.Event()
    run.waiting[order_id] = (sent, done)
    with trio.move_on_after(OUTCOME_TIMEOUT):
        await done.wait()
    state = run.outcomes.pop(order_id, None)
    if state is None:
        run.waiting.pop(order_id, None)
        run.lost += 1  # accepted, and not ended within OUTCOME_TIMEOUT
    if not counted:
        run.latencies.clear()
        return
    run.placed += 1
    if state == "confirmed":
        run.confirmed += 1
        run.confirmed_ids.add(order_id)
    elif state == "failed":
        run.failed += 1


async def drive(system: System, args: argparse.Namespace) -> Run:
    run = Run()
    client = Poster(system.port, args.connections)
    try:
        status, _ = await client.post(f"/stock/{SKU}", {"available": STOCK}, method="PUT")
        if status != 200:
            raise RuntimeError(f"stocking {SKU} answered {status}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll_outcomes, system.database, run)
            if system.events is not None:
                await nursery.start(listen, *system.events, run)
            counter = iter(range(10**9))

            async def placer(until: float, counted: bool) -> None:
                while trio.current_time() < until:
                    await place(client, next(counter), run, counted)

            async with trio.open_nursery() as warm:
                for _ in range(WARMUP):
                    warm.start_soon(place, client, next(counter), run, False)
            run.lost = 0
            run.errors.clear()
            processes = system.processes.items()
            before = {role: cpu_seconds(pid) for role, pid in processes}
            before["load"] = time.process_time()
            started = time.monotonic()
            deadline = trio.current_time() + args.duration
            async with trio.open_nursery() as placers:
                for _ in range(args.inflight):
                    placers.start_soon(placer, deadline, True)
            run.elapsed = time.monotonic() - started
            run.cpu = {role: cpu_seconds(pid) - before[role] for role, pid in processes}
            run.cpu["load"] = time.process_time() - before["load"]
            if run.event_confirmed is not None:
                run.unheard = run.confirmed_ids - run.event_confirmed
                if run.unheard:
                    with trio.move_on_after(5):  # the last events may trail the store
                        await run.all_heard.wait()
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
    return run


def check_store(database: Path, run: Run) -> None:
    """The system's own records: nothing lost, one charge per confirmed order."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:

        def one(sql: str) -> int:
            return int(conn.execute(sql).fetchone()[0])

        unended = one("SELECT COUNT(*) FROM orders WHERE state NOT IN ('confirmed', 'failed')")
        confirmed = one("SELECT COUNT(*) FROM orders WHERE state = 'confirmed'")
        double = one(
            "SELECT COUNT(*) FROM orders o WHERE (SELECT COUNT(*) FROM charges c "
            "WHERE c.order_id = o.id) != (CASE o.state WHEN 'confirmed' THEN 1 ELSE 0 END)"
        )
        held = one(
            "SELECT COALESCE(SUM(quantity), 0) FROM reservations r JOIN orders o "
            "ON o.id = r.order_id WHERE o.state = 'confirmed'"
        )
        available = one(f"SELECT available FROM stock WHERE sku = '{SKU}'")
    if unended or run.lost:
        run.problems.append(f"{run.lost + unended} orders lost (accepted, never ended)")
    if double:
        run.problems.append(f"{double} orders with a charge count other than one per confirmation")
    if STOCK - available != held or held != confirmed:
        run.problems.append(
            f"stock taken {STOCK - available}, held by confirmed orders {held}, "
            f"confirmed {confirmed}"
        )
    if run.event_confirmed is not None:
        missing = len(run.confirmed_ids - run.event_confirmed)
        if missing:
            run.problems.append(f"{missing} confirmed orders without their confirmed event")
    if run.close_codes:
        run.problems.append(f"the event listener was disconnected: {run.close_codes}")


@contextlib.contextmanager
def started(name: str, latency: float, workdir: Path, redis_port: int) -> Iterator[System]:
    port = free_port()
    with contextlib.ExitStack() as stack:
        if name == "seed":
            database = workdir / "orders.db"
            env = {
                **os.environ,
                "PYTHONPATH": str(BENCH),
                "BENCH_ORDERS_DB": str(database),
                "BENCH_REDIS_PORT": str(redis_port),
                "BENCH_PAYMENT_LATENCY": str(latency),
            }
            web = [sys.executable, "-m", "uvicorn", "orders_seed:app", "--port", str(port)]
            web += ["--no-access-log", "--log-level", "warning"]
            web_process = stack.enter_context(running(web, port, workdir, env, core=0))
            worker = [sys.executable, "-m", "arq", "orders_seed.WorkerSettings"]
            worker_process = stack.enter_context(running(worker, None, workdir, env, core=0))
            processes = {"web": web_process.pid, "worker": worker_process.pid}
            yield System(name, port, database, None, processes)
            return
        secret = secrets.token_hex(32)
        token = TokenIssuer(secret).issue("bench", subscribe=["customers.*"], ttl=None)
        env = {
            **os.environ,
            "CANOPY_TOPICS_SECRET": secret,
            "CANOPY_DATA_DIR": str(workdir / "var"),
            "CANOPY_ACCESS_LOG": "false",
            "CANOPY_TICKER_RATE": "0",
            "CANOPY_ORDERS_PAYMENT_LATENCY": str(latency),
            "CANOPY_MAX_INFLIGHT": "8192",
            "CANOPY_MAX_QUEUED": "10000000",
            # One listener hears every order's four events: room to never be a slow consumer.
            "CANOPY_SUBSCRIBER_QUEUE": "100000",
        }
        shutil.copy(ROOT / "hypercorn.toml", workdir)
        serve = [sys.executable, "-m", "canopy", "serve", "--bind", f"127.0.0.1:{port}"]
        if name == "canopy+worker":
            env["CANOPY_RUN_JOBS"] = "false"
        processes = {"web": stack.enter_context(running(serve, port, workdir, env, core=0)).pid}
        if name == "canopy+worker":
            worker = [sys.executable, "-m", "canopy", "worker"]
            processes["worker"] = stack.enter_context(
                running(worker, None, workdir, env, core=1)
            ).pid
        events = (f"ws://127.0.0.1:{port}/ws", token)
        yield System(name, port, workdir / "var" / "orders.db", events, processes)


def measure(name: str, latency: float, args: argparse.Namespace, redis_port: int) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix=f"canopy-bench-orders-{name}-"))
    try:
        with started(name, latency, workdir, redis_port) as system:
            run = trio.run(drive, system, args)
            check_store(system.database, run)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds placing orders")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--latencies", default="0,0.1", help="gateway seconds per charge")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="which to measure")
    parser.add_argument("--inflight", type=int, default=256, help="orders under way at once")
    parser.add_argument("--connections", type=int, default=32, help="HTTP connections")
    args = parser.parse_args()
    systems = [name for name in args.systems.split(",") if name]
    if unknown := set(systems) - set(SYSTEMS):
        sys.exit(f"unknown systems {sorted(unknown)}: choose from {', '.join(SYSTEMS)}")
    if "seed" in systems and shutil.which("redis-server") is None:
        sys.exit("the seed stack needs redis-server: apt-get install redis-server")
    raise_fd_limit()
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})  # the load on core 1, the servers on core 0
    print(
        f"bench/orders.py --duration {args.duration:g} --rounds {args.rounds} "
        f"--latencies {args.latencies} --inflight {args.inflight}",
        flush=True,
    )
    results: dict[tuple[float, str], list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="canopy-bench-redis-") as tmp:
        redis_port = free_port()
        redis = ["redis-server", "--port", str(redis_port), "--save", "", "--dir", tmp]
        redis += ["--appendonly", "no"]
        with running(redis, redis_port, Path(tmp), dict(os.environ), core=1):
            for latency in (float(v) for v in args.latencies.split(",")):
                for round_ in range(1, args.rounds + 1):
                    for name in systems:
                        run = measure(name, latency, args, redis_port)
                        results.setdefault((latency, name), []).append(run)
                        verdict = "; ".join(run.problems) or "0 lost, 0 double charges"
                        per_order = ", ".join(
                            f"{role} {seconds / max(run.confirmed, 1) * 1e6:.0f}"
                            for role, seconds in run.cpu.items()
                        )
                        print(
                            f"gateway {latency * 1000:.0f} ms, round {round_}, {name:>13}: "
                            f"{run.rate:6.0f} confirmed/s  p50 {run.quantile(0.5) * 1000:4.0f} ms"
                            f"  p99 {run.quantile(0.99) * 1000:5.0f} ms"
                            f"  not accepted {run.errors.total()}"
                            f"  CPU µs/order: {per_order}  ({verdict})",
                            flush=True,
                        )
                        for why, count in run.errors.most_common(3):
                            print(f"    {count} not accepted: {why}", flush=True)
    summarize(results, systems)


def summarize(results: dict[tuple[float, str], list[Run]], systems: list[str]) -> None:
    for latency in sorted({latency for latency, _ in results}):
        print(f"gateway latency {latency * 1000:.0f} ms:")
        for name in systems:
            rates = [run.rate for run in results[(latency, name)]]
            listed = ", ".join(f"{rate:.0f}" for rate in rates)
            print(f"    {name:>13}: median {statistics.median(rates):6.0f} confirmed/s ({listed})")
        if "seed" not in systems:
            continue
        seed = [run.rate for run in results[(latency, "seed")]]
        for name in (s for s in systems if s != "seed"):
            ratios = [
                run.rate / base if base else float("inf")
                for run, base in zip(results[(latency, name)], seed, strict=True)
            ]
            print(
                f"    {name} / seed: median {statistics.median(ratios):.2f}x "
                f"({min(ratios):.2f}-{max(ratios):.2f}x round by round)"
            )


if __name__ == "__main__":
    main()
