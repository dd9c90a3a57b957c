"""What every ``canopy`` command does first and last: load settings, run, exit."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Sequence

import click
import trio
from hypercorn.config import Config

from ._config import default_config_path, load_config
from ._main import ForcedShutdown
from ._process import tune_gc
from ._settings import Settings, SettingsError

__all__ = ["load_or_exit", "run_process"]


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
    """Run a long-lived process's root; a second signal (forced stop) exits 1."""
    tune_gc(settings.gc_threshold)
    try:
        trio.run(main)
    except ForcedShutdown:
        sys.exit(1)
