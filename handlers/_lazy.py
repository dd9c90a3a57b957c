"""Lazy attributes for a package (PEP 562), so that embedding a service costs no web stack.

``canopy.handlers.orders.OrdersService`` must import in a plain Trio program without Quart,
Hypercorn or werkzeug; only ``create_blueprint`` (and the web-only modules) need them.
A package lists those names here, and each is imported the first time it is read.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, attributes: Mapping[str, str], modules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name in ``attributes``
    comes from the module it maps to (relative to the package), each of ``modules`` is
    a submodule."""
    where = dict(attributes)
    submodules = frozenset(modules)
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        elif name in where:
            value = getattr(importlib.import_module(where[name], package), name)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value  # once: the next read is an ordinary attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where, *submodules})

    return __getattr__, __dir__
