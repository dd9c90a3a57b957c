"""The order store's retention, on autojump_clock: an order that ended goes with its
reservations, charges and idempotency key once ended for ``retention``; one still
under way stays, however old; without a retention every order stays."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from canopy.handlers.orders import OrderStore, SimulatedGateway
from canopy.handlers.orders._model import Order, OrderState
from canopy.nurseries import PRUNE_BATCH, follow_trio_clock


def order(key: str) -> Order:
    items = [{"sku": "apple", "quantity": 1, "unit_price": 100}]
    return Order("ann", "EUR", items, 100, key)


async def place(store: OrderStore, key: str, end: OrderState | None) -> str:
    placed, _ = await store.insert(order(key), f"request {key}")
    if end is None:
        return placed.id
    assert await store.reserve(placed.id) is not None
    if end is OrderState.FAILED:
        assert await store.release(placed.id, "declined") is not None
    else:
        assert await store.record_charge(placed.id, "a1", 100, "EUR", "ch_1") is not None
        assert await store.move(placed.id, OrderState.PAID, OrderState.CONFIRMED) is not None
    return placed.id


async def test_ended_orders_go_after_the_retention_with_what_hangs_on_them(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with follow_trio_clock():
        async with trio.open_nursery() as nursery:
            store = OrderStore(tmp_path / "orders.db", retention=3600)
            await nursery.start(store.run)
            await store.set_stock("apple", 10_000)
            confirmed = await place(store, "k1", OrderState.CONFIRMED)
            failed = await place(store, "k2", OrderState.FAILED)
            pending = await place(store, "k3", None)
            await trio.sleep(3500)
            assert await store.get(confirmed) is not None and await store.get(failed) is not None
            await trio.sleep(100 + 360)  # past the retention, and a pruner's round
            assert await store.get(confirmed) is None and await store.get(failed) is None
            assert await store.charges(confirmed) == 0  # its charge went with it
            assert (await store.get(pending)).state is OrderState.PENDING  # type: ignore[union-attr]
            again, _ = await store.insert(order("k1"), "request k1, a new one")
            assert again.id != confirmed  # the key was free again
            # Many go a write at a time, every one of them.
            for n in range(PRUNE_BATCH + 10):
                await place(store, f"bulk-{n}", OrderState.CONFIRMED)
            await trio.sleep(3600 + 360)
            assert store.pruned == 2 + PRUNE_BATCH + 10
            assert await store.prune() == 0
            nursery.cancel_scope.cancel()


async def test_without_a_retention_every_order_stays(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with follow_trio_clock():
        async with trio.open_nursery() as nursery:
            store = OrderStore(tmp_path / "orders.db")
            await nursery.start(store.run)
            await store.set_stock("apple", 10)
            confirmed = await place(store, "k1", OrderState.CONFIRMED)
            await trio.sleep(10 * 365 * 86400)
            assert await store.prune() == 0 and await store.get(confirmed) is not None
            nursery.cancel_scope.cancel()


async def test_the_simulated_gateway_forgets_charges_past_its_memory(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gateway = SimulatedGateway(remember=600.0)
    first = await gateway.charge(100, "EUR", "order-1:charge")
    assert await gateway.charge(100, "EUR", "order-1:charge") == first  # a retry
    await trio.sleep(300)
    await gateway.charge(100, "EUR", "order-2:charge")
    assert set(gateway.charged) == {"order-1:charge", "order-2:charge"}
    await trio.sleep(301)
    await gateway.charge(100, "EUR", "order-3:charge")  # order-1's is 601 s old
    assert set(gateway.charged) == {"order-2:charge", "order-3:charge"}
