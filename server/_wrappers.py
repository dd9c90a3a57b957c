"""Quart's request and JSON classes, swapped for cheaper ones where a profile said so."""

from __future__ import annotations

import json
from typing import Any

from quart.json.provider import DefaultJSONProvider
from quart_trio.wrappers import TrioRequest

__all__ = ["CanopyRequest", "CompactJSONProvider"]


class CanopyRequest(TrioRequest):
    """``blueprints`` is read three times per request and rebuilt each time upstream."""

    _blueprints_rule: Any = None
    _blueprints: list[str] | None = None

    @property
    def blueprints(self) -> list[str]:
        rule = self.url_rule
        if self._blueprints is None or rule is not self._blueprints_rule:
            self._blueprints = TrioRequest.blueprints.fget(self)  # type: ignore[attr-defined]
            self._blueprints_rule = rule
        return self._blueprints


class CompactJSONProvider(DefaultJSONProvider):
    """Compact JSON responses through one prebuilt encoder, keys in insertion order."""

    sort_keys = False

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        self._encode = json.JSONEncoder(
            separators=(",", ":"), default=self.default, ensure_ascii=self.ensure_ascii
        ).encode

    def response(self, *args: Any, **kwargs: Any) -> Any:
        body = self._encode(self._prepare_response_obj(args, kwargs))
        return self._app.response_class(body, mimetype=self.mimetype)
