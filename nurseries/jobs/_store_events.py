"""What every job store tells the runners of its own process: jobs enqueued here, and
cancel requests for running jobs (``JobStore.on_enqueued``, ``on_cancel_requested``)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["StoreEvents"]


class StoreEvents:
    """A store's listeners; a store keeps one and hands its methods out."""

    def __init__(self) -> None:
        self._enqueued: list[Callable[[], None]] = []
        self._cancels: list[Callable[[str], None]] = []

    def on_enqueued(self, listener: Callable[[], None]) -> Callable[[], None]:
        self._enqueued.append(listener)
        return lambda: self._enqueued.remove(listener)

    def on_cancel_requested(self, listener: Callable[[str], None]) -> Callable[[], None]:
        self._cancels.append(listener)
        return lambda: self._cancels.remove(listener)

    def enqueued(self) -> None:
        for listener in list(self._enqueued):
            listener()

    def cancel_requested(self, job_id: str) -> None:
        for listener in list(self._cancels):
            listener(job_id)
