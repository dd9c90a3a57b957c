"""The ``canopy`` command."""

from __future__ import annotations

import logging
import os
from functools import partial

import click

from ..app._assemble import RELAY_SOCKET
from ..app._capability import Mode
from ..config._settings import ENV_PREFIX, Settings, describe, section_prefix
from ..observe._logging import configure_logging
from ._jobs_cli import jobs_group
from ._main import run_tree, serve
from ._pool import inherit_sockets, serve_workers
from ._startup import boot_or_exit, find_app, load_or_exit, run_process
from ._token_cli import token_command

__all__ = ["main"]


@click.group()
@click.version_option(package_name="canopy-server")
def main() -> None:
    """Canopy: a structured-concurrency application server on Trio."""


_APP_HELP = (
    "MODULE:APP or MODULE:FACTORY() (default: $CANOPY_APP, else app in the config's "
    "[canopy] table, else Canopy's showcase)"
)


@main.command("serve")
@click.argument("app_given", metavar="[APP]", required=False)
@click.option(
    "--config",
    "config_path",
    default=None,
    help="TOML file with Hypercorn's settings and a [canopy] table "
    "(default: $CANOPY_CONFIG, else ./hypercorn.toml if present).",
)
@click.option("--bind", "-b", multiple=True, help="HOST:PORT to listen on (repeatable).")
@click.option("--listen-fd", "listen_fds", multiple=True, hidden=True)  # a worker's sockets
def serve_command(
    app_given: str | None,
    config_path: str | None,
    bind: tuple[str, ...],
    listen_fds: tuple[str, ...],
) -> None:
    """Serve APP over HTTP and WebSocket until SIGTERM or SIGINT, then drain and exit 0.

    APP is MODULE:APP or MODULE:FACTORY() (default: $CANOPY_APP, else app in the
    config's [canopy] table, else Canopy's showcase). With ``workers = N`` (N > 1) in
    the config, N processes serve the same sockets."""
    app, spec = find_app(app_given, config_path)
    config, settings = load_or_exit(config_path, bind, app)
    configure_logging(settings.log_level)
    config.accesslog = None
    # A logger, not a name: Hypercorn opens a log file named by any string but "-".
    config.errorlog = logging.getLogger("canopy.hypercorn")
    parent = None
    if listen_fds:  # one of the pool's workers: serve what the parent bound
        inherit_sockets(config, listen_fds)
        parent = os.getppid()
    elif config.workers > 1:
        os.environ["CANOPY_APP"] = spec  # the workers serve the same app
        run_process(settings, partial(serve_workers, config, settings, config_path))
        return
    boot_or_exit(app, spec, settings, Mode.SERVE)
    run_process(settings, partial(serve, app, config, parent=parent))


@main.command("worker")
@click.argument("app_given", metavar="[APP]", required=False)
@click.option("--config", "config_path", default=None, help="As for 'canopy serve'.")
def worker_command(app_given: str | None, config_path: str | None) -> None:
    """Run APP's tasks and periodic jobs, on the same store as the web tier, until
    SIGTERM. APP as for 'canopy serve'."""
    app, spec = find_app(app_given, config_path)
    _config, settings = load_or_exit(config_path, app=app)
    configure_logging(settings.log_level)
    boot_or_exit(app, spec, settings, Mode.WORKER)
    log = logging.getLogger("canopy")
    if app.runtime.topics is None:
        log.info(
            "events to the web tier's hub through its relay socket",
            extra={"socket": str(settings.data_path / RELAY_SOCKET)},
        )
    tree = app.runtime.tree
    run_process(settings, partial(run_tree, tree, started=lambda: log.info("worker started")))


main.add_command(jobs_group)
main.add_command(token_command)


@main.command("settings")
@click.option("--app", "app_given", default=None, metavar="MODULE:APP", help=_APP_HELP)
@click.option("--config", "config_path", default=None, help="As for 'canopy serve'.")
def settings_command(app_given: str | None, config_path: str | None) -> None:
    """List the settings of Canopy and of the app: each variable, its default, what
    it does. The app's and its capabilities' own are read from [canopy.<section>]."""
    app, _spec = find_app(app_given, config_path)
    rows = [(ENV_PREFIX, Settings)] + [
        (section_prefix(name), kind) for name, kind in app.sections().items()
    ]
    for prefix, kind in rows:
        defaults = kind()
        for name, doc in describe(kind).items():
            variable = f"{prefix}{name.upper()}"
            click.echo(f"{variable:<36} {getattr(defaults, name)!s:<10} {doc}")
