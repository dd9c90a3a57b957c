"""Finding the app to run: ``module:app`` or ``module:factory()``, as uvicorn and
Hypercorn take it, from the command line, ``CANOPY_APP`` or ``app =`` in the
``[canopy]`` table; with none of them, Canopy's showcase."""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from collections.abc import Mapping

from ..app._application import App

__all__ = ["SHOWCASE", "AppNotFound", "app_spec", "load_app"]

SHOWCASE = "canopy.showcase:app"


class AppNotFound(Exception):
    """The app string names no module, or no ``canopy.App`` in it."""


def app_spec(
    given: str | None, config_path: str | None, environ: Mapping[str, str] | None = None
) -> str:
    """The app to run: the one given, else ``$CANOPY_APP``, else the config file's
    ``[canopy] app``, else the showcase."""
    environ = os.environ if environ is None else environ
    if given:
        return given
    if environ.get("CANOPY_APP"):
        return environ["CANOPY_APP"]
    if config_path is not None:
        try:
            with open(config_path, "rb") as file:
                table = tomllib.load(file).get("canopy", {})
        except (OSError, tomllib.TOMLDecodeError):
            table = {}  # said in full when the settings are loaded from it
        if isinstance(table, dict) and isinstance(table.get("app"), str):
            return str(table["app"])
    return SHOWCASE


def load_app(spec: str) -> App:
    """Import the app ``spec`` names, with the working directory importable first (as
    uvicorn does). AppNotFound says, in one line, what is missing; an exception
    raised by the user's module while it is imported propagates as it is."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    if not module_name or not attribute.removesuffix("()").isidentifier():
        raise AppNotFound(f"{spec!r}: expected MODULE:APP or MODULE:FACTORY()")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not f"{module_name}.".startswith(f"{exc.name}."):
            raise  # the module exists, and something it imports does not
        raise AppNotFound(
            f"{spec!r}: no module named {module_name!r} in {os.getcwd()} or the installed packages"
        ) from None
    name = attribute.removesuffix("()")
    found = getattr(module, name, None)
    if found is None:
        raise AppNotFound(f"{spec!r}: module {module_name!r} has no attribute {name!r}")
    if attribute.endswith("()"):
        if not callable(found):
            raise AppNotFound(f"{spec!r}: {name} is not a factory to call")
        found = found()
    if not isinstance(found, App):
        kind = type(found).__name__
        raise AppNotFound(f"{spec!r}: {attribute} is a {kind}, not a canopy.App")
    return found
