"""Canopy: a structured-concurrency application server on Trio.

This is the package's face, and what a user imports. Its layers are subpackages,
each importing only those below it: ``canopy.server`` (the app, configuration,
serving, the CLI), ``canopy.handlers`` (one capability each: a pure-Trio service
plus a thin Quart blueprint) and ``canopy.nurseries`` (the structured-concurrency
core, pure Trio). A Trio program that embeds a service imports no web stack, so
nothing here imports ``canopy.server`` or Quart at import time.
"""

from canopy.nurseries import (
    Backoff,
    CanopyError,
    ChildSpec,
    Overloaded,
    RestartIntensity,
    RestartPolicy,
    Service,
    ServiceState,
    ServiceStatus,
    Supervisor,
    SupervisorGaveUp,
    first_completed,
    gather,
)

__all__ = [
    "Backoff",
    "CanopyError",
    "ChildSpec",
    "Overloaded",
    "RestartIntensity",
    "RestartPolicy",
    "Service",
    "ServiceState",
    "ServiceStatus",
    "Supervisor",
    "SupervisorGaveUp",
    "first_completed",
    "gather",
]
