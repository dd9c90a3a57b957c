"""Loading Hypercorn's config and Canopy's settings together, with one-line errors."""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hypercorn.config import Config

from ._settings import Settings, SettingsError, load_settings

__all__ = ["DEFAULT_CONFIG", "CanopyConfig", "default_config_path", "load_config"]

DEFAULT_CONFIG = "hypercorn.toml"


class CanopyConfig(Config):
    """Hypercorn's Config, formatting the ``Date`` header once a second, not per response."""

    include_server_header = False  # no need to advertise the stack, or validate the header
    websocket_max_message_size = 64 * 1024  # Hypercorn's 16 MiB is too generous for JSON frames
    websocket_compression = False  # Canopy's ws_compression, read by its transport
    _headers_key: tuple[str, int] | None = None
    _headers: list[tuple[bytes, bytes]]

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        key = (protocol, int(time.time()))
        if key != self._headers_key:
            self._headers = super().response_headers(protocol)
            self._headers_key = key
        return list(self._headers)


def default_config_path(environ: Mapping[str, str] | None = None) -> str | None:
    """``$CANOPY_CONFIG``, else ``./hypercorn.toml`` if there is one."""
    environ = os.environ if environ is None else environ
    if environ.get("CANOPY_CONFIG"):
        return environ["CANOPY_CONFIG"]
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def load_config(
    path: str | None,
    binds: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    sections: Mapping[str, type[Any]] | None = None,
) -> tuple[Config, Settings]:
    """Read both configurations from ``path`` (TOML), Canopy's with the app's
    ``sections``; raise SettingsError on a bad value."""
    settings = load_settings(path, environ, sections)
    config: Config
    if path is None:
        config = CanopyConfig()
    else:
        try:
            config = CanopyConfig.from_toml(path)
            with open(path, "rb") as file:
                _check_keys(tomllib.load(file), path)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"{path}: cannot load ({exc})") from None
    if binds:
        config.bind = list(binds)
    config.websocket_compression = settings.ws_compression  # type: ignore[attr-defined]
    _check_hypercorn(config)
    return config, settings


def _check_keys(table: Mapping[str, Any], path: str) -> None:
    """Hypercorn takes any key as an attribute and never reads a misspelt one; Canopy's
    own settings are refused when misspelt, and so are Hypercorn's."""
    for key in table:
        if key != "canopy" and not hasattr(Config, key):
            raise SettingsError(
                f"{key}: unknown Hypercorn setting in {path} (Canopy's own go in [canopy])"
            )


def _check_hypercorn(config: Config) -> None:
    if config.worker_class not in ("trio", "asyncio"):
        raise SettingsError(f"worker_class: Canopy runs on Trio (got {config.worker_class!r})")
    workers = config.workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SettingsError(
            f"workers: must be a whole number of processes, 1 or more (got {workers!r})"
        )
    for name in ("graceful_timeout", "keep_alive_timeout", "shutdown_timeout"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise SettingsError(f"{name}: must be zero or a positive number (got {value!r})")
    for bind in config.bind:
        _check_bind(bind)


def _check_bind(bind: str) -> None:
    if bind.startswith(("unix:", "fd://")):
        return
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SettingsError(f"bind: expected HOST:PORT (got {bind!r})")
