"""How a handler declares per-route behaviour that the server enforces."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["DEADLINE_ATTRIBUTE", "deadline"]

DEADLINE_ATTRIBUTE = "canopy_deadline"
F = TypeVar("F", bound=Callable[..., object])


def deadline(seconds: float) -> Callable[[F], F]:
    """Give a route its own deadline instead of the server's default.

    The server runs every request in a cancel scope with this deadline and answers
    504 when it passes; everything the view awaited, sub-calls included, is cancelled.
    Apply it *below* the route decorator, so the route registers the marked view.
    """
    if not seconds > 0:
        raise ValueError("a deadline must be positive")

    def mark(view: F) -> F:
        setattr(view, DEADLINE_ATTRIBUTE, float(seconds))
        return view

    return mark
