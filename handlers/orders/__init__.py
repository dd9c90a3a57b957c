"""Orders and payments: a pure-Trio service (:class:`OrdersService`, usable from any
``trio.run`` program with a job runner) and a thin Quart blueprint over it.

Placing an order is idempotent by key; the order then runs as jobs (reserve stock,
charge, confirm), with compensation when a charge fails and a charge's exactly-once
effect guarded by the charges table and the gateway's idempotency key. See
``_service`` for the pipeline and ``_store`` for the invariants the schema holds.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from ._gateway import GatewayUnavailable, PaymentDeclined, PaymentGateway, SimulatedGateway
from ._model import InvalidOrder, NewOrder, Order, OrderItem, OrderState, validate_order
from ._service import ATTEMPT_KEY, STEP_RETRY, OrderConflict, OrdersService
from ._store import OrderStore, OrderStoreError, OutOfStock

if TYPE_CHECKING:  # create_blueprint imports Quart: only when asked for
    from ._blueprint import create_blueprint

__all__ = [
    "ATTEMPT_KEY",
    "STEP_RETRY",
    "GatewayUnavailable",
    "InvalidOrder",
    "NewOrder",
    "Order",
    "OrderConflict",
    "OrderItem",
    "OrderState",
    "OrderStore",
    "OrderStoreError",
    "OrdersService",
    "OutOfStock",
    "PaymentDeclined",
    "PaymentGateway",
    "SimulatedGateway",
    "create_blueprint",
    "validate_order",
]

__getattr__, __dir__ = lazy_attributes(__name__, {"create_blueprint": "._blueprint"})
