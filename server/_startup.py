"""What every ``canopy`` command does first and last: load settings, run, exit."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable, Sequence

import click
import trio
from hypercorn.config import Config

from canopy.nurseries import SupervisorGaveUp

from ._config import default_config_path, load_config
from ._main import ForcedShutdown
from ._process import tune_gc
from ._settings import Settings, SettingsError

__all__ = ["load_or_exit", "run_process"]

log = logging.getLogger("canopy")


def load_or_exit(config_path: str | None, binds: Sequence[str] = ()) -> tuple[Config, Settings]:
    """Both configurations, with the data directory made; a bad setting exits 2 in one line."""
    try:
        config, settings = load_config(config_path or default_config_path(), binds)
        settings.data_path.mkdir(parents=True, exist_ok=True)
    except (SettingsError, OSError) as exc:
        click.echo(f"canopy: invalid setting: {exc}", err=True)
        sys.exit(2)
    return config, settings


def run_process(settings: Settings, main: Callable[[], Awaitable[object]]) -> None:
    """Run a long-lived process's root; a second signal (forced stop) exits 1, and so
    does a service that failed for good (one line on stderr says which and why; the
    log has the traceback)."""
    tune_gc(settings.gc_threshold)
    gave_up: list[SupervisorGaveUp] = []
    try:
        try:
            trio.run(main)
        except* SupervisorGaveUp as group:
            log.error("a service failed", exc_info=group)
            gave_up.extend(_leaves(group))
    except ForcedShutdown:
        sys.exit(1)
    if gave_up:
        click.echo(f"canopy: {_innermost(gave_up[0])}", err=True)
        sys.exit(1)


def _leaves(group: BaseExceptionGroup[SupervisorGaveUp]) -> list[SupervisorGaveUp]:
    out: list[SupervisorGaveUp] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _innermost(exc: SupervisorGaveUp) -> str:
    """``service canopy/services/redis/connection failed: <its error>``: the path down
    the tree to the service that failed, and why."""
    path = [exc.supervisor]
    cause: BaseException | None = exc
    while isinstance(cause, SupervisorGaveUp):
        path.append(cause.child)
        last = cause
        cause = cause.__cause__
        while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
            cause = cause.exceptions[0]
    reason = repr(cause) if cause is not None else last.reason
    return f"service {'/'.join(path)} failed: {reason}"
