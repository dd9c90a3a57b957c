"""An order and its lifecycle.

    pending --reserve--> reserved --charge--> paid --confirm--> confirmed
       |                    |
       +--out of stock------+--declined, or the gateway stayed away--> failed (reason)

A failed charge releases the reservation first (compensation), so a failed order
never holds stock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from canopy.nurseries import sortable_id, wall_time

from .._invalid import InvalidInput, field_of

__all__ = ["InvalidOrder", "NewOrder", "Order", "OrderItem", "OrderState", "validate_order"]

Currency = Literal["CHF", "EUR", "GBP", "JPY", "USD"]
CURRENCIES = frozenset(get_args(Currency))
MAX_ITEMS = 100


class OrderItem(BaseModel):
    """One line of an order. Strict, as JSON is: ``"5"`` is not 5, nor ``true`` 1."""

    model_config = ConfigDict(strict=True)

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=10_000)
    unit_price: int = Field(ge=0, le=100_000_000, description="whole minor units (cents)")


class NewOrder(BaseModel):
    """What ``POST /orders`` takes: the one statement of it, which ``validate_order``
    checks (for the route and for embedders alike) and the OpenAPI document shows."""

    model_config = ConfigDict(strict=True)

    customer: str = Field(
        pattern=r"^[A-Za-z0-9_\-:@]{1,100}$",
        description="1-100 letters, digits and _-:@ (it names a topic segment)",
    )
    currency: Currency
    items: list[OrderItem] = Field(min_length=1, max_length=MAX_ITEMS)


class OrderState(enum.Enum):
    PENDING = "pending"
    RESERVED = "reserved"
    PAID = "paid"
    CONFIRMED = "confirmed"
    FAILED = "failed"


@dataclass(frozen=True)
class Order:
    customer: str
    currency: str
    items: list[dict[str, Any]]
    total: int  # in minor units
    idempotency_key: str
    id: str = field(default_factory=sortable_id)  # time first: the indexes grow at their end
    state: OrderState = OrderState.PENDING
    reason: str | None = None
    created_at: float = field(default_factory=wall_time)
    updated_at: float = field(default_factory=wall_time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer": self.customer,
            "currency": self.currency,
            "items": self.items,
            "total": self.total,
            "state": self.state.value,
            "reason": self.reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class InvalidOrder(InvalidInput):
    """An order field that is refused."""


def validate_order(body: Any) -> tuple[str, str, list[dict[str, Any]], int]:
    """(customer, currency, items, total) from a request body; InvalidOrder names the
    first field that is wrong. What a schema cannot say is checked after it: a SKU
    twice in one order."""
    try:
        order = NewOrder.model_validate(body)
    except ValidationError as exc:
        raise InvalidOrder(*field_of(exc)) from None
    seen: set[str] = set()
    for index, item in enumerate(order.items):
        if item.sku in seen:
            raise InvalidOrder(
                f"items[{index}].sku", f"{item.sku!r} appears twice; sum the quantities"
            )
        seen.add(item.sku)
    lines = [item.model_dump() for item in order.items]
    total = sum(item.quantity * item.unit_price for item in order.items)
    return order.customer, order.currency, lines, total
