"""``canopy.App``: a user's application, declared in one module, served by ``canopy serve``.

Declaring and running are apart. Importing the module that makes an App declares
what it has: Quart's routes and blueprints, tasks, periodic jobs, topic rules,
supervised services, the capabilities it includes, and its own settings; nothing
runs and nothing is opened. :meth:`App.boot` assembles the supervision tree from
those declarations and the loaded settings, for what the process is for (serving,
a worker, the jobs CLI); serving the app runs the tree. Under ``canopy serve`` the
root nursery owns it; under Hypercorn's own worker, the app's lifespan does.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from canopy.handlers.grants import operation_grants
from canopy.handlers.jobs import JobRequest, JobsService
from canopy.nurseries import ACTIVE, RestartPolicy
from canopy.nurseries.fanout import Message, Snapshot, Version
from canopy.nurseries.jobs import TERMINAL, Job, RetryPolicy, TaskRegistry

from ..config._hypercorn import default_config_path
from ..config._settings import Settings, load_settings
from ..observe._logging import configure_logging
from ..pipeline._app import CanopyApp
from ..pipeline._quart import RouteCache
from ._assemble import assemble
from ._capability import Assembly, Mode
from ._declared import AppError, Declared, ServiceDecl, Task, TaskFunction, TopicDecl
from ._process import tune_gc

__all__ = ["App", "Capability", "Jobs", "Topics"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

# What Quart keeps of routes, blueprints, hooks and error handlers. Assembling adds
# Canopy's and the capabilities' own; assembling again (the next test serving one
# module's app) starts over from what the app itself declared.
_QUART_STATE = (
    "view_functions",
    "blueprints",
    "error_handler_spec",
    "before_request_funcs",
    "after_request_funcs",
    "teardown_request_funcs",
    "template_context_processors",
    "url_value_preprocessors",
    "url_default_functions",
    "before_websocket_funcs",
    "after_websocket_funcs",
    "teardown_websocket_funcs",
    "extensions",
    "websocket_sessions",
)


class Capability:
    """A slice of an application server (the jobs API, the topics endpoint, the orders
    service...) that an app takes whole with ``app.include(capability)``. Subclass it
    and override what it needs: ``declare`` runs when it is included (topic rules, who
    may subscribe), ``install`` when the app is assembled (services, tasks, routes)."""

    name: str = ""
    # A dataclass of ``canopy.setting`` fields: the section ``[canopy.<name>]`` and
    # ``CANOPY_<NAME>_*``, read and checked at start-up with Canopy's own settings.
    settings: type[Any] | None = None

    def declare(self, app: App) -> None:
        """When included: what the app must know before it is assembled."""

    def install(self, assembly: Assembly) -> None:
        """When the app is assembled: services, tasks and routes."""

    def __repr__(self) -> str:
        return f"<capability {self.name}>"


class App(CanopyApp):
    """A Quart-Trio app with Canopy's request pipeline, and what it runs besides.

    ``name`` names the app's settings section (``[canopy.<name>]``,
    ``CANOPY_<NAME>_*``, read into ``settings``, a dataclass of ``canopy.setting``
    fields) and its log lines.
    """

    def __init__(self, name: str, *, settings: type[Any] | None = None) -> None:
        if not _NAME.fullmatch(name):
            raise AppError(f"app name {name!r}: must be a letter, then letters, digits, _ or -")
        self.mode: Mode | None = None  # once assembled: for what
        self._rules: list[tuple[tuple[Any, ...], dict[str, Any]]] = []  # as declared
        self._declared_state: dict[str, Any] | None = None
        super().__init__(name)  # adds the static route: one of the app's own
        self.route_cache = RouteCache()
        self.settings_class = settings
        self.declared = Declared()
        self.jobs = Jobs(self)
        self.topics = Topics(self)
        self.before_serving(self._start_tree)
        self.after_serving(self._stop_tree)

    # -- declaring ---------------------------------------------------------------------

    def task(
        self,
        name: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 300.0,
        queue: str | None = None,
        priority: int = 0,
        events: bool = True,
        concurrency: int | None = None,
    ) -> Callable[[TaskFunction], Task]:
        """Declare a durable job's task: ``async def f(args)`` or ``f(args, ctx)`` (a
        ``JobContext``: its job, ``progress()``). ``timeout`` bounds each attempt;
        ``retry`` says how often and how soon a failed one runs again; ``events``
        publishes its jobs' progress and outcome to ``jobs.{id}``; ``concurrency``
        holds it to that many jobs at once per process, on a queue of its own (a
        CPU-heavy task says ``concurrency=1``)."""
        options: dict[str, Any] = {"queue": queue, "priority": priority, "timeout": timeout}
        options.update(retry=retry, events=events, concurrency=concurrency)
        try:
            TaskRegistry().task(name, **options)  # the options' own checks, now
        except ValueError as exc:
            raise AppError(f"task {name!r}: {exc}") from None
        if concurrency is not None and queue is not None and queue in self.declared.queues:
            raise AppError(
                f"task {name!r}: queue {queue!r} has its concurrency from app.queue already"
            )

        def declare(function: TaskFunction) -> Task:
            task = Task(name, function, options, self.jobs.enqueue)
            self.declared.add_task(task)
            return task

        return declare

    def queue(self, name: str, *, concurrency: int) -> None:
        """Declare a job queue whose jobs one process runs at most ``concurrency`` at a
        time (tasks name it: ``@app.task(..., queue=name)``). Every queue has a runner
        of its own, so a queue of slow or CPU-heavy jobs never holds back another's;
        queues not declared run up to ``CANOPY_JOB_CONCURRENCY`` at once."""
        try:
            TaskRegistry().queue(name, concurrency=concurrency)  # its checks, now
        except ValueError as exc:
            raise AppError(f"queue {name!r}: {exc}") from None
        if name in self.declared.queues:
            raise AppError(f"queue {name!r} is declared twice")
        for task in self.declared.tasks.values():
            if task.options.get("concurrency") is not None and task.queue == name:
                raise AppError(f"queue {name!r}: task {task.name!r} gives its concurrency already")
        self.declared.queues[name] = concurrency

    def periodic(
        self,
        name: str,
        *,
        cron: str | None = None,
        every: float | None = None,
        args: dict[str, Any] | None = None,
        **task_options: Any,
    ) -> Callable[[TaskFunction], Task]:
        """A task enqueued on each tick, every ``every`` seconds or at each minute
        matching ``cron`` (UTC): one job per tick, however many processes run it."""

        schedule = self.declared.schedule(name, cron, every, args or {})

        def declare(function: TaskFunction) -> Task:
            task = self.task(name, **task_options)(function)
            self.declared.periodic.append(schedule)
            return task

        return declare

    def service(
        self, name: str, *, restart: str = "permanent", grace: float = 5.0, worker: bool = False
    ) -> Callable[[TaskFunction], TaskFunction]:
        """A supervised child of the app's tree: ``async def f(*, task_status)`` calls
        ``task_status.started()`` once it can be depended on (or takes no argument, and
        is ready at once). ``restart``: permanent, transient or temporary; ``grace``:
        seconds it gets to stop; ``worker``: run it in ``canopy worker`` too."""
        try:
            policy = RestartPolicy(restart)
        except ValueError:
            raise AppError(
                f"service {name!r}: restart must be permanent, transient or temporary"
            ) from None

        def declare(function: TaskFunction) -> TaskFunction:
            self.declared.add_service(ServiceDecl(name, function, policy, grace, worker))
            return function

        return declare

    def allow_anonymous(self, *operations: str) -> None:
        """Let anyone who reaches the server do these operator ``operations`` without
        a token (``jobs:enqueue:<task pattern>``, ``jobs:admin``, ``orders:admin``). An
        app is closed by default; ``CANOPY_ANONYMOUS_OPERATIONS`` replaces this list,
        and the first log line of ``canopy serve`` says what is open."""
        if self.mode is not None:
            raise AppError("anonymous operations are declared before the app is assembled")
        try:
            self.declared.anonymous_operations.extend(operation_grants(list(operations)))
        except ValueError as exc:
            raise AppError(f"allow_anonymous: {exc}") from None

    def include(self, capability: Capability) -> None:
        """Take a capability whole: its services, tasks, routes and settings."""
        if not isinstance(capability, Capability):
            raise AppError(f"app.include takes a capability, not {capability!r}")
        if any(c.name == capability.name for c in self.declared.capabilities):
            raise AppError(f"capability {capability.name!r} is included twice")
        self.declared.capabilities.append(capability)
        capability.declare(self)

    def sections(self) -> dict[str, type[Any]]:
        """Settings sections by name: the app's own, and each capability's."""
        found = {c.name: c.settings for c in self.declared.capabilities if c.settings}
        if self.settings_class is not None:
            if self.name in found:
                raise AppError(f"the app and a capability both have settings {self.name!r}")
            found[self.name] = self.settings_class
        return found

    # -- running -----------------------------------------------------------------------

    @property
    def settings(self) -> Any:
        """The app's own settings section, as loaded (once the app is assembled)."""
        if self.settings_class is None:
            raise AppError(f"app {self.name!r} declares no settings (App(settings=...))")
        return self._runtime().settings.section(self.name, self.settings_class)

    def add_url_rule(self, *args: Any, **kwargs: Any) -> None:
        if self.mode is None and self._declared_state is None:  # the app's own
            self._rules.append((args, copy.copy(kwargs)))
        super().add_url_rule(*args, **kwargs)

    def boot(self, settings: Settings, *, mode: Mode = Mode.SERVE) -> App:
        """Assemble the tree from the declarations (nothing runs yet). An app whose
        tree has stopped (or never ran) may be assembled again, with new settings."""
        if self.mode is not None:
            if self.runtime.tree.state in ACTIVE:
                raise AppError(f"app {self.name!r} is running: stop it to assemble it again")
            self._forget_assembly()
        else:
            self._declared_state = {
                name: _containers(getattr(self, name))
                for name in _QUART_STATE
                if hasattr(self, name)
            }
        self.runtime = assemble(self, self.declared, settings, mode)
        self.mode = mode
        return self

    def _forget_assembly(self) -> None:
        """Back to what the app declared: Quart's state, and its routes alone."""
        assert self._declared_state is not None
        for name, value in self._declared_state.items():
            setattr(self, name, _containers(value))
        self.url_map = self.url_map_class(host_matching=self.url_map.host_matching)
        self.view_functions = {}
        for args, kwargs in self._rules:
            super().add_url_rule(*args, **copy.copy(kwargs))
        self.route_cache = RouteCache()
        self.mode = None

    def _runtime(self) -> Any:
        if self.mode is None:
            raise AppError(
                f"app {self.name!r} is not assembled yet: its jobs, topics and settings "
                "are there while it is served (in a view, a task or a service), or after "
                "app.boot(settings)"
            )
        return self.runtime

    async def _start_tree(self) -> None:
        # Under Hypercorn's own worker nothing assembled the app: its lifespan does,
        # from the same config file and environment as ``canopy serve``, and owns the
        # tree. Under ``canopy serve`` Canopy's root nursery owns it.
        if self.mode is None:
            self._boot_for_lifespan()
        if self.runtime.lifespan_owns_tree:
            await self.nursery.start(self.runtime.tree.run)

    def _boot_for_lifespan(self) -> None:
        settings = load_settings(default_config_path(), sections=self.sections())
        configure_logging(settings.log_level)
        settings.data_path.mkdir(parents=True, exist_ok=True)
        tune_gc(settings.gc_threshold)
        self.boot(settings)

    async def _stop_tree(self) -> None:
        if self.runtime.lifespan_owns_tree:
            self.runtime.tree.shutdown()
            await self.runtime.tree.wait_stopped()


