"""Declaring tasks: a name, the function, and the defaults its jobs start with."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._wall_clock import wall_time
from ._job import Job, _with_fields, new_job_id
from ._retry import RetryPolicy
from ._state import JobState

__all__ = ["DuplicateTask", "TaskRegistry", "TaskSpec", "UnknownTask"]

TaskFunction = Callable[..., Awaitable[Any]]


class UnknownTask(LookupError):
    """No task is registered under that name (an enqueue of it is refused)."""


class DuplicateTask(ValueError):
    """A second task under a name taken already."""

    def __init__(self, name: str) -> None:
        super().__init__(f"task {name!r} is already registered")
        self.name = name


@dataclass(frozen=True)
class TaskSpec:
    name: str
    function: TaskFunction
    queue: str = "default"
    priority: int = 0
    timeout: float = 300.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    takes_context: bool = False  # declared as f(args, ctx): receives a JobContext
    # Whether its jobs' events (started, progress, outcome) are worth publishing to
    # watchers (the server's ``jobs.{id}`` topics). A step of a pipeline that
    # announces its own progress says no: its events would only duplicate that, and
    # cost a topic per job. The runner's ``notify`` hears them either way (metrics).
    events: bool = True

    def new_job(
        self,
        args: dict[str, Any],
        *,
        run_at: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
        idempotency_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> Job:
        """A job of this task with its declared defaults, or the ones given in their
        place; scheduled if ``run_at`` is later.

        Built with every field given and without ``Job.__init__``, which sets each of
        the twenty fields through ``object.__setattr__`` (frozen): one per enqueue.
        """
        now = wall_time()
        run_at = now if run_at is None else run_at
        return _with_fields(
            {
                "task": self.name,
                "args": args,
                "id": new_job_id(),
                "queue": self.queue if queue is None else queue,
                "priority": self.priority if priority is None else priority,
                "state": JobState.SCHEDULED if run_at > now else JobState.QUEUED,
                "attempts": 0,
                "max_attempts": self.retry.max_attempts if max_attempts is None else max_attempts,
                "timeout": self.timeout if timeout is None else timeout,
                "run_at": run_at,
                "lease_owner": None,
                "lease_expires": None,
                "idempotency_key": idempotency_key,
                "result": None,
                "error": None,
                "traceback": None,
                "progress": None,
                "headers": headers,
                "created_at": now,
                "updated_at": now,
            }
        )


class TaskRegistry:
    """Tasks by name. Explicit instances, no module-level registry: pass it in."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def task(
        self,
        name: str,
        *,
        queue: str = "default",
        priority: int = 0,
        timeout: float = 300.0,
        retry: RetryPolicy | None = None,
        events: bool = True,
    ) -> Callable[[TaskFunction], TaskFunction]:
        """Register an async function as the task ``name``; returns it unchanged."""
        if timeout <= 0:
            raise ValueError("a task's timeout must be positive")

        def register(function: TaskFunction) -> TaskFunction:
            if not inspect.iscoroutinefunction(function):
                raise TypeError(f"task {name!r} must be an async function")
            if name in self._specs:
                raise DuplicateTask(name)
            takes_context = len(inspect.signature(function).parameters) >= 2
            spec = TaskSpec(
                name,
                function,
                queue,
                priority,
                timeout,
                retry or RetryPolicy(),
                takes_context,
                events,
            )
            self._specs[name] = spec
            return function

        return register

    def get(self, name: str) -> TaskSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownTask(name) from None

    def publishes_events(self, name: str) -> bool:
        """Whether jobs of ``name`` publish their events; an unknown task's do (its
        dead letter is news)."""
        spec = self._specs.get(name)
        return spec is None or spec.events

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self._specs.values())
