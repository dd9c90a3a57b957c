"""Canopy's capabilities: each a pure-Trio service plus a thin Quart blueprint over it.

Everything here is imported when first used, so that a Trio program embedding a
service (``from canopy.handlers.orders import OrdersService``) imports no web stack.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

if TYPE_CHECKING:
    from . import dashboard, demo, grants, health, jobs, orders, support, tasks, ticker, topics
    from ._errors import ApiError, error_body
    from ._headers import bearer_token_of, first_header
    from ._routes import DEADLINE_ATTRIBUTE, deadline

__all__ = [
    "DEADLINE_ATTRIBUTE",
    "ApiError",
    "bearer_token_of",
    "dashboard",
    "deadline",
    "demo",
    "error_body",
    "first_header",
    "grants",
    "health",
    "jobs",
    "orders",
    "support",
    "tasks",
    "ticker",
    "topics",
]

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "ApiError": "._errors",
        "error_body": "._errors",
        "bearer_token_of": "._headers",
        "first_header": "._headers",
        "DEADLINE_ATTRIBUTE": "._routes",
        "deadline": "._routes",
    },
    modules=(
        "dashboard",
        "demo",
        "grants",
        "health",
        "jobs",
        "orders",
        "support",
        "tasks",
        "ticker",
        "topics",
    ),
)