def _containers(value: Any) -> Any:
    """A copy of the dicts, lists and sets in ``value``, sharing what they hold."""
    if isinstance(value, dict):
        out = copy.copy(value)  # a defaultdict keeps its factory
        for key, item in value.items():
            out[key] = _containers(item)
        return out
    if isinstance(value, list | set):
        return type(value)(_containers(item) for item in value)
    return value


class Jobs:
    """``app.jobs``: the app's durable job queue, from a view, a task or a service."""

    def __init__(self, app: App) -> None:
        self._app = app

    @property
    def service(self) -> JobsService:
        service: JobsService = self._app._runtime().jobs
        return service

    async def enqueue(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> Job:
        """A job of ``task``, once the store holds it durably. ``options``: any of
        ``idempotency_key`` (the same key gives back the first job), ``delay`` or
        ``run_at``, ``queue``, ``priority``, ``timeout``, ``max_attempts``. A bad one
        raises ValueError naming it; an unknown task, ``UnknownTask``."""
        body = {"task": task, "args": {} if args is None else args}
        body.update((name, value) for name, value in options.items() if value is not None)
        job, _created = await self.service.enqueue(JobRequest.parse(body))
        return job

    async def get(self, job_id: str) -> Job | None:
        return await self.service.store.get(job_id)

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a waiting job, or ask the process running it to cancel it."""
        return await self.service.store.cancel(job_id)

    async def wait(self, job_id: str) -> Job:
        """The job once it has finished: succeeded, failed for good or cancelled.
        Bound it where you call it (``with trio.fail_after(30):``). Any process may run
        the job, so this reads the store, at growing intervals up to half a second."""
        interval = 0.01
        while True:
            job = await self.get(job_id)
            if job is None:
                raise LookupError(f"no job {job_id}")
            if job.state in TERMINAL:
                return job
            await trio.sleep(interval)
            interval = min(interval * 2, 0.5)


class Topics:
    """``app.topics``: declare a rule for some topics (call it), or publish."""

    def __init__(self, app: App) -> None:
        self._app = app

    def __call__(
        self,
        pattern: str,
        *,
        policy: str = "disconnect",
        history: int | None = None,
        history_ttl: float | None = None,
        publish: str = "token",
        subscribe: str = "token",
        state: Snapshot | None = None,
        version: Version | None = None,
    ) -> None:
        """The topics ``pattern`` matches (``shop.orders.*``): what a subscriber that
        falls behind gets (``policy``: disconnect, drop_oldest or latest), how many
        messages and seconds a reconnecting client can resume over (default: the
        settings' history_size and history_ttl), and whether publishing and
        subscribing take a token or are open to ``anyone``.

        With ``state`` and ``version``, the topics are opened on demand: one per
        record whose every message is the record's whole state (an invoice's, a
        delivery's), kept nowhere until someone can hear it. ``await state(topic)``
        reads the record (None: no such record); ``version(data)`` orders a record's
        messages, older lower (docs/PROTOCOL.md)."""
        if self._app.mode is not None:
            raise AppError("topic rules are declared before the app is assembled")
        if (state is None) != (version is None):
            raise AppError(f"topics {pattern!r}: state and version go together")
        decl = TopicDecl.make(pattern, policy, history, history_ttl, publish, subscribe)
        if state is not None and version is not None:
            decl = replace(decl, on_demand=(state, version))
        self._app.declared.topics.append(decl)

    async def publish(self, topic: str, data: Any, *, key: str | None = None) -> Message:
        """Fan ``data`` (JSON) out to the topic's subscribers and keep it in its
        history; the message says its offset. ``HubError`` if the hub refuses it."""
        topics = self._app._runtime().topics
        if topics is None:
            raise AppError(
                "this worker has no hub to publish to: with CANOPY_BROKER=memory:// only "
                "the serving process's subscribers could hear it (use a Redis broker)"
            )
        message: Message = await topics.hub.publish(topic, data, key=key)
        return message
