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

__all__ = ["DuplicateTask", "TaskRegistry", "TaskSpec", "UnknownQueue", "UnknownTask"]

TaskFunction = Callable[..., Awaitable[Any]]


class UnknownTask(LookupError):
    """No task is registered under that name (an enqueue of it is refused)."""


class UnknownQueue(ValueError):
    """No task of the registry runs on that queue, nor was it declared: a job put
    there would never run (an enqueue of it is refused)."""

    def __init__(self, queue: str, known: list[str]) -> None:
        super().__init__(f"queue: no runner takes jobs from {queue!r} (queues: {', '.join(known)})")
        self.queue = queue


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
        self._queues: dict[str, int | None] = {"default": None}

    def queue(self, name: str, *, concurrency: int | None = None) -> None:
        """Declare queue ``name``, and how many of its jobs a process runs at once
        (None: the runner's default). Each queue has a runner of its own, so the jobs
        of one (slow calls to a payment gateway, say) never take the others' turns,
        and a queue of CPU-heavy jobs can be held to a few at a time."""
        if not name:
            raise ValueError("a queue's name must not be empty")
        if concurrency is not None and concurrency < 1:
            raise ValueError("a queue's concurrency must be at least 1")
        if self._queues.get(name) not in (None, concurrency):
            raise ValueError(f"queue {name!r} is declared already, with another concurrency")
        self._queues[name] = concurrency

    def queues(self) -> dict[str, int | None]:
        """Every queue a runner must take jobs from: ``default``, those declared, and
        each task's; with its concurrency (None: the runner's default)."""
        return dict(self._queues)

    @staticmethod
    def queue_of(task: str, queue: str | None = None, concurrency: int | None = None) -> str:
        """The queue a task declared with these options runs on: the one it names, else
        a queue of its own (named after it) if it sets a concurrency, else ``default``."""
        if queue is not None:
            return queue
        return task if concurrency is not None else "default"

    def check_queue(self, name: str) -> None:
        if name not in self._queues:
            raise UnknownQueue(name, sorted(self._queues))

    def task(
        self,
        name: str,
        *,
        queue: str | None = None,
        priority: int = 0,
        timeout: float = 300.0,
        retry: RetryPolicy | None = None,
        events: bool = True,
        concurrency: int | None = None,
    ) -> Callable[[TaskFunction], TaskFunction]:
        """Register an async function as the task ``name``; returns it unchanged.

        ``concurrency`` holds the task to that many jobs at once in a process (a
        CPU-heavy task says ``concurrency=1``): its jobs then run on a queue of their
        own, named after the task, with a runner of its own, so they never take the
        turns of other tasks' jobs and others never take theirs. With ``queue`` as
        well, that queue is held to ``concurrency``, with every task on it."""
        if timeout <= 0:
            raise ValueError("a task's timeout must be positive")
        queue = self.queue_of(name, queue, concurrency)
        if concurrency is not None:
            self.queue(queue, concurrency=concurrency)  # checks it, refuses a clash

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
            self._queues.setdefault(queue, None)
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
