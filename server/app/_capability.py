"""What a capability is handed when the app that includes it is assembled.

A capability (``_application.Capability``) adds, as the app is assembled, its
services to the tree, its tasks to the registry and its routes to the app, through
the :class:`Assembly`; Canopy's own capabilities (``canopy.capabilities``,
``canopy.reference``) use nothing else, so a user's capability can do all they do.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quart import Blueprint

from canopy.handlers.jobs import JobsService
from canopy.handlers.topics import TopicsService
from canopy.nurseries import RepeatingFailure, RestartPolicy, Service, Supervisor
from canopy.nurseries.fanout import Hub, HubError, RelayClient, RelayUnavailable
from canopy.nurseries.jobs import TaskRegistry

from ..config._settings import Settings
from ._redis import RedisConnections

if TYPE_CHECKING:
    from ..pipeline._app import CanopyApp, Runtime

__all__ = ["Assembly", "Mode", "Publish", "hub_publisher", "relay_publisher"]

log = logging.getLogger("canopy.events")

Publish = Callable[[str, dict[str, Any]], Awaitable[None]]


class Mode(enum.Enum):
    """What the process assembling the app is for."""

    SERVE = "serve"  # canopy serve, Hypercorn's lifespan, canopy.testing: everything
    WORKER = "worker"  # canopy worker: the tasks, what they need, the runner, the schedules
    ADMIN = "admin"  # canopy jobs: the job store and the tasks' names; nothing else runs


@dataclass(eq=False)
class Assembly:
    """The app being assembled, as a capability sees it.

    Its services go into ``services`` (through :meth:`add_service`), in the order the
    capabilities were included: after the hub and the job store, which they may use,
    and before the job runner, so that a task finds what it needs running, and each
    is stopped before what it depends on."""

    app: CanopyApp
    settings: Settings
    mode: Mode
    services: Supervisor
    redis: RedisConnections
    jobs: JobsService
    registry: TaskRegistry
    topics: TopicsService | None  # None in a worker whose broker is its own memory
    runtime: Runtime  # the tree, the in-flight bound, the metrics (a serving process's)
    # Such a worker's way to the web tier's hub (nurseries/fanout/_relay.py).
    relay: RelayClient | None = None

    @property
    def serving(self) -> bool:
        return self.mode is Mode.SERVE

    def section(self, capability: Any) -> Any:
        """The capability's own settings, as loaded (defaults where none were)."""
        assert capability.settings is not None, f"{capability!r} declares no settings"
        return self.settings.section(capability.name, capability.settings)

    def add_service(
        self,
        name: str,
        service: Service,
        *,
        grace: float | None = None,
        restart: RestartPolicy = RestartPolicy.PERMANENT,
    ) -> None:
        """A child of the app's services (none runs in ``canopy jobs``)."""
        if self.mode is Mode.ADMIN:
            return
        grace = self.settings.service_grace if grace is None else grace
        self.services.add(name, service, grace=grace, restart=restart)

    def add_blueprint(self, blueprint: Blueprint) -> None:
        """Routes, for a serving process only."""
        if self.serving:
            self.app.register_blueprint(blueprint)

    def publisher(self) -> Publish | None:
        """Events to the hub that reaches subscribers: this process's, or, in a worker
        on the memory broker, the web tier's through the relay."""
        if self.topics is not None:
            return hub_publisher(self.topics.hub)
        if self.relay is not None:
            return relay_publisher(self.relay)
        return None


def hub_publisher(hub: Hub) -> Publish:
    """Events to ``hub``: one it refuses (its broker is away, or it is full) costs
    the event, never the work that announced it, and one line in the log."""
    return _sparing(hub.publish, (HubError,))


def relay_publisher(relay: RelayClient) -> Publish:
    """Events to the web tier's hub through the relay: one that cannot be handed over
    (the web tier is not running) or that the hub refuses costs the event, never the
    work, and is logged as ``hub_publisher``'s are."""
    return _sparing(relay.publish, (RelayUnavailable, ValueError))


def _sparing(
    send: Callable[[str, dict[str, Any]], Awaitable[object]],
    errors: tuple[type[Exception], ...],
) -> Publish:
    """``send``, with ``errors`` logged through one ``RepeatingFailure`` (a line when
    publishing starts to fail and one when it works again) rather than raised."""
    failures = RepeatingFailure(log, "events not published")

    async def publish(topic: str, data: dict[str, Any]) -> None:
        try:
            await send(topic, data)
        except errors as exc:
            failures.failed(f"{topic}: {exc}")
        else:
            failures.succeeded()

    return publish
