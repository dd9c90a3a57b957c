"""Orders against a real server (and the service in-process): validation, idempotent
placing, the pipeline as jobs, compensation, exactly-once charges, stock that never
goes negative, and every state change published."""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import trio
import trio.testing

import canopy
from canopy import capabilities, reference
from canopy.handlers.jobs import JobsService
from canopy.handlers.orders import Order, OrdersService, OrderState, OrderStore, SimulatedGateway
from canopy.handlers.topics import TokenIssuer
from canopy.handlers.topics.client import TopicMessage
from canopy.nurseries.jobs import Job, JobContext, JobRunner, SQLiteJobStore, TaskRegistry
from canopy.testing import serve_app
from tests.processes import running_server, running_worker, write_config

SECRET = "orders-test-secret-long-enough-for-hs256"
ENV = {"CANOPY_ACCESS_LOG": "false", "CANOPY_TOPICS_SECRET": SECRET}


def order(customer: str = "c1", quantity: int = 1, sku: str = "apple") -> dict[str, Any]:
    return {
        "customer": customer,
        "currency": "EUR",
        "items": [{"sku": sku, "quantity": quantity, "unit_price": 250}],
    }


async def settled(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    with trio.fail_after(20):
        while True:
            body = (await client.get(f"/orders/{order_id}")).json()
            if body["state"] in ("confirmed", "failed"):
                return body  # type: ignore[no-any-return]
            await trio.sleep(0.05)


async def test_placing_validates_is_idempotent_and_runs_to_confirmed() -> None:
    async with serve_app(orders_app(topics=True), topics_secret=SECRET) as served:
        client = served.http
        assert (await client.put("/stock/apple", json={"available": 10})).status_code == 200
        missing = await client.post("/orders", json=order())
        assert missing.status_code == 422 and missing.json()["field"] == "Idempotency-Key"
        bad = order()
        bad["items"][0]["quantity"] = 0
        refused = await client.post("/orders", json=bad, headers={"Idempotency-Key": "k0"})
        assert refused.status_code == 422
        assert refused.json()["field"] == "items[0].quantity"
        garbled = await client.post("/orders", content=b"{nope", headers={"Idempotency-Key": "k0"})
        assert garbled.status_code == 400

        token = TokenIssuer(SECRET).issue("watcher", subscribe=["customers.c1.orders"])
        events: list[str] = []
        async with (
            served.topics(token) as topics,
            topics.subscribe("customers.c1.orders") as subscription,
        ):
            placed = await client.post(
                "/orders", json=order(quantity=3), headers={"Idempotency-Key": "k1"}
            )
            assert placed.status_code == 202 and placed.json()["state"] == "pending"
            assert placed.json()["total"] == 750
            done = await settled(client, placed.json()["id"])
            assert done["state"] == "confirmed"
            with trio.fail_after(5):
                async for event in subscription:
                    assert isinstance(event, TopicMessage)
                    events.append(event.data["state"])
                    if event.data["state"] == "confirmed":
                        break
        assert events == ["pending", "reserved", "paid", "confirmed"]
        assert (await client.get("/stock/apple")).json()["available"] == 7

        again = await client.post(
            "/orders", json=order(quantity=3), headers={"Idempotency-Key": "k1"}
        )
        assert again.status_code == 200 and again.json()["id"] == placed.json()["id"]
        other = await client.post(
            "/orders", json=order(quantity=4), headers={"Idempotency-Key": "k1"}
        )
        assert other.status_code == 409 and other.json()["order_id"] == placed.json()["id"]
        listed = (await client.get("/orders", params={"customer": "c1"})).json()["orders"]
        assert [o["id"] for o in listed] == [placed.json()["id"]]


async def place_many(client: httpx.AsyncClient, count: int, sku: str) -> list[str]:
    ids: list[str] = []
    limit = trio.CapacityLimiter(100)

    async def place(n: int) -> None:
        async with limit:
            response = await client.post(
                "/orders", json=order(f"c{n}", sku=sku), headers={"Idempotency-Key": f"{sku}{n}"}
            )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(place, n)
    return ids


def charges_per_order(data_dir: Path) -> dict[str, int]:
    with sqlite3.connect(data_dir / "orders.db") as db:
        return dict(db.execute("SELECT order_id, COUNT(*) FROM charges GROUP BY order_id"))


async def test_500_concurrent_orders_for_100_in_stock(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path, env=ENV) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await client.put("/stock/pear", json={"available": 100})
            ids = await place_many(client, 500, "pear")
            states = [(await settled(client, order_id))["state"] for order_id in ids]
            assert states.count("confirmed") == 100 and states.count("failed") == 400
            failed = (await client.get(f"/orders/{ids[states.index('failed')]}")).json()
            assert failed["reason"] == "not enough stock of 'pear'"
            assert (await client.get("/stock/pear")).json()["available"] == 0
        assert await server.stop() == 0
    charges = charges_per_order(tmp_path / "var")
    assert len(charges) == 100 and set(charges.values()) == {1}  # no double charge


async def test_sigkilled_workers_neither_lose_nor_double_charge_an_order(tmp_path: Path) -> None:
    write_config(tmp_path)
    env = {**ENV, "CANOPY_JOB_LEASE": "1"}
    rng = random.Random(7)
    async with running_server(tmp_path, env={**env, "CANOPY_RUN_JOBS": "false"}) as web:
        base = f"http://127.0.0.1:{web.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            await client.put("/stock/pear", json={"available": 100})
            ids = await place_many(client, 500, "pear")
            for _ in range(3):
                async with running_worker(tmp_path, env) as worker:
                    await trio.sleep(rng.uniform(0.3, 1.0))
                    worker.signal(signal.SIGKILL)
                    assert await worker.wait() == -signal.SIGKILL
            async with running_worker(tmp_path, env) as worker:
                states = [(await settled(client, order_id))["state"] for order_id in ids]
                assert await worker.stop() == 0
            assert states.count("confirmed") == 100 and states.count("failed") == 400
            assert (await client.get("/stock/pear")).json()["available"] == 0
        assert await web.stop() == 0
    charges = charges_per_order(tmp_path / "var")
    assert len(charges) == 100 and set(charges.values()) == {1}


def test_order_ids_begin_with_the_time() -> None:
    """The orders, reservations and charges indexes, and the step jobs' idempotency
    keys, grow at their end (see canopy.nurseries.sortable_id)."""
    now_ms = time.time_ns() // 1_000_000
    order_id = Order("c1", "EUR", [], 0, "k").id
    assert 0 <= int(order_id[:12], 16) - now_ms < 1000


def orders_app(*, topics: bool = False) -> canopy.App:
    """An app with the orders capability (and ``/ws`` if ``topics``), as a user's app
    would include it."""
    app = canopy.App("shop")
    app.include(reference.orders)
    app.allow_anonymous("orders:admin")  # the tests set stock without a token
    if topics:
        app.include(capabilities.topics_api)
    return app


async def test_a_declined_charge_releases_the_stock() -> None:
    declining = reference.orders.settings(payment_decline_rate=1.0)  # type: ignore[misc]
    async with serve_app(orders_app(), sections={"orders": declining}) as served:
        client = served.http
        await client.put("/stock/plum", json={"available": 5})
        placed = await client.post(
            "/orders", json=order(sku="plum", quantity=2), headers={"Idempotency-Key": "d1"}
        )
        done = await settled(client, placed.json()["id"])
        assert done["state"] == "failed" and done["reason"].startswith("payment declined")
        assert (await client.get("/stock/plum")).json()["available"] == 5


async def test_transient_gateway_failures_are_retried_and_charge_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # On the jumping clock: the charge steps' backoffs pass at once.
    failing = reference.orders.settings(payment_failure_rate=0.5)  # type: ignore[misc]
    async with serve_app(orders_app(), sections={"orders": failing}) as served:
        client = served.http
        await client.put("/stock/fig", json={"available": 100})
        ids = []
        for n in range(10):
            placed = await client.post(
                "/orders", json=order(sku="fig"), headers={"Idempotency-Key": f"t{n}"}
            )
            ids.append(placed.json()["id"])
        states = [(await settled(client, order_id))["state"] for order_id in ids]
        charges = charges_per_order(served.data_dir)
    confirmed = [i for i, s in zip(ids, states, strict=True) if s == "confirmed"]
    assert len(confirmed) >= 8  # five attempts each at a 50 % failure rate
    assert all(charges[i] == 1 for i in confirmed)
    assert set(charges) == set(confirmed)  # failed ones were never charged


async def test_a_charge_repeated_after_a_crash_charges_once(tmp_path: Path, nursery: Any) -> None:
    store = OrderStore(tmp_path / "orders.db")
    await nursery.start(store.run)
    gateway = SimulatedGateway()
    steps: list[str] = []

    async def enqueue(task: str, args: dict[str, Any], key: str) -> None:
        steps.append(task)

    service = OrdersService(store, gateway, enqueue=enqueue)
    await store.set_stock("kiwi", 3)
    placed, _ = await service.place(order(sku="kiwi"), "x1")
    await service._reserve({"order_id": placed.id})
    # The first run of the charge step reached the gateway, then its process died
    # before recording the charge:
    await gateway.charge(placed.total, "EUR", f"{placed.id}:charge")
    job = Job("orders.charge", {"order_id": placed.id}, attempts=2)
    reference = await service._charge({"order_id": placed.id}, JobContext(job, None, "w"))  # type: ignore[arg-type]
    assert len(gateway.charged) == 1 and gateway.calls == 2
    assert reference == next(iter(gateway.charged.values()))[2]
    assert await store.charges(placed.id) == 1
    again = await service._charge({"order_id": placed.id}, JobContext(job, None, "w"))  # type: ignore[arg-type]
    assert again == "already paid" and gateway.calls == 2
    assert (await store.get(placed.id)).state is OrderState.PAID  # type: ignore[union-attr]
    assert steps == ["orders.reserve", "orders.charge", "orders.confirm", "orders.confirm"]


async def test_two_charge_steps_at_once_charge_and_record_once(
    tmp_path: Path, nursery: Any
) -> None:
    """A lease that expires while the gateway is slow gives the charge step to a second
    runner while the first still runs it: both reach the gateway and both record, and
    there must be one charge (the gateway's key, and the charges table's key)."""
    store = OrderStore(tmp_path / "orders.db")
    await nursery.start(store.run)
    gateway = SimulatedGateway(latency=0.05)

    async def enqueue(task: str, args: dict[str, Any], key: str) -> None:
        pass

    service = OrdersService(store, gateway, enqueue=enqueue)
    await store.set_stock("fig", 1)
    placed, _ = await service.place(order(sku="fig"), "twice")
    await service._reserve({"order_id": placed.id})
    references: list[str] = []

    async def charge_step(attempt: int) -> None:
        job = Job("orders.charge", {"order_id": placed.id}, attempts=attempt)
        context = JobContext(job, None, f"runner-{attempt}")  # type: ignore[arg-type]
        references.append(await service._charge({"order_id": placed.id}, context))

    async with trio.open_nursery() as both:
        both.start_soon(charge_step, 1)
        both.start_soon(charge_step, 2)
    assert gateway.calls == 2 and len(gateway.charged) == 1
    assert await store.charges(placed.id) == 1
    assert (await store.get(placed.id)).state is OrderState.PAID  # type: ignore[union-attr]
    assert references[0] == references[1] or "already paid" in references


async def test_a_charge_step_whose_lease_expires_runs_twice_and_charges_once(
    tmp_path: Path, nursery: Any
) -> None:
    """Under two runners: one is stalled mid-charge (its heartbeats stopped, as a frozen
    process's do), its lease expires while the gateway is slow, and the other runner's
    sweeper gives the charge step to the other, which charges too. Once both steps have
    recorded: one charge, and the order went on to confirmed."""
    jobs_db = tmp_path / "jobs.db"
    stalled_store, other_store = SQLiteJobStore(jobs_db), SQLiteJobStore(jobs_db)
    order_store = OrderStore(tmp_path / "orders.db")
    for store in (stalled_store, other_store, order_store):
        await nursery.start(store.run)

    async def no_heartbeat(owner: str, job_ids: Any, lease: float) -> set[str]:
        return set()

    stalled_store.heartbeat = no_heartbeat  # type: ignore[method-assign]
    claim, finish_and_claim = stalled_store.claim, stalled_store.finish_and_claim

    async def claim_until_frozen(queue: str, owner: str, limit: int, lease: float) -> Any:
        return [] if gateway.calls else await claim(queue, owner, limit, lease)

    async def finish_until_frozen(
        jobs: Any, owner: str, queue: str, limit: int, lease: float
    ) -> Any:
        return await finish_and_claim(jobs, owner, queue, 0 if gateway.calls else limit, lease)

    # Frozen once it is charging: it claims nothing more.
    stalled_store.claim = claim_until_frozen  # type: ignore[method-assign]
    stalled_store.finish_and_claim = finish_until_frozen  # type: ignore[method-assign]
    recorded = trio.Semaphore(0)
    record_charge = order_store.record_charge

    async def counted(*args: Any) -> Order | None:
        try:
            return await record_charge(*args)
        finally:
            recorded.release()

    order_store.record_charge = counted  # type: ignore[method-assign]
    gateway = SimulatedGateway(latency=1.5)
    registry = TaskRegistry()
    jobs = JobsService(other_store, registry)
    service = OrdersService(order_store, gateway, enqueue=jobs.enqueue_task)
    service.register_tasks(registry)
    fast = {"lease": 0.3, "poll_interval": 0.02}
    await nursery.start(JobRunner(stalled_store, registry, sweep_interval=3600, **fast).run)
    await order_store.set_stock("plum", 1)
    placed, _ = await service.place(order(sku="plum"), "two-runners")
    with trio.fail_after(10):
        while True:  # the stalled runner is charging: the gateway holds it
            if gateway.calls == 1:
                break
            await trio.sleep(0.02)
        await nursery.start(JobRunner(other_store, registry, sweep_interval=0.1, **fast).run)
        for _ in range(2):  # both steps charged and recorded
            await recorded.acquire()
        final = await _settled_in(order_store, placed.id)
    assert gateway.calls == 2 and len(gateway.charged) == 1  # charged twice, once in effect
    assert await order_store.charges(placed.id) == 1
    assert final.state is OrderState.CONFIRMED


async def _settled_in(store: OrderStore, order_id: str) -> Order:
    while True:
        found = await store.get(order_id)
        if found is not None and found.state in (OrderState.CONFIRMED, OrderState.FAILED):
            return found
        await trio.sleep(0.05)
