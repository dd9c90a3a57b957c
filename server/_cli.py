"""The ``canopy`` command."""

from __future__ import annotations

import logging
import sys
from functools import partial

import click
import trio

from nurseries import ChildSpec, Supervisor

from ._app import create_app
from ._config import default_config_path, load_config
from ._jobs import add_jobs
from ._jobs_cli import jobs_group
from ._logging import configure_logging
from ._main import ForcedShutdown, run_tree, serve
from ._process import tune_gc
from ._settings import Settings, SettingsError

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
def serve_command(config_path: str | None, bind: tuple[str, ...]) -> None:
    """Serve HTTP and WebSocket until SIGTERM or SIGINT, then drain and exit 0."""
    try:
        config, settings = load_config(config_path or default_config_path(), bind)
        settings.data_path.mkdir(parents=True, exist_ok=True)
    except (SettingsError, OSError) as exc:
        click.echo(f"canopy: invalid setting: {exc}", err=True)
        sys.exit(2)
    configure_logging(settings.log_level)
    config.accesslog = None
    config.errorlog = "canopy.hypercorn"  # routed through our JSON logging
    app = create_app(settings)
    tune_gc(settings.gc_threshold)
    try:
        trio.run(serve, app, config)
    except ForcedShutdown:
        sys.exit(1)


@main.command("worker")
@click.option("--config", "config_path", default=None, help="As for 'canopy serve'.")
def worker_command(config_path: str | None) -> None:
    """Run only the job runner, on the same store as the web tier, until SIGTERM."""
    try:
        _config, settings = load_config(config_path or default_config_path())
        settings.data_path.mkdir(parents=True, exist_ok=True)
    except (SettingsError, OSError) as exc:
        click.echo(f"canopy: invalid setting: {exc}", err=True)
        sys.exit(2)
    configure_logging(settings.log_level)
    services = Supervisor("services")
    add_jobs(services, settings, run_jobs=True)
    tree = Supervisor(
        "canopy-worker", [ChildSpec("services", services, grace=settings.service_grace + 2)]
    )
    tune_gc(settings.gc_threshold)
    try:
        trio.run(
            partial(
                run_tree, tree, started=lambda: logging.getLogger("canopy").info("worker started")
            )
        )
    except ForcedShutdown:
        sys.exit(1)


main.add_command(jobs_group)


@main.command("settings")
def settings_command() -> None:
    """List Canopy's settings, their environment variables and defaults."""
    defaults = Settings()
    for name, doc in Settings.describe().items():
        click.echo(f"CANOPY_{name.upper():<18} {getattr(defaults, name)!s:<10} {doc}")
