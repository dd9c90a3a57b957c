"""Canopy's capabilities: each a pure-Trio service plus a thin Quart blueprint over it."""

from . import dashboard, demo, health, jobs, orders, tasks, topics
from ._errors import ApiError, error_body
from ._routes import DEADLINE_ATTRIBUTE, deadline

__all__ = [
    "DEADLINE_ATTRIBUTE",
    "ApiError",
    "dashboard",
    "deadline",
    "demo",
    "error_body",
    "health",
    "jobs",
    "orders",
    "tasks",
    "topics",
]
