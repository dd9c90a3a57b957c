"""A refused input, the same shape in every service: which field, and what is wrong with it.

Pure Python (the services raise it without any web layer); the blueprints turn it
into 422 ``invalid_field`` naming ``field``. Each service raises its own subclass
(``InvalidOrder``, ``InvalidField``, ``InvalidAlert``), so a caller can tell whose
check refused.
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["InvalidInput", "field_of"]


class InvalidInput(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def field_of(error: ValidationError) -> tuple[str, str]:
    """(the first failing field, as ``items[0].quantity``; what is wrong with it)."""
    first = error.errors()[0]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    return path.lstrip(".") or "body", first["msg"]
