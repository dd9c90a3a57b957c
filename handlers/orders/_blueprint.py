"""The orders API over :class:`OrdersService` (docs/API.md, "Orders")."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, request

from .._errors import ApiError
from ._model import InvalidOrder
from ._service import OrderConflict, OrdersService
from ._store import OrderStoreError

__all__ = ["create_blueprint"]

MAX_LIST = 1000


async def _store_call(call: Any) -> Any:
    try:
        return await call
    except OrderStoreError as exc:
        raise ApiError(503, "store_unavailable", f"the order store failed: {exc}") from None


def create_blueprint(service: OrdersService) -> Blueprint:
    blueprint = Blueprint("orders", __name__)

    @blueprint.post("/orders")
    async def place() -> Any:
        key = request.headers.get("Idempotency-Key", "")
        if not 0 < len(key) <= 200:
            raise ApiError(
                422,
                "invalid_field",
                "Idempotency-Key: a header of 1-200 characters is required",
                field="Idempotency-Key",
            )
        body = await request.get_json(force=True, silent=True)
        if body is None:
            raise ApiError(400, "invalid_json", "the body must be a JSON object")
        try:
            order, created = await _store_call(service.place(body, key))
        except InvalidOrder as exc:
            raise ApiError(422, "invalid_field", str(exc), field=exc.field) from None
        except OrderConflict as exc:
            raise ApiError(
                409, "idempotency_conflict", str(exc), order_id=exc.existing.id
            ) from None
        headers = {"Location": f"/orders/{order.id}"}
        return order.to_dict(), 202 if created else 200, headers

    @blueprint.get("/orders/<order_id>")
    async def get(order_id: str) -> Any:
        order = await _store_call(service.get(order_id))
        if order is None:
            raise ApiError(404, "not_found", f"no order {order_id}")
        return order.to_dict()

    @blueprint.get("/orders")
    async def by_customer() -> Any:
        customer = request.args.get("customer", "")
        if not customer:
            raise ApiError(422, "invalid_field", "customer: required", field="customer")
        limit = request.args.get("limit", "100")
        if not limit.isdigit() or not 0 < int(limit) <= MAX_LIST:
            raise ApiError(422, "invalid_field", f"limit: 1-{MAX_LIST}", field="limit")
        orders = await _store_call(service.by_customer(customer, int(limit)))
        return {"orders": [order.to_dict() for order in orders]}

    @blueprint.put("/stock/<sku>")
    async def set_stock(sku: str) -> Any:
        body = await request.get_json(force=True, silent=True)
        available = body.get("available") if isinstance(body, dict) else None
        if not isinstance(available, int) or isinstance(available, bool) or available < 0:
            raise ApiError(
                422, "invalid_field", "available: a whole number >= 0", field="available"
            )
        await _store_call(service.store.set_stock(sku, available))
        return {"sku": sku, "available": available}

    @blueprint.get("/stock/<sku>")
    async def get_stock(sku: str) -> Any:
        available = await _store_call(service.store.stock(sku))
        if available is None:
            raise ApiError(404, "not_found", f"no stock of {sku}")
        return {"sku": sku, "available": available}

    return blueprint
