"""A refused input, the same shape in every service: which field, and what is wrong with it.

Pure Python (the services raise it without any web layer); the blueprints turn it
into 422 ``invalid_field`` naming ``field``. Each service raises its own subclass
(``InvalidOrder``, ``InvalidField``, ``InvalidAlert``), so a caller can tell whose
check refused.
"""

from __future__ import annotations

__all__ = ["InvalidInput"]


class InvalidInput(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
