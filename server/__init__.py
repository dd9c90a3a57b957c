"""Canopy's serving layer: the app and its assembly, configuration, serving, the CLI."""

from ._app import CanopyApp, Runtime
from ._application import App, Capability, Jobs, Topics
from ._capability import Assembly, Mode
from ._config import load_config
from ._declared import AppError, Task
from ._http import HTTPService
from ._loader import AppNotFound, load_app
from ._main import ForcedShutdown, serve
from ._settings import Settings, SettingsError, load_settings, setting

__all__ = [
    "App",
    "AppError",
    "AppNotFound",
    "Assembly",
    "CanopyApp",
    "Capability",
    "ForcedShutdown",
    "HTTPService",
    "Jobs",
    "Mode",
    "Runtime",
    "Settings",
    "SettingsError",
    "Task",
    "Topics",
    "load_app",
    "load_config",
    "load_settings",
    "serve",
    "setting",
]
