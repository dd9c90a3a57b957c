"""Errors raised by Canopy's structured-concurrency core.

The hierarchy, so callers can catch exactly what they mean::

    CanopyError
    ├── Overloaded        an in-flight bound refused new work (shed load, retry later)
    └── SupervisorGaveUp  a child failed more often than its restart intensity allows,
                          or failed to start; raised by the supervisor after it has
                          stopped its remaining children in order
"""

from __future__ import annotations

__all__ = ["CanopyError", "Overloaded", "SupervisorGaveUp"]


class CanopyError(Exception):
    """Base class for every error Canopy raises on purpose."""


class Overloaded(CanopyError):
    """Raised instead of queueing when a bound on concurrent work is full."""

    def __init__(self, limit: int, retry_after: float = 1.0) -> None:
        super().__init__(f"at capacity: {limit} in flight")
        self.limit = limit
        self.retry_after = retry_after


class SupervisorGaveUp(CanopyError):
    """A supervised child could not be kept running; the supervisor failed upward."""

    def __init__(self, supervisor: str, child: str, reason: str) -> None:
        super().__init__(f"supervisor {supervisor!r} gave up on {child!r}: {reason}")
        self.supervisor = supervisor
        self.child = child
        self.reason = reason
