"""The Quart-Trio app every route runs in, and the request pipeline around each view:
request ids, the in-flight bound, deadlines, JSON errors, the access line and metrics.
Quart's internals it replaces for speed are all in ``_quart``."""

from ._app import CanopyApp, Runtime

__all__ = ["CanopyApp", "Runtime"]
