"""Running an app: the root nursery and the signals that stop it, what every command
does first (find the app, load settings), worker pools, the ``canopy`` command, and
``canopy.testing``'s in-process server."""

from ._loader import AppNotFound, load_app
from ._main import ForcedShutdown, serve

__all__ = ["AppNotFound", "ForcedShutdown", "load_app", "serve"]
