"""Orders as a pure-Trio service: placing one, and the pipeline that runs it as jobs.

    POST /orders -> place(): stored (idempotent by key), then the job orders.reserve
    orders.reserve   take the stock (all items or none)       -> orders.charge
    orders.charge    charge the gateway, exactly once         -> orders.confirm
    orders.confirm   mark it confirmed

Each step is a job of the runner, so it is retried with the runner's backoff on a
transient error, and it survives a crash of the process running it. Each step
enqueues the next with an idempotency key (``order:{id}:{step}``), and each step
checks the order's state first, so a step that runs twice (a retry after a crash
between its write and its next enqueue) does its work once and still moves on.

Exactly once: the charge uses the idempotency key ``{order id}:charge`` at the
gateway, and is recorded in the charges table under (order id, "charge"); a retried
charge step finds the record, or gets the gateway's original answer for the key.

Compensation: a declined charge, or a gateway still unavailable on the step's last
attempt, releases the reservation and fails the order with the reason. Every state
change is published to ``orders.{id}`` and ``customers.{customer}.orders``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from canopy.nurseries.jobs import JobContext, RetryPolicy, TaskRegistry

from ._gateway import GatewayUnavailable, PaymentDeclined, PaymentGateway
from ._model import Order, OrderState, validate_order
from ._store import OrderStore, OutOfStock

__all__ = ["ATTEMPT_KEY", "STEP_RETRY", "OrderConflict", "OrdersService"]

ATTEMPT_KEY = "charge"
STEP_RETRY = RetryPolicy(max_attempts=5, base=0.2, cap=5.0)

Enqueue = Callable[[str, dict[str, Any], str], Awaitable[Any]]  # task, args, key
Publish = Callable[[str, dict[str, Any]], Awaitable[Any]]  # topic, data


class OrderConflict(Exception):
    def __init__(self, existing: Order) -> None:
        super().__init__("the idempotency key was used for a different order")
        self.existing = existing


class OrdersService:
    def __init__(
        self,
        store: OrderStore,
        gateway: PaymentGateway,
        *,
        publish: Publish | None = None,
        enqueue: Enqueue | None = None,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.publish = publish
        self.enqueue = enqueue  # the job queue: each step enqueues the next

    # -- placing and reading -----------------------------------------------------------

    async def place(self, body: Any, idempotency_key: str) -> tuple[Order, bool]:
        """(the order, whether it is new). The same key with the same body returns the
        original; with another body, OrderConflict. InvalidOrder names a bad field."""
        customer, currency, items, total = validate_order(body)
        request = json.dumps([customer, currency, items], sort_keys=True)
        order = Order(customer, currency, items, total, idempotency_key)
        stored, stored_request = await self.store.insert(order, request)
        created = stored.id == order.id
        if not created and stored_request != request:
            raise OrderConflict(stored)
        if created:
            await self._announce(stored)
        if stored.state is OrderState.PENDING:  # new, or a repeat of one that never started
            await self._next("reserve", stored)
        return stored, created

    async def get(self, order_id: str) -> Order | None:
        return await self.store.get(order_id)

    async def topic_state(self, topic: str) -> dict[str, Any] | None:
        """``orders.{id}``'s first message when a subscriber opens it: the order as its
        events show it (the hub keeps no log of an order nobody watches)."""
        order = await self.store.get(topic.removeprefix("orders."))
        return None if order is None else order.to_dict()

    @staticmethod
    def topic_version(event: Any) -> float:
        """Orders an order's events: its states only move forward. An event that does
        not say sorts after everything."""
        state = event.get("state") if isinstance(event, dict) else None
        return _RANKS.get(state, math.inf) if isinstance(state, str) else math.inf

    async def by_customer(self, customer: str, limit: int = 100) -> list[Order]:
        return await self.store.by_customer(customer, limit)

    # -- the pipeline --------------------------------------------------------------------

    def register_tasks(self, registry: TaskRegistry) -> None:
        # The steps publish no job events: the order's own topics tell its progress.
        task = registry.task
        task("orders.reserve", retry=STEP_RETRY, timeout=30, events=False)(self._reserve)
        task("orders.charge", retry=STEP_RETRY, timeout=60, events=False)(self._charge)
        task("orders.confirm", retry=STEP_RETRY, timeout=30, events=False)(self._confirm)

    async def _reserve(self, args: dict[str, Any]) -> str:
        order_id = args["order_id"]
        try:
            order = await self.store.reserve(order_id)
        except OutOfStock as exc:
            failed = await self.store.release(order_id, str(exc))
            if failed is not None:
                await self._announce(failed)
            return "out of stock"
        if order is None:  # ran before: carry on from where the order is
            order = await self._existing(order_id)
            if order.state is not OrderState.RESERVED:
                return f"already {order.state.value}"
        else:
            await self._announce(order)
        await self._next("charge", order)
        return "reserved"

    async def _charge(self, args: dict[str, Any], ctx: JobContext) -> str:
        found, reference = await self.store.with_charge(args["order_id"], ATTEMPT_KEY)
        order = _found(args["order_id"], found)
        if order.state is OrderState.PAID:
            await self._next("confirm", order)
            return "already paid"
        if order.state is not OrderState.RESERVED:
            return f"already {order.state.value}"
        if reference is None:
            try:
                reference = await self.gateway.charge(
                    order.total, order.currency, f"{order.id}:{ATTEMPT_KEY}"
                )
            except PaymentDeclined as exc:
                return await self._compensate(order, f"payment declined: {exc}")
            except GatewayUnavailable as exc:
                if ctx.job.attempts < ctx.job.max_attempts:
                    raise  # retried with the runner's backoff
                return await self._compensate(order, f"payment gateway unavailable: {exc}")
        paid = await self.store.record_charge(
            order.id, ATTEMPT_KEY, order.total, order.currency, reference
        )
        assert paid is not None
        await self._announce(paid)
        await self._next("confirm", paid)
        return reference

    async def _confirm(self, args: dict[str, Any]) -> str:
        confirmed = await self.store.move(args["order_id"], OrderState.PAID, OrderState.CONFIRMED)
        if confirmed is not None:
            await self._announce(confirmed)
        return "confirmed"

    async def _compensate(self, order: Order, reason: str) -> str:
        failed = await self.store.release(order.id, reason)
        if failed is not None:
            await self._announce(failed)
        return reason

    async def _existing(self, order_id: str) -> Order:
        return _found(order_id, await self.store.get(order_id))

    async def _next(self, step: str, order: Order) -> None:
        if self.enqueue is None:
            raise RuntimeError("OrdersService.enqueue is not set: orders need the job queue")
        await self.enqueue(f"orders.{step}", {"order_id": order.id}, f"order:{order.id}:{step}")

    async def _announce(self, order: Order) -> None:
        if self.publish is None:
            return
        event = order.to_dict()
        await self.publish(f"orders.{order.id}", event)
        await self.publish(f"customers.{order.customer}.orders", event)


_RANKS = {"pending": 0, "reserved": 1, "paid": 2, "confirmed": 3, "failed": 3}


def _found(order_id: str, order: Order | None) -> Order:
    if order is None:
        raise LookupError(f"no order {order_id}")  # a dead letter: nothing to do
    return order
