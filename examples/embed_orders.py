"""The orders service, its job runner and the fan-out hub in a plain ``trio.run``
program: no web app, no server, no HTTP. It stocks a product, places an order, and
prints each state change as the hub delivers it, until the order is confirmed.

(Importing ``handlers`` still imports Quart, for the blueprints that sit beside the
services; nothing of it runs here.)

    python examples/embed_orders.py [DATA_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from canopy.handlers.jobs import JobsService
from canopy.handlers.orders import OrdersService, OrderStore, SimulatedGateway
from canopy.nurseries import Supervisor
from canopy.nurseries.fanout import Hub, Item, Message, Subscription
from canopy.nurseries.jobs import JobRunner, SQLiteJobStore, TaskRegistry


class Printer:
    """A hub sink: prints each message, and notes when the order is confirmed."""

    def __init__(self) -> None:
        self.confirmed = trio.Event()

    async def opened(self, subscription: Subscription) -> None:
        pass

    async def deliver(self, subscription: Subscription, items: Sequence[Item]) -> None:
        for item in items:
            if isinstance(item, Message):
                print(f"{item.topic} #{item.offset}: {item.data['state']}", flush=True)
                if item.data["state"] == "confirmed":
                    self.confirmed.set()

    async def closed(self, subscription: Subscription, reason: Any) -> None:
        pass


async def main(data: Path) -> None:
    hub = Hub()
    job_store = SQLiteJobStore(data / "jobs.db")
    order_store = OrderStore(data / "orders.db")
    registry = TaskRegistry()
    jobs = JobsService(job_store, registry)
    orders = OrdersService(
        order_store, SimulatedGateway(), publish=hub.publish, enqueue=jobs.enqueue_task
    )  # each step enqueues the next
    orders.register_tasks(registry)

    # The same tree the server builds, without the web layer: started in this order,
    # stopped in reverse.
    tree = Supervisor("embedded")
    tree.add("hub", hub, grace=1)
    tree.add("job_store", job_store, grace=1)
    tree.add("order_store", order_store, grace=1)
    tree.add("job_runner", JobRunner(job_store, registry), grace=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(tree.run)
        printer = Printer()
        await order_store.set_stock("apple", 10)
        body = {
            "customer": "alice",
            "currency": "EUR",
            "items": [{"sku": "apple", "quantity": 2, "unit_price": 150}],
        }
        await hub.subscribe("customers.alice.orders", printer)
        order, _ = await orders.place(body, idempotency_key="embed-1")
        with trio.fail_after(10):
            await printer.confirmed.wait()
        print(f"order {order.id}: {(await orders.get(order.id)).state.value}")  # type: ignore[union-attr]
        print(f"apple left: {await order_store.stock('apple')}")
        tree.shutdown()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trio.run(main, Path(tmp))
