"""The ASGI app for ``hypercorn --config hypercorn.toml canopy.server.asgi:app``.

Served this way, Hypercorn's own trio worker handles connections and its stock
shutdown; ``canopy serve`` adds Canopy's drain (see docs/OPERATIONS.md).
"""

from __future__ import annotations

import sys

from ._app import create_app
from ._config import default_config_path
from ._logging import configure_logging
from ._process import tune_gc
from ._settings import SettingsError, load_settings

__all__ = ["app"]

try:
    _settings = load_settings(default_config_path())
except SettingsError as _exc:
    print(f"canopy: invalid setting: {_exc}", file=sys.stderr)
    sys.exit(2)

configure_logging(_settings.log_level)
app = create_app(_settings)
tune_gc(_settings.gc_threshold)
