"""Canopy's serving layer, in rooms stacked one way (each imports only from those
listed before it): ``config`` (settings), ``observe`` (logs, metrics, traces),
``transport`` (Hypercorn's protocols on Trio sockets), ``pipeline`` (the Quart app
and the request pipeline), ``app`` (``canopy.App`` and its assembly),
``capabilities`` (what an app includes) and ``runtime`` (processes, the CLI)."""

from .app import App, AppError, Assembly, Capability, Jobs, Mode, Task, Topics
from .config import Settings, SettingsError, load_config, load_settings, setting
from .pipeline import CanopyApp, Runtime
from .runtime import AppNotFound, ForcedShutdown, load_app, serve
from .transport import HTTPService

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
