"""The lifecycle of a supervised service, as data."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["ACTIVE", "TERMINAL", "ServiceState", "ServiceStatus"]


class ServiceState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


ACTIVE = frozenset(
    {ServiceState.STARTING, ServiceState.RUNNING, ServiceState.RESTARTING, ServiceState.STOPPING}
)
TERMINAL = frozenset({ServiceState.STOPPED, ServiceState.FAILED})


@dataclass(frozen=True)
class ServiceStatus:
    """A snapshot of one node of the supervision tree, for readiness reports."""

    name: str
    state: ServiceState
    restarts: int = 0
    last_error: str | None = None
    children: tuple[ServiceStatus, ...] = field(default=())

    @property
    def ready(self) -> bool:
        """True when this node and everything below it is running."""
        return self.state is ServiceState.RUNNING and all(c.ready for c in self.children)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "state": self.state.value}
        if self.restarts:
            out["restarts"] = self.restarts
        if self.last_error is not None:
            out["last_error"] = self.last_error
        if self.children:
            out["children"] = [child.to_dict() for child in self.children]
        return out
