"""Periodic jobs: exactly one job per tick, however many processes run the schedule.

A schedule is an interval (``every=60``) or a cron expression (``cron="0 3 * * *"``,
five fields, in UTC, evaluated by ``cronsim``). Ticks are the same in every process:
an interval's are aligned to the epoch (every 60 s ticks at :00 of each minute), a
cron expression's are its matching minutes. Each tick's enqueue carries the
idempotency key ``periodic:<name>:<tick>``, so the store accepts one job per tick and
turns the others into harmless repeats.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import trio
from cronsim import CronSim, CronSimError

from .._wall_clock import wall_time
from ._job import Job
from ._registry import TaskRegistry
from ._store import JobStore, JobStoreError

__all__ = ["Periodic", "PeriodicScheduler", "next_tick", "tick_key"]

log = logging.getLogger("canopy.jobs")


@dataclass(frozen=True)
class Periodic:
    """Enqueue ``task`` with ``args`` on each tick: every ``every`` seconds, or at
    each minute matching ``cron`` (UTC). Exactly one of the two."""

    name: str
    task: str
    every: float | None = None
    args: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ValueError(f"periodic {self.name!r}: give either every or cron")
        if self.every is not None and not 0 < self.every < math.inf:
            raise ValueError(f"periodic {self.name!r}: the interval must be positive")
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime.now(UTC))
            except CronSimError as exc:
                raise ValueError(f"periodic {self.name!r}: cron {self.cron!r}: {exc}") from None

    def next_tick(self, now: float) -> float:
        """The first tick strictly after ``now`` (a Unix time)."""
        if self.every is not None:
            return next_tick(self.every, now)
        assert self.cron is not None
        return next(CronSim(self.cron, datetime.fromtimestamp(now, UTC))).timestamp()


def next_tick(every: float, now: float) -> float:
    """The first tick strictly after ``now``, on the grid of multiples of ``every``."""
    return (math.floor(now / every) + 1) * every


def tick_key(schedule: Periodic, tick: float) -> str:
    return f"periodic:{schedule.name}:{round(tick * 1000)}"


@dataclass(eq=False)
class PeriodicScheduler:
    """A supervised service enqueuing each schedule's ticks as they come."""

    store: JobStore
    registry: TaskRegistry
    schedules: list[Periodic]
    clock: Callable[[], float] = wall_time

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for schedule in self.schedules:
            self.registry.get(schedule.task)  # refuse to start with an unknown task
        async with trio.open_nursery() as nursery:
            for schedule in self.schedules:
                nursery.start_soon(self._follow, schedule)
            task_status.started()

    async def _follow(self, schedule: Periodic) -> None:
        while True:
            tick = schedule.next_tick(self.clock())
            await trio.sleep(max(0.0, tick - self.clock()))
            await self.enqueue_tick(schedule, tick)

    async def enqueue_tick(self, schedule: Periodic, tick: float) -> tuple[Job, bool] | None:
        spec = self.registry.get(schedule.task)
        job = spec.new_job(schedule.args, run_at=tick, idempotency_key=tick_key(schedule, tick))
        try:
            return await self.store.enqueue(job)
        except JobStoreError as exc:
            log.warning("periodic %s: tick %s not enqueued: %s", schedule.name, tick, exc)
            return None
