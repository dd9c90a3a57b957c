"""The order pipeline alone, in one ``trio.run``: no HTTP, no WebSocket, no server.

Usage (from the repository root, after ``pip install -e .``)::

    python bench/orders_pipeline.py [--orders 3000] [--inflight 256] [--concurrency 64]

Where ``bench/orders.py`` measures orders end to end through ``canopy serve``, this
takes the web layer away, to show what the pipeline itself costs: the orders service,
a job runner, the two SQLite stores (``synchronous=FULL``) and the hub, wired as the
server wires them (job events published to ``jobs.{id}`` for tasks that want them),
pinned to one core. ``--inflight`` placers call ``OrdersService.place`` directly;
an order is done when ``confirmed`` reaches a hub subscriber on ``customers.*``.

Printed: orders confirmed per second, and CPU time per order (the process's, every
thread's: the event loop's and the stores'). The difference from ``bench/orders.py``'s
per-order time is what HTTP and the WebSocket delivery add.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from canopy.handlers.jobs import JobsService
from canopy.handlers.orders import OrdersService, OrderStore, SimulatedGateway
from canopy.nurseries import Supervisor
from canopy.nurseries.fanout import Hub, Item, Message, Subscription
from canopy.nurseries.jobs import JobRunner, SQLiteJobStore, TaskRegistry
from canopy.server import Settings
from canopy.server.app._capability import hub_publisher
from canopy.server.app._jobs import notify_for
from canopy.server.app._process import tune_gc

SKU = "bench-sku"


class Outcomes:
    """A hub sink that counts orders reaching an end state."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.confirmed = 0
        self.failed = 0
        self.all_done = trio.Event()

    async def opened(self, subscription: Subscription) -> None:
        pass

    async def closed(self, subscription: Subscription, reason: Any) -> None:
        pass

    async def deliver(self, subscription: Subscription, items: Sequence[Item]) -> None:
        for item in items:
            if isinstance(item, Message) and item.data["state"] in ("confirmed", "failed"):
                if item.data["state"] == "confirmed":
                    self.confirmed += 1
                else:
                    self.failed += 1
                if self.confirmed + self.failed >= self.expected:
                    self.all_done.set()


async def measure(data: Path, args: argparse.Namespace) -> tuple[Outcomes, float, float]:
    hub = Hub(queue_size=args.orders * 4)
    job_store = SQLiteJobStore(data / "jobs.db")
    order_store = OrderStore(data / "orders.db")
    registry = TaskRegistry()
    jobs = JobsService(job_store, registry)
    orders = OrdersService(
        order_store, SimulatedGateway(latency=0), publish=hub.publish, enqueue=jobs.enqueue_task
    )  # each step enqueues the next
    orders.register_tasks(registry)

    tree = Supervisor("bench")
    tree.add("hub", hub, grace=1)
    tree.add("job_store", job_store, grace=1)
    tree.add("order_store", order_store, grace=1)
    notify = notify_for(hub_publisher(hub), None, registry)  # the server's: job events to jobs.{id}
    runner = JobRunner(job_store, registry, concurrency=args.concurrency, notify=notify)
    tree.add("job_runner", runner, grace=2)
    outcomes = Outcomes(args.orders)
    async with trio.open_nursery() as nursery:
        await nursery.start(tree.run)
        await order_store.set_stock(SKU, 10**9)
        await hub.subscribe("customers.*", outcomes)
        body = {
            "customer": "bench",
            "currency": "EUR",
            "items": [{"sku": SKU, "quantity": 1, "unit_price": 250}],
        }
        numbers = iter(range(args.orders))
        wall, cpu = time.perf_counter(), time.process_time()

        async def placer() -> None:
            for n in numbers:
                await orders.place(body, idempotency_key=f"bench-{n}")

        async with trio.open_nursery() as placers:
            for _ in range(args.inflight):
                placers.start_soon(placer)
        with trio.fail_after(120):
            await outcomes.all_done.wait()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        tree.shutdown()
    return outcomes, wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--inflight", type=int, default=256, help="orders placed at once")
    parser.add_argument("--concurrency", type=int, default=64, help="jobs the runner runs at once")
    parser.add_argument("--core", type=int, default=0, help="the core to run on")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {args.core})  # with its store threads
    tune_gc(Settings().gc_threshold)  # as `canopy serve` does
    with tempfile.TemporaryDirectory(prefix="canopy-bench-pipeline-") as tmp:
        outcomes, wall, cpu = trio.run(measure, Path(tmp), args)
    print(
        f"bench/orders_pipeline.py --orders {args.orders} --inflight {args.inflight} "
        f"--concurrency {args.concurrency}"
    )
    print(f"orders confirmed  {outcomes.confirmed:>8}   {outcomes.confirmed / wall:>9.0f}/s")
    print(f"orders failed     {outcomes.failed:>8}")
    print(f"CPU per order     {cpu / args.orders * 1e6:>8.0f} µs   ({cpu / wall:.2f} of a core)")


if __name__ == "__main__":
    main()
