"""The orders API over :class:`OrdersService` (docs/API.md, "Orders")."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, request
from quart_schema import document_request, document_response

from .._errors import ApiError, store_unavailable
from .._requests import bad_parameter, caller_grants, header, int_arg, read_json, require
from .._schema import ErrorBody, body
from ..grants import TokenIssuer
from ._model import InvalidOrder, NewOrder, OrderItem, OrderState
from ._service import OrderConflict, OrdersService
from ._store import OrderStoreError

__all__ = ["create_blueprint"]

MAX_LIST = 1000
MAX_STOCK = 2**53  # exact in JSON and in SQLite's INTEGER


async def _store_call(call: Any) -> Any:
    try:
        return await call
    except OrderStoreError as exc:
        raise store_unavailable("order", exc) from None


class OrderOut(BaseModel):
    id: str
    customer: str
    currency: str
    items: list[OrderItem]
    total: int
    state: OrderState
    reason: str | None
    created_at: float
    updated_at: float


class Orders(BaseModel):
    orders: list[OrderOut]


class Stock(BaseModel):
    sku: str
    available: int = Field(ge=0, le=MAX_STOCK)


class StockIn(BaseModel):
    model_config = ConfigDict(strict=True)

    available: int = Field(ge=0, le=MAX_STOCK)


def create_blueprint(service: OrdersService, issuer: TokenIssuer | None = None) -> Blueprint:
    """Orders and stock. Placing and reading orders is open; setting stock takes the
    grant ``orders:admin`` (the caller's token, or ``issuer``'s anonymous grants)."""
    issuer = issuer if issuer is not None else TokenIssuer()
    blueprint = Blueprint("orders", __name__)

    @blueprint.post("/orders")
    @document_request(NewOrder)
    @document_response(OrderOut, 202)
    @document_response(ErrorBody, 409)
    async def place() -> Any:
        key = header(b"idempotency-key") or ""
        if not 0 < len(key) <= 200:
            raise ApiError(
                422,
                "invalid_field",
                "Idempotency-Key: a header of 1-200 characters is required",
                field="Idempotency-Key",
            )
        body = await read_json()
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
    @document_response(OrderOut, 200)
    @document_response(ErrorBody, 404)
    async def get(order_id: str) -> Any:
        order = await _store_call(service.get(order_id))
        if order is None:
            raise ApiError(404, "not_found", f"no order {order_id}")
        return order.to_dict()

    @blueprint.get("/orders")
    @document_response(Orders, 200)
    async def by_customer() -> Any:
        customer = request.args.get("customer", "")
        if not customer:
            raise bad_parameter("customer", "required")
        limit = int_arg("limit", 100, 1, MAX_LIST)
        orders = await _store_call(service.by_customer(customer, limit))
        return {"orders": [order.to_dict() for order in orders]}

    @blueprint.put("/stock/<sku>")
    @body(StockIn, auth=lambda: require(caller_grants(issuer), "orders:admin"))
    @document_response(Stock, 200)
    async def set_stock(sku: str, data: StockIn, who: None) -> Any:
        await _store_call(service.store.set_stock(sku, data.available))
        return {"sku": sku, "available": data.available}

    @blueprint.get("/stock/<sku>")
    @document_response(Stock, 200)
    async def get_stock(sku: str) -> Any:
        available = await _store_call(service.store.stock(sku))
        if available is None:
            raise ApiError(404, "not_found", f"no stock of {sku}")
        return {"sku": sku, "available": available}

    return blueprint
