"""Bounds that shed load instead of queueing it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ._errors import Overloaded

__all__ = ["InflightLimit"]


class InflightLimit:
    """A non-blocking bound on concurrent work.

    A server that queues requests it cannot serve soon only turns overload into
    timeouts for everyone; refusing at once lets the client retry elsewhere.
    No awaiting is involved, so entering a slot costs a comparison.
    """

    def __init__(self, limit: int, *, retry_after: float = 1.0) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.retry_after = retry_after
        self._inflight = 0

    @property
    def inflight(self) -> int:
        return self._inflight

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the body; raise :class:`Overloaded` if none is free."""
        if self._inflight >= self.limit:
            raise Overloaded(self.limit, self.retry_after)
        self._inflight += 1
        try:
            yield
        finally:
            self._inflight -= 1
