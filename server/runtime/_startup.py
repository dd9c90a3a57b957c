"""What every ``canopy`` command does first and last: find the app, load settings,
assemble, run, exit; each mistake said in one line with its own exit code."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

import click
import trio
from hypercorn.config import Config

from canopy.nurseries import SupervisorGaveUp

from ..app._application import App
from ..app._capability import Mode
from ..app._declared import AppError
from ..app._process import tune_gc
from ..app._topics import anonymous_operations
from ..config._hypercorn import default_config_path, load_config
from ..config._settings import Settings, SettingsError
from ..transport._service import CannotListen
from ._loader import SHOWCASE, AppNotFound, app_spec, load_app
from ._main import ForcedShutdown

__all__ = ["boot_or_exit", "find_app", "load_or_exit", "run_process"]

log = logging.getLogger("canopy")


@contextmanager
def _one_line(spec: str | None = None) -> Iterator[None]:
    """The start-up mistakes a user meets first, each said in one line on stderr with
    its exit code: a setting (2), an app not found (2), the app's declarations (1)."""
    try:
        yield
    except SettingsError as exc:
        click.echo(f"canopy: invalid setting: {exc}", err=True)
        sys.exit(2)
    except AppNotFound as exc:
        click.echo(f"canopy: app not found: {exc}", err=True)
        sys.exit(2)
    except AppError as exc:
        click.echo(f"canopy: in the app {spec}: {exc}" if spec else f"canopy: {exc}", err=True)
        sys.exit(1)


def find_app(given: str | None, config_path: str | None) -> tuple[App, str]:
    """The app (see ``_loader.app_spec``) and the string that named it. An exception
    raised while its module is imported shows its traceback (exit 1)."""
    spec = app_spec(given, config_path or default_config_path())
    with _one_line(spec):
        app = load_app(spec)
    return app, spec


def load_or_exit(
    config_path: str | None,
    binds: Sequence[str] = (),
    app: App | None = None,
    *,
    make_data_dir: bool = True,
) -> tuple[Config, Settings]:
    """Both configurations, with the app's sections, the data directory made (unless
    the command only reads what is there)."""
    with _one_line():
        config, settings = load_config(
            config_path or default_config_path(), binds, sections=app.sections() if app else {}
        )
        try:
            if make_data_dir:
                settings.data_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            where = settings.data_path
            raise SettingsError(f"CANOPY_DATA_DIR: cannot make {where} ({exc.strerror})") from None
    return config, settings


def boot_or_exit(app: App, spec: str, settings: Settings, mode: Mode) -> None:
    """Assemble the app; say which app this is first, and how it is open."""
    what = "Canopy's showcase (every capability)" if spec == SHOWCASE else spec
    operations = anonymous_operations(settings, app.declared.anonymous_operations)
    if operations and mode is Mode.SERVE:  # what anyone may do over HTTP
        log.warning(
            "app %s; anyone may, without a token: %s (CANOPY_ANONYMOUS_OPERATIONS)",
            what,
            ", ".join(operations),
            extra={"app": spec, "mode": mode.value, "anonymous_operations": list(operations)},
        )
    else:
        log.info("app %s", what, extra={"app": spec, "mode": mode.value})
    with _one_line(spec):
        app.boot(settings, mode=mode)


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
            gave_up.extend(_leaves(group))
            listen = _cannot_listen(gave_up[0])
            if listen is None:
                log.error("a service failed", exc_info=group)
            else:  # said whole in one line: a traceback would bury it
                click.echo(f"canopy: {listen}", err=True)
                log.error("%s", listen)
                sys.exit(1)
    except ForcedShutdown:
        sys.exit(1)
    if gave_up:
        click.echo(f"canopy: {_innermost(gave_up[0])}", err=True)
        sys.exit(1)
    _leave()


def _leave() -> None:
    """Exit once everything has stopped, without taking the heap apart.

    The tree has drained and closed every store by now: what an ordinary exit still
    does is free every object one by one and run a last full collection over them,
    seconds for a process that holds a few hundred megabytes of topics and
    connections, during which it is neither serving nor gone (a rolling restart
    waits on it). The exit handlers still run (an OpenTelemetry exporter flushes its
    last spans in one), then the logs and the standard streams are flushed."""
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a pipe nobody reads any more
            pass
    os._exit(0)


def _cannot_listen(exc: SupervisorGaveUp) -> CannotListen | None:
    cause: BaseException | None = exc
    while isinstance(cause, SupervisorGaveUp | BaseExceptionGroup):
        if isinstance(cause, BaseExceptionGroup):
            cause = cause.exceptions[0] if len(cause.exceptions) == 1 else None
        else:
            cause = cause.__cause__
    return cause if isinstance(cause, CannotListen) else None


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
