"""Canopy's serving layer: assembles the app, reads configuration, serves, and the CLI."""

from ._app import CanopyApp, Runtime, create_app
from ._config import load_config
from ._http import HTTPService
from ._main import ForcedShutdown, serve
from ._settings import Settings, SettingsError, load_settings

__all__ = [
    "CanopyApp",
    "ForcedShutdown",
    "HTTPService",
    "Runtime",
    "Settings",
    "SettingsError",
    "create_app",
    "load_config",
    "load_settings",
    "serve",
]
