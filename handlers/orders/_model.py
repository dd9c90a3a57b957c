"""An order and its lifecycle.

    pending --reserve--> reserved --charge--> paid --confirm--> confirmed
       |                    |
       +--out of stock------+--declined, or the gateway stayed away--> failed (reason)

A failed charge releases the reservation first (compensation), so a failed order
never holds stock.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass, field
from typing import Any

from canopy.nurseries import sortable_id

from .._invalid import InvalidInput

__all__ = ["InvalidOrder", "Order", "OrderState", "validate_order"]

_CUSTOMER = re.compile(r"[A-Za-z0-9_\-:@]{1,100}")
CURRENCIES = frozenset({"EUR", "USD", "GBP", "CHF", "JPY"})
MAX_ITEMS = 100


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
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

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
    first field that is wrong."""
    if not isinstance(body, dict):
        raise InvalidOrder("body", "must be a JSON object")
    customer = body.get("customer")
    if not isinstance(customer, str) or not _CUSTOMER.fullmatch(customer):
        raise InvalidOrder(
            "customer", "must be 1-100 letters, digits and _-:@ (it names a topic segment)"
        )
    currency = body.get("currency")
    if currency not in CURRENCIES:
        raise InvalidOrder("currency", f"must be one of {', '.join(sorted(CURRENCIES))}")
    items = body.get("items")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_ITEMS:
        raise InvalidOrder("items", f"must be a list of 1-{MAX_ITEMS} items")
    clean: dict[str, dict[str, Any]] = {}
    for index, item in enumerate(items):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise InvalidOrder(where, "must be an object with sku, quantity and unit_price")
        sku, quantity, price = item.get("sku"), item.get("quantity"), item.get("unit_price")
        if not isinstance(sku, str) or not 0 < len(sku) <= 64:
            raise InvalidOrder(f"{where}.sku", "must be a string of 1-64 characters")
        if not isinstance(quantity, int) or not _whole(quantity) or not 0 < quantity <= 10_000:
            raise InvalidOrder(f"{where}.quantity", "must be a whole number from 1 to 10000")
        if not isinstance(price, int) or not _whole(price) or not 0 <= price <= 100_000_000:
            raise InvalidOrder(f"{where}.unit_price", "must be whole minor units, 0-100000000")
        if sku in clean:
            raise InvalidOrder(f"{where}.sku", f"{sku!r} appears twice; sum the quantities")
        clean[sku] = {"sku": sku, "quantity": quantity, "unit_price": price}
    lines = list(clean.values())
    return customer, currency, lines, sum(i["quantity"] * i["unit_price"] for i in lines)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
