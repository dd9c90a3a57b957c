"""Deleting what has been kept long enough, a batch at a time: the pruner of each store
that has a retention (finished jobs, orders that ended)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from ._wall_clock import wall_time

__all__ = ["PRUNE_BATCH", "Pruner"]

log = logging.getLogger("canopy")

PRUNE_BATCH = 500  # rows deleted per transaction: other writers get the lock in between


class Pruner:
    """Deletes the rows a store has kept for longer than ``retention`` seconds.

    ``delete_batch(cutoff)`` deletes at most :data:`PRUNE_BATCH` rows older than the
    wall time ``cutoff`` in one transaction of the store's and says how many went; a
    round calls it until a batch comes back short. As a service, a round every tenth
    of the retention (at least every minute, at most every second).

    Error handling: a round that fails with one of ``errors`` (the store's own: a full
    disk, say) is logged as a warning, and the next round tries again."""

    def __init__(
        self,
        what: str,
        retention: float,
        delete_batch: Callable[[float], Awaitable[int]],
        errors: type[Exception] | tuple[type[Exception], ...],
    ) -> None:
        if not retention > 0:
            raise ValueError(f"the retention of {what} must be above 0")
        self.what = what
        self.retention = retention
        self.interval = min(60.0, max(1.0, retention / 10))
        self.pruned = 0  # rows deleted so far
        self._delete_batch = delete_batch
        self._errors = errors

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            try:
                await self.prune()
            except self._errors as exc:
                log.warning("pruning %s failed: %s", self.what, exc)

    async def prune(self) -> int:
        """One round now: how many rows went."""
        cutoff, deleted = wall_time() - self.retention, 0
        while True:
            batch = await self._delete_batch(cutoff)
            deleted += batch
            self.pruned += batch
            if batch < PRUNE_BATCH:
                return deleted
