"""The supervisor: runs named child services in one nursery, in order, and stops them in reverse.

Resource handling: the supervisor owns exactly one nursery. Each child runs in a
task of that nursery, inside its own ``CancelScope`` (``_Child.scope``); the
supervisor never starts a task anywhere else. Stopping a child is a deadline on
that scope: ``shutdown()`` asks a :class:`Drainable` child to finish, and whatever
is still running ``grace`` seconds later is cancelled.

Error handling: a child that raises is restarted according to its
:class:`RestartPolicy`, after a :class:`Backoff` delay, as long as the
:class:`RestartIntensity` allows. Past that the supervisor stops its other
children in reverse order and raises :class:`SupervisorGaveUp`, so the failure
travels up the tree. A child that fails on its *first* start fails the
supervisor's own start the same way.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from ._errors import SupervisorGaveUp
from ._restart import Backoff, RestartIntensity, RestartPolicy
from ._service import Drainable, Service
from ._state import ACTIVE, ServiceState, ServiceStatus

__all__ = ["ChildSpec", "Supervisor"]

log = logging.getLogger("canopy.supervisor")


@dataclass(frozen=True)
class ChildSpec:
    """How a supervisor runs one child."""

    name: str
    service: Service
    restart: RestartPolicy = RestartPolicy.PERMANENT
    grace: float = 5.0


@dataclass(eq=False)
class _Child:
    spec: ChildSpec
    state: ServiceState = ServiceState.STOPPED
    restart_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    restarts: int = 0
    last_error: str | None = None
    launched: bool = False
    stopping: bool = False
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)


class Supervisor:
    """A node of the supervision tree; itself a :class:`Service`, so supervisors nest."""

    def __init__(
        self,
        name: str,
        children: list[ChildSpec] | None = None,
        *,
        intensity: RestartIntensity | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.intensity = intensity or RestartIntensity()
        self.backoff = backoff or Backoff()
        self._children: list[_Child] = []
        self._state = ServiceState.STOPPED
        self._stop_requested = trio.Event()
        self._stopped = trio.Event()
        self._failure: tuple[str, BaseException | str] | None = None
        for spec in children or ():
            self._add_spec(spec)

    def add(
        self,
        name: str,
        service: Service,
        *,
        restart: RestartPolicy = RestartPolicy.PERMANENT,
        grace: float = 5.0,
    ) -> None:
        """Declare a child; children start in the order they were added."""
        self._add_spec(ChildSpec(name, service, restart, grace))

    def _add_spec(self, spec: ChildSpec) -> None:
        if self._state is not ServiceState.STOPPED or self._stop_requested.is_set():
            raise RuntimeError("children can only be added before the supervisor runs")
        if any(child.spec.name == spec.name for child in self._children):
            raise ValueError(f"duplicate child name {spec.name!r}")
        self._children.append(_Child(spec))

    @property
    def state(self) -> ServiceState:
        return self._state

    def status(self) -> ServiceStatus:
        return ServiceStatus(self.name, self._state, children=tuple(self._child_status()))

    def _child_status(self) -> list[ServiceStatus]:
        out = []
        for child in self._children:
            service = child.spec.service
            nested = service.status().children if isinstance(service, Supervisor) else ()
            out.append(
                ServiceStatus(
                    child.spec.name, child.state, child.restarts, child.last_error, nested
                )
            )
        return out

    def shutdown(self) -> None:
        """Begin the graceful stop: children stop in reverse order, each within its grace."""
        if self._state in (ServiceState.STARTING, ServiceState.RUNNING):
            self._state = ServiceState.STOPPING
        self._stop_requested.set()

    async def wait_stopped(self) -> None:
        """Wait until ``run`` has returned (or raised)."""
        await self._stopped.wait()

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        finally:
            self._stopped.set()

    async def _run(self, task_status: trio.TaskStatus[Any]) -> None:
        self._state = ServiceState.STARTING
        async with trio.open_nursery() as nursery:
            try:
                for child in self._children:
                    if self._stop_requested.is_set():
                        break
                    await nursery.start(self._supervise, child)
            except Exception as exc:  # a child failed its first start
                self._failure = (child.spec.name, exc)
            else:
                # Report started even when a stop came during start-up, so that a caller's
                # ``nursery.start`` returns; the stop then proceeds as usual.
                if not self._stop_requested.is_set():
                    self._state = ServiceState.RUNNING
                task_status.started(self)
                await self._stop_requested.wait()
            self._state = ServiceState.STOPPING
            await self._stop_all()
        self._finish()

    def _finish(self) -> None:
        if self._failure is None:
            self._state = ServiceState.STOPPED
            return
        self._state = ServiceState.FAILED
        child, cause = self._failure
        reason = cause if isinstance(cause, str) else _describe(cause)
        error = SupervisorGaveUp(self.name, child, reason)
        if isinstance(cause, BaseException):
            raise error from cause
        raise error

    async def _stop_all(self) -> None:
        for child in reversed(self._children):
            await self._stop_child(child)

    async def _stop_child(self, child: _Child) -> None:
        if not child.launched or child.done.is_set():
            return
        child.stopping = True
        service = child.spec.service
        if child.state is ServiceState.RUNNING and isinstance(service, Drainable):
            child.state = ServiceState.STOPPING
            service.shutdown()
        else:
            child.scope.cancel()
        child.scope.deadline = min(child.scope.deadline, trio.current_time() + child.spec.grace)
        await child.done.wait()

    async def _supervise(self, child: _Child, *, task_status: trio.TaskStatus[None]) -> None:
        """The child's whole life: start, watch, restart by policy, until stopped."""
        child.launched = True
        try:
            with child.scope:
                crashed = await self._run_once(child, task_status)
                while not child.stopping and child.spec.restart.should_restart(crashed=crashed):
                    if not await self._wait_before_restart(child):
                        break
                    crashed = await self._run_once(child, None)
        finally:
            if child.state in ACTIVE:
                child.state = ServiceState.STOPPED
            child.done.set()

    async def _run_once(self, child: _Child, task_status: trio.TaskStatus[None] | None) -> bool:
        """Run one incarnation of the child; return whether it crashed.

        A crash on the very first start is raised instead, failing the supervisor's start.
        """
        child.state = ServiceState.STARTING
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(child.spec.service.run)
                child.state = ServiceState.STOPPING if child.stopping else ServiceState.RUNNING
                if task_status is not None:
                    task_status.started()
                    task_status = None
        except Exception as exc:
            child.state = ServiceState.FAILED
            child.last_error = _describe(exc)
            if task_status is not None:
                raise
            log.error("service %s/%s crashed", self.name, child.spec.name, exc_info=exc)
            return True
        child.state = ServiceState.STOPPED
        return False

    async def _wait_before_restart(self, child: _Child) -> bool:
        """Sleep the backoff delay; False once the intensity is exhausted and we gave up."""
        now = trio.current_time()
        if not self.intensity.allows(child.restart_times, now):
            self._failure = (child.spec.name, child.last_error or "exited while it should run")
            child.state = ServiceState.FAILED
            self.shutdown()
            return False
        child.restart_times.append(now)
        child.restarts += 1
        child.state = ServiceState.RESTARTING
        await trio.sleep(self.backoff.delay(self.intensity.recent(child.restart_times, now)))
        return not child.stopping


def _describe(exc: BaseException) -> str:
    """The error as an operator wants to read it: a nursery's group of one, unwrapped."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return repr(exc)
