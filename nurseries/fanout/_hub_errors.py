"""What the hub raises to a caller that asked for what it cannot have."""

from __future__ import annotations

from .._errors import CanopyError

__all__ = ["HubClosed", "HubError", "TooManySubscriptions", "TooManyTopics"]


class HubError(CanopyError):
    pass


class HubClosed(HubError):
    """The hub is not running (not started yet, or stopping)."""


class TooManyTopics(HubError):
    pass


class TooManySubscriptions(HubError):
    pass
