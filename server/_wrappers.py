"""Quart's request and JSON classes, swapped for cheaper ones where a profile said so."""

from __future__ import annotations

import json
from typing import Any

from quart.json.provider import DefaultJSONProvider
from quart_trio.wrappers import TrioRequest

__all__ = ["CanopyRequest", "CompactJSONProvider"]


class CanopyRequest(TrioRequest):
    """Two hot properties, computed the cheap way.

    ``blueprints`` is read three times per request and rebuilt each time upstream.
    ``content_length`` is read when the request is built, and werkzeug's
    ``Headers.get`` constructs an exception for each absent header it looks up
    (Content-Length and Transfer-Encoding are both absent on most GETs), so it is
    read from the ASGI scope's raw headers instead, with werkzeug's rules.
    """

    _blueprints_rule: Any = None
    _blueprints: list[str] | None = None

    @property
    def content_length(self) -> int | None:
        length: bytes | None = None
        for name, value in self.scope["headers"]:
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                return None
            if name == b"content-length":
                length = value
        if length is None:
            return None
        length = length.strip()
        return int(length) if length.isdigit() else 0

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
