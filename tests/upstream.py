"""Pinning upstream code that Canopy overrides or relies on: a function named by its
dotted path, and the digest of its source that a test holds it to."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import Any

__all__ = ["digest", "resolve"]


def resolve(dotted: str) -> Any:
    """``package.module.Class.attr`` (or ``package.module.function``), as defined there:
    an attribute of a class is read from the class itself, not inherited."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:-1]:
            obj = getattr(obj, name)
        return vars(obj)[parts[-1]] if isinstance(obj, type) else getattr(obj, parts[-1])
    raise LookupError(dotted)


def digest(obj: Any) -> str:
    """The first 16 hex digits of the sha256 of a function's (or property's) source."""
    if isinstance(obj, property):
        obj = obj.fget
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]
