"""What an app declares at import time, kept as data until it is assembled.

Nothing here runs or opens anything: a module that declares an app can be imported
by ``canopy serve``, ``canopy worker``, ``canopy jobs`` or a test alike, and each then
assembles what it needs (``_assemble``). A declaration that clashes with another is
refused as it is made, naming both, so the mistake points at its own line.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from canopy.nurseries import RestartPolicy
from canopy.nurseries.fanout import (
    SlowConsumerPolicy,
    Snapshot,
    TopicRule,
    Version,
    check_pattern,
)
from canopy.nurseries.jobs import Job, Periodic, TaskRegistry

__all__ = ["AppError", "Declared", "ServiceDecl", "Task", "TopicDecl", "where"]

TaskFunction = Callable[..., Awaitable[Any]]
ACCESS = ("token", "anyone")


class AppError(Exception):
    """A mistake in an app's declarations, found as it is declared or assembled."""


def where(function: Callable[..., Any]) -> str:
    """``shop.email (shop.py:12)``: how an error names a declaration."""
    code = getattr(function, "__code__", None)
    place = f" ({code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno})" if code else ""
    return f"{function.__module__}.{function.__qualname__}{place}"


Enqueue = Callable[..., Awaitable[Job]]  # app.jobs.enqueue


class Task:
    """A task declared with ``@app.task``: call it to run it here and now, or
    :meth:`enqueue` it as a durable job."""

    def __init__(
        self, name: str, function: TaskFunction, options: dict[str, Any], enqueue: Enqueue
    ) -> None:
        self._enqueue = enqueue
        self.name = name
        self.function = function
        self.options = options
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self.function(*args, **kwargs)

    async def enqueue(self, args: dict[str, Any] | None = None, **options: Any) -> Job:
        """As ``app.jobs.enqueue(task.name, args, **options)``."""
        return await self._enqueue(self.name, args, **options)

    @property
    def queue(self) -> str:
        """The queue its jobs go to unless an enqueue says otherwise."""
        return TaskRegistry.queue_of(
            self.name, self.options.get("queue"), self.options.get("concurrency")
        )

    def register(self, registry: TaskRegistry) -> None:
        registry.task(self.name, **self.options)(self.function)

    def __repr__(self) -> str:
        return f"<task {self.name} {where(self.function)}>"


@dataclass(frozen=True)
class TopicDecl:
    """``app.topics(pattern, ...)``: a rule for the topics it matches, and who may use
    them without a token."""

    rule: TopicRule
    has_size: bool
    has_ttl: bool
    publish: str
    subscribe: str
    on_demand: tuple[Snapshot, Version] | None = None  # see Hub.on_demand

    @classmethod
    def make(
        cls,
        pattern: str,
        policy: str,
        history: int | None,
        history_ttl: float | None,
        publish: str,
        subscribe: str,
    ) -> TopicDecl:
        for name, value in (("publish", publish), ("subscribe", subscribe)):
            if value not in ACCESS:
                raise AppError(f"topics {pattern!r}: {name} must be 'token' or 'anyone'")
        try:
            rule = TopicRule(
                check_pattern(pattern),
                SlowConsumerPolicy(policy),
                TopicRule.history_size if history is None else history,
                TopicRule.history_ttl if history_ttl is None else history_ttl,
            )
        except ValueError as exc:  # InvalidTopic is one
            raise AppError(f"topics {pattern!r}: {exc}") from None
        return cls(rule, history is not None, history_ttl is not None, publish, subscribe)

    def with_defaults(self, default: TopicRule) -> TopicRule:
        """The rule, its windows left unsaid taken from the configured defaults."""
        size = self.rule.history_size if self.has_size else default.history_size
        ttl = self.rule.history_ttl if self.has_ttl else default.history_ttl
        return TopicRule(self.rule.pattern, self.rule.policy, size, ttl)


@dataclass(frozen=True)
class ServiceDecl:
    """``@app.service``: a supervised child of the app's tree."""

    name: str
    function: Callable[..., Awaitable[Any]]
    restart: RestartPolicy
    grace: float
    worker: bool  # run in ``canopy worker`` too, for tasks that depend on it

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        """The start protocol: a function that takes ``task_status`` says when it is
        ready; one that does not is ready as soon as it is started."""
        if "task_status" in inspect.signature(self.function).parameters:
            await self.function(task_status=task_status)
        else:
            task_status.started()
            await self.function()


def _add_once(
    declared: dict[str, Any], kind: str, name: str, item: Any, function: Callable[..., Any]
) -> None:
    """Declare ``item`` under ``name`` once: an async function, not a name taken."""
    if not inspect.iscoroutinefunction(function):
        raise AppError(f"{kind} {name!r}: {where(function)} must be an async def")
    if name in declared:
        first = declared[name].function
        raise AppError(f"{kind} {name!r} is declared twice: {where(first)} and {where(function)}")
    declared[name] = item


@dataclass(eq=False)
class Declared:
    """Everything an app declared, in the order it was declared."""

    tasks: dict[str, Task] = field(default_factory=dict)
    periodic: list[Periodic] = field(default_factory=list)
    topics: list[TopicDecl] = field(default_factory=list)
    services: dict[str, ServiceDecl] = field(default_factory=dict)
    capabilities: list[Any] = field(default_factory=list)
    anonymous_operations: list[str] = field(default_factory=list)
    queues: dict[str, int] = field(default_factory=dict)  # name -> its concurrency

    def add_task(self, task: Task) -> None:
        _add_once(self.tasks, "task", task.name, task, task.function)

    def add_service(self, service: ServiceDecl) -> None:
        _add_once(self.services, "service", service.name, service, service.function)

    @staticmethod
    def schedule(
        name: str, cron: str | None, every: float | None, args: dict[str, Any]
    ) -> Periodic:
        """The schedule of the periodic task ``name`` (each tick enqueues it)."""
        if (cron is None) == (every is None):
            raise AppError(f"periodic {name!r}: give cron= or every=, one of them")
        try:
            return Periodic(name, name, every=every, args=args, cron=cron)
        except ValueError as exc:
            raise AppError(str(exc)) from None
