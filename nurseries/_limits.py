"""Bounds that shed load instead of queueing it."""

from __future__ import annotations

from types import TracebackType

from ._errors import Overloaded

__all__ = ["InflightLimit"]


class InflightLimit:
    """A non-blocking bound on concurrent work: ``with limit:`` holds one slot.

    A server that queues requests it cannot serve soon only turns overload into
    timeouts for everyone; refusing at once (:class:`Overloaded`) lets the client
    retry elsewhere. No awaiting is involved, so entering costs a comparison; the
    limit is its own context manager because it sits on every request's path.
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

    def __enter__(self) -> None:
        if self._inflight >= self.limit:
            raise Overloaded(self.limit, self.retry_after)
        self._inflight += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._inflight -= 1
