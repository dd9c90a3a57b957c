"""Orders end to end: placed and confirmed per second, and POST -> ``confirmed`` latency.

Usage (from the repository root, after ``pip install -e .``)::

    python bench/orders.py [--duration 10] [--inflight 256] [--connections 32]

One run: ``canopy serve`` on the embedded default (SQLite, ``synchronous=FULL``, jobs
run in the same process) with the simulated payment gateway at 0 latency, pinned to
core 0, in a fresh data directory. From core 1, the bench stocks one SKU and keeps
``--inflight`` orders under way for ``--duration`` seconds: each is a ``POST /orders``
(one item, a new idempotency key), and it is done when ``confirmed`` arrives for it on
``customers.{customer}.orders`` over one WebSocket (a token for ``customers.*``). No
polling: the time is the pipeline's, reserve -> charge -> confirm as jobs.

Printed: orders placed and confirmed per second over the window, the share failed,
and p50 / p90 / p99 / max from the POST to its ``confirmed`` event. There is no peer
for this pipeline; the figure is printed against the target (2,000 confirmed/s).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio
from _procs import free_port, raise_fd_limit, running

from canopy.handlers.topics import TokenIssuer
from canopy.handlers.topics.client import TopicMessage, connect_topics

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2000.0
SKU = "bench-sku"
CUSTOMERS = 16


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    placed: int = 0
    confirmed: int = 0
    failed: int = 0
    errors: int = 0
    # An order's outcome and when it came; it may come before the POST's answer does.
    outcomes: dict[str, tuple[str, float]] = field(default_factory=dict)
    waiting: dict[str, trio.Event] = field(default_factory=dict)
    close_codes: list[int] = field(default_factory=list)  # the listener's: events lost

    def ended(self, order_id: str, state: str) -> None:
        self.outcomes[order_id] = (state, time.monotonic())
        event = self.waiting.pop(order_id, None)
        if event is not None:
            event.set()

    def count(self, order_id: str, sent: float) -> None:
        state, at = self.outcomes.pop(order_id)
        if state == "confirmed":
            self.confirmed += 1
            self.latencies.append(at - sent)
        else:
            self.failed += 1


async def listen(url: str, token: str, tally: Tally, *, task_status: trio.TaskStatus[None]) -> None:
    """Every order event of every customer, on one connection."""
    async with (
        connect_topics(url, token=token, queue_size=100_000) as client,
        client.subscribe("customers.*") as events,
    ):
        task_status.started()
        tally.close_codes = client.close_codes
        async for event in events:
            if isinstance(event, TopicMessage) and event.data["state"] in ("confirmed", "failed"):
                tally.ended(event.data["id"], event.data["state"])


async def place(client: httpx.AsyncClient, n: int, tally: Tally) -> None:
    body = {
        "customer": f"bench-{n % CUSTOMERS}",
        "currency": "EUR",
        "items": [{"sku": SKU, "quantity": 1, "unit_price": 250}],
    }
    sent = time.monotonic()
    try:
        response = await client.post(
            "/orders", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
    except httpx.HTTPError:
        tally.errors += 1
        return
    if response.status_code != 202:
        tally.errors += 1
        return
    order_id = response.json()["id"]
    tally.placed += 1
    if order_id not in tally.outcomes:
        done = tally.waiting[order_id] = trio.Event()
        with trio.move_on_after(30):
            await done.wait()
        if order_id not in tally.outcomes:
            tally.waiting.pop(order_id, None)
            tally.errors += 1  # no outcome within 30 s
            return
    tally.count(order_id, sent)


async def drive(port: int, args: argparse.Namespace, token: str) -> tuple[Tally, float]:
    base, tally = f"http://127.0.0.1:{port}", Tally()
    limits = httpx.Limits(
        max_connections=args.connections, max_keepalive_connections=args.connections
    )
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        stocked = await client.put(f"/stock/{SKU}", json={"available": 10**9})
        stocked.raise_for_status()
        async with trio.open_nursery() as nursery:
            await nursery.start(listen, f"ws://127.0.0.1:{port}/ws", token, tally)
            started = time.monotonic()
            deadline = trio.current_time() + args.duration
            counter = iter(range(10**9))

            async def placer() -> None:
                while trio.current_time() < deadline:
                    await place(client, next(counter), tally)

            async with trio.open_nursery() as placers:
                for _ in range(args.inflight):
                    placers.start_soon(placer)
            elapsed = time.monotonic() - started
            nursery.cancel_scope.cancel()
    return tally, elapsed


def report(tally: Tally, elapsed: float) -> None:
    confirmed_rate = tally.confirmed / elapsed
    print(f"orders placed     {tally.placed:>8}   {tally.placed / elapsed:>9.0f}/s")
    print(f"orders confirmed  {tally.confirmed:>8}   {confirmed_rate:>9.0f}/s")
    print(f"orders failed     {tally.failed:>8}   (HTTP errors or no outcome: {tally.errors})")
    if tally.close_codes:
        print(f"the event listener was disconnected: {tally.close_codes} (events lost)")
    if tally.latencies:
        ordered = sorted(tally.latencies)
        q = statistics.quantiles(ordered, n=100)
        print(
            "POST -> confirmed "
            f"p50 {q[49] * 1000:.0f} ms  p90 {q[89] * 1000:.0f} ms  "
            f"p99 {q[98] * 1000:.0f} ms  max {ordered[-1] * 1000:.0f} ms"
        )
    print(f"against the target ({TARGET:.0f}/s): {confirmed_rate / TARGET:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds placing orders")
    parser.add_argument("--inflight", type=int, default=256, help="orders under way at once")
    parser.add_argument("--connections", type=int, default=32, help="HTTP connections")
    parser.add_argument(
        "--server-cores",
        default="0",
        help='taskset list for the server ("0,1": it shares core 1 with the load)',
    )
    args = parser.parse_args()
    raise_fd_limit()
    secret = secrets.token_hex(32)
    token = TokenIssuer(secret).issue("bench", subscribe=["customers.*"], ttl=None)
    workdir = Path(tempfile.mkdtemp(prefix="canopy-bench-orders-"))
    port = free_port()
    env = {
        **os.environ,
        "CANOPY_TOPICS_SECRET": secret,
        "CANOPY_DATA_DIR": str(workdir / "var"),
        "CANOPY_ACCESS_LOG": "false",
        "CANOPY_TICKER_RATE": "0",
        "CANOPY_ORDERS_PAYMENT_LATENCY": "0",
        "CANOPY_MAX_INFLIGHT": "8192",
        "CANOPY_MAX_QUEUED": "10000000",
        # One listener hears every order's four events: room to never be a slow consumer.
        "CANOPY_SUBSCRIBER_QUEUE": "100000",
    }
    shutil.copy(ROOT / "hypercorn.toml", workdir)
    argv = [sys.executable, "-m", "canopy", "serve", "--bind", f"127.0.0.1:{port}"]
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})  # the load on core 1, the server on core 0
    try:
        with running(argv, port, workdir, env, core=args.server_cores):
            tally, elapsed = trio.run(drive, port, args, token)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"bench/orders.py --duration {args.duration:g} --inflight {args.inflight} "
        f"--server-cores {args.server_cores} (job concurrency "
        f"{env.get('CANOPY_JOB_CONCURRENCY', 'default')})"
    )
    report(tally, elapsed)


if __name__ == "__main__":
    main()
