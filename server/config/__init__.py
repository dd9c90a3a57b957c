"""What an operator writes: Canopy's settings (``[canopy]``, ``CANOPY_*``) and
Hypercorn's config, read together with one-line errors. The bottom of the server:
it imports nothing else of it."""

from ._hypercorn import CanopyConfig, load_config
from ._settings import Settings, SettingsError, load_settings, setting

__all__ = ["CanopyConfig", "Settings", "SettingsError", "load_config", "load_settings", "setting"]
