"""Canopy: a structured-concurrency application server on Trio.

This is the package's face, what a user imports: an app is a :class:`App` that
declares its routes, tasks, periodic jobs, topics and supervised services, and
includes capabilities (``canopy.capabilities``, ``canopy.reference``); ``canopy
serve module:app`` serves it and ``canopy.testing`` tests it.

The layers are subpackages, each importing only those below it: ``canopy.server``
(the app, configuration, serving, the CLI), ``canopy.handlers`` (one capability each:
a pure-Trio service plus a thin Quart blueprint) and ``canopy.nurseries`` (the
structured-concurrency core, pure Trio). A Trio program that embeds a service
imports no web stack: the names below that need one are imported when first read.
"""

from typing import TYPE_CHECKING, Any

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
from canopy.nurseries.fanout import HubError, Message, SlowConsumerPolicy
from canopy.nurseries.jobs import (
    IdempotencyConflict,
    Job,
    JobContext,
    JobState,
    JobStoreError,
    QueueFull,
    UnknownTask,
)
from canopy.nurseries.jobs import RetryPolicy as Retry

if TYPE_CHECKING:
    from canopy import capabilities, reference, testing
    from canopy.handlers import ApiError
    from canopy.server import (
        App,
        AppError,
        Assembly,
        Capability,
        Settings,
        SettingsError,
        Task,
        setting,
    )

__all__ = [
    "ApiError",
    "App",
    "AppError",
    "Assembly",
    "Backoff",
    "CanopyError",
    "Capability",
    "ChildSpec",
    "HubError",
    "IdempotencyConflict",
    "Job",
    "JobContext",
    "JobState",
    "JobStoreError",
    "Message",
    "Overloaded",
    "QueueFull",
    "RestartIntensity",
    "RestartPolicy",
    "Retry",
    "Service",
    "ServiceState",
    "ServiceStatus",
    "Settings",
    "SettingsError",
    "SlowConsumerPolicy",
    "Supervisor",
    "SupervisorGaveUp",
    "Task",
    "UnknownTask",
    "capabilities",
    "first_completed",
    "gather",
    "reference",
    "setting",
    "testing",
]

_FROM_SERVER = frozenset(
    {"App", "AppError", "Assembly", "Capability", "Settings", "SettingsError", "Task", "setting"}
)
_SUBMODULES = frozenset({"capabilities", "reference", "testing"})
_FROM_HANDLERS = frozenset({"ApiError"})


def __getattr__(name: str) -> Any:
    import importlib

    if name in _FROM_SERVER or name in _FROM_HANDLERS:
        layer = "canopy.server" if name in _FROM_SERVER else "canopy.handlers"
        value = getattr(importlib.import_module(layer), name)
        _present(value, name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"canopy.{name}")
    else:
        raise AttributeError(f"module 'canopy' has no attribute {name!r}")
    globals()[name] = value  # once: the next read is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _present(value: Any, name: str) -> None:
    """Say ``canopy.X`` in reprs and tracebacks, where a user meets the name, rather
    than the private module it is defined in (as trio does)."""
    if getattr(value, "__module__", "").startswith("canopy.") and hasattr(value, "__qualname__"):
        value.__module__ = "canopy"
        value.__qualname__ = name


for _name in __all__:
    if _name in globals():
        _present(globals()[_name], _name)
del _name
