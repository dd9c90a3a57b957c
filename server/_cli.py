"""The ``canopy`` command."""

from __future__ import annotations

import logging
import os
from functools import partial

import click

from canopy.nurseries import ChildSpec, Supervisor

from ._app import create_app
from ._bench_cli import bench_command
from ._jobs import add_jobs
from ._jobs_cli import jobs_group
from ._logging import configure_logging
from ._main import run_tree, serve
from ._pool import inherit_sockets, serve_workers
from ._redis import RedisConnections
from ._settings import Settings
from ._startup import load_or_exit, run_process
from ._tracing import tracing_for

__all__ = ["main"]


@click.group()
@click.version_option(package_name="canopy-server")
def main() -> None:
    """Canopy: a structured-concurrency application server on Trio."""


@main.command("serve")
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
    config_path: str | None, bind: tuple[str, ...], listen_fds: tuple[str, ...]
) -> None:
    """Serve HTTP and WebSocket until SIGTERM or SIGINT, then drain and exit 0.

    With ``workers = N`` (N > 1) in the config, N processes serve the same sockets."""
    config, settings = load_or_exit(config_path, bind)
    configure_logging(settings.log_level)
    config.accesslog = None
    # A logger, not a name: Hypercorn opens a log file named by any string but "-".
    config.errorlog = logging.getLogger("canopy.hypercorn")
    parent = None
    if listen_fds:  # one of the pool's workers: serve what the parent bound
        inherit_sockets(config, listen_fds)
        parent = os.getppid()
    elif config.workers > 1:
        run_process(settings, partial(serve_workers, config, settings, config_path))
        return
    app = create_app(settings)
    run_process(settings, partial(serve, app, config, parent=parent))


@main.command("worker")
@click.option("--config", "config_path", default=None, help="As for 'canopy serve'.")
def worker_command(config_path: str | None) -> None:
    """Run only the job runner, on the same store as the web tier, until SIGTERM."""
    _config, settings = load_or_exit(config_path)
    configure_logging(settings.log_level)
    services = Supervisor("services")
    add_jobs(
        services,
        settings,
        RedisConnections(services, settings),
        run_jobs=True,
        tracing=tracing_for(settings.tracing),
    )
    tree = Supervisor(
        "canopy-worker", [ChildSpec("services", services, grace=settings.service_grace + 2)]
    )
    started = logging.getLogger("canopy").info
    run_process(settings, partial(run_tree, tree, started=lambda: started("worker started")))


main.add_command(jobs_group)
main.add_command(bench_command)


@main.command("settings")
def settings_command() -> None:
    """List Canopy's settings, their environment variables and defaults."""
    defaults = Settings()
    for name, doc in Settings.describe().items():
        click.echo(f"CANOPY_{name.upper():<18} {getattr(defaults, name)!s:<10} {doc}")
