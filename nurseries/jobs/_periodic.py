"""Periodic jobs: exactly one job per tick, however many processes run the schedule.

Ticks are aligned to the epoch (a schedule of every 60 s ticks at :00 of each
minute in every process), and each tick's enqueue carries the idempotency key
``periodic:<name>:<tick>``, so the store accepts one job per tick and turns the
others into harmless repeats. Interval schedules only for now.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ._job import Job
from ._registry import TaskRegistry
from ._store import JobStore, JobStoreError

__all__ = ["Periodic", "PeriodicScheduler", "next_tick", "tick_key"]

log = logging.getLogger("canopy.jobs")


@dataclass(frozen=True)
class Periodic:
    name: str
    task: str
    every: float
    args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.every > 0:
            raise ValueError("a periodic job's interval must be positive")


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
    clock: Callable[[], float] = time.time

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for schedule in self.schedules:
            self.registry.get(schedule.task)  # refuse to start with an unknown task
        async with trio.open_nursery() as nursery:
            for schedule in self.schedules:
                nursery.start_soon(self._follow, schedule)
            task_status.started()

    async def _follow(self, schedule: Periodic) -> None:
        while True:
            tick = next_tick(schedule.every, self.clock())
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
