"""Quart's request and JSON classes, swapped for cheaper ones where a profile said so."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson
import trio
from quart.ctx import RequestContext
from quart.helpers import _split_blueprint_path
from quart.json.provider import DefaultJSONProvider
from quart.sessions import NullSession, SecureCookieSessionInterface
from quart.wrappers import Response
from quart_trio.wrappers import TrioRequest
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter
from werkzeug.utils import get_content_type

__all__ = [
    "CachedRequestContext",
    "CanopyRequest",
    "CompactJSONProvider",
    "RouteCache",
    "listed_headers",
]


def listed_headers(items: list[tuple[str, str]]) -> Headers:
    """werkzeug ``Headers`` holding ``items`` as they are, in order.

    ``Headers(items)`` puts each one in through ``add``, which checks the value for
    line breaks: for headers that are known clean already (our own, or what h11 and
    h2 parsed) that is the cost without the use. The list is werkzeug's own
    ``_list``: the one place Canopy relies on it.
    """
    headers = Headers()
    headers._list = items
    return headers


class _LazyLock:
    """The request's form-parsing lock, made only if a form is parsed.

    Quart builds a ``trio.Lock`` (and its parking lot) for every request, for form
    bodies that few requests have.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock: trio.Lock | None = None

    async def __aenter__(self) -> None:
        if self._lock is None:
            self._lock = trio.Lock()
        await self._lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._lock is not None
        self._lock.release()


class CanopyRequest(TrioRequest):
    """Two hot properties and the body, got the cheap way.

    ``blueprints`` is read three times per request and rebuilt each time upstream.
    ``content_length`` is read when the request is built, and werkzeug's
    ``Headers.get`` constructs an exception for each absent header it looks up
    (Content-Length and Transfer-Encoding are both absent on most GETs), so it is
    read from the ASGI scope's raw headers instead, with werkzeug's rules.

    ``get_data`` waits for the body under a ``body_timeout`` cancel scope; Canopy's
    transport runs an HTTP/1.1 request only once its body is in, so the body is
    usually complete already and is taken without the scope (a fifth of a JSON
    route's own time). Everything else (a body still arriving, one over the size
    limit, form parsing) goes the upstream way.
    """

    _blueprints_rule: Any = None
    _blueprints: list[str] | None = None
    lock_class = _LazyLock  # type: ignore[assignment]

    async def get_data(  # type: ignore[override]
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> str | bytes:
        body = self.body
        if parse_form_data or body._must_raise is not None or not body._complete.is_set():
            return await super().get_data(cache, as_text, parse_form_data)
        data = bytes(body._data)
        if not cache:
            body.clear()
        return data.decode() if as_text else data

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
            endpoint = rule.endpoint if rule is not None else ""
            blueprint = endpoint.rsplit(".", 1)[0] if "." in endpoint else None
            self._blueprints = _split_blueprint_path(blueprint) if blueprint else []
            self._blueprints_rule = rule
        return self._blueprints


class CompactJSONProvider(DefaultJSONProvider):
    """Compact JSON responses, keys in insertion order, encoded by orjson when it can.

    orjson took a job's body from 5.2 to 0.9 µs (json's C encoder still builds a float's
    repr in Python objects). It is given only what it encodes as ``json`` would: dict,
    list and scalar types themselves. Subclasses, dataclasses and dates go to Quart's
    ``default``, and whatever orjson still refuses (an int beyond 64 bits, a key that
    is not a string, a type ``default`` does not know) is encoded by ``json`` exactly
    as before, or raises as before. One difference, on purpose: a NaN or infinite
    float becomes ``null``, where ``json`` wrote ``NaN``, which no JSON parser reads.
    """

    sort_keys = False
    _OPTIONS = orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS
    _OPTIONS |= orjson.OPT_PASSTHROUGH_DATETIME

    def __init__(self, app: Any) -> None:
        super().__init__(app)
        # What werkzeug derives from the mimetype on every response, derived once.
        self._content_type = get_content_type(self.mimetype, "utf-8")
        self._fallback = json.JSONEncoder(
            separators=(",", ":"), default=self.default, ensure_ascii=self.ensure_ascii
        ).encode
        self._status_lines: dict[int, tuple[str, int]] = {}

    def _encode(self, value: Any) -> bytes | str:
        try:
            return orjson.dumps(value, default=self.default, option=self._OPTIONS)
        except TypeError:  # orjson.JSONEncodeError included
            return self._fallback(value)

    def response(self, *args: Any, **kwargs: Any) -> Any:
        return self.answer(self._prepare_response_obj(args, kwargs))

    def answer(
        self, value: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        """The response Quart's ``make_response`` makes of a view's ``value`` (a dict
        or a list), ``(value, status)`` or ``(value, status, headers)``, built at
        once: werkzeug puts each header in with a checked ``set`` that scans the list
        for its name, and works out the status line again. Here the Content-Type and
        Content-Length (ours) go in as they are, the status line is worked out once
        per code, and only the view's own headers take the checked way. That was
        5-7 µs of every JSON answer; tests/test_wrappers.py pins that both ways give
        the same response."""
        body = self._encode(value)
        data = body.encode() if isinstance(body, str) else body
        response_class: Any = self._app.response_class
        response = response_class.__new__(response_class)
        listed = listed_headers(
            [("Content-Type", self._content_type), ("Content-Length", str(len(data)))]
        )
        if headers:
            for name, header in headers.items():
                listed.set(name, header)
        response.headers = listed
        line = self._status_lines.get(status)
        if line is None:
            line = self._status_lines[status] = response._clean_status(status)
        response._status, response._status_code = line
        response.timeout = Ellipsis
        response.response = response.data_body_class(data)
        return response


class RouteCache:
    """Remembers which rule a (method, path) matched, so werkzeug matches a path once.

    Only valid without host or subdomain matching (Canopy's setup), where a match
    depends on nothing else. Failures (404, 405, redirects) are not remembered.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: dict[tuple[str, str, bool], tuple[Any, dict[str, Any]]] = {}

    def match(self, adapter: MapAdapter, method: str, path: str, websocket: bool) -> Any:
        key = (method, path, websocket)
        hit = self._entries.get(key)
        if hit is not None:
            return hit[0], dict(hit[1])
        rule, args = adapter.match(return_rule=True)
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (rule, dict(args))
        return rule, args


class CachedRequestContext(RequestContext):
    """Quart's request context, matching through the app's :class:`RouteCache`."""

    def match_request(self) -> None:
        request = self.request_websocket
        try:
            request.url_rule, request.view_args = self.app.route_cache.match(  # type: ignore[attr-defined]
                self.url_adapter, request.method, request.path, False
            )
        except HTTPException as exception:
            request.routing_exception = exception


class LazyMapAdapter:
    """Binds the URL map to a request only when something needs the adapter.

    Quart binds one per request up front; with the route cache answering the match,
    only ``url_for``, a cache miss or an OPTIONS request still needs it.
    """

    __slots__ = ("_adapter", "_factory")

    def __init__(self, factory: Any) -> None:
        object.__setattr__(self, "_factory", factory)
        object.__setattr__(self, "_adapter", None)

    def _bound(self) -> MapAdapter:
        if self._adapter is None:
            object.__setattr__(self, "_adapter", self._factory())
        return self._adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bound(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._bound(), name, value)


class CanopySessionInterface(SecureCookieSessionInterface):
    """Without a ``SECRET_KEY`` there can be no session; say so without per-request work.

    Upstream builds a signing serializer to find that out, then a new null session,
    on every request. A null session refuses writes, so one instance serves all.
    """

    _null = NullSession()

    async def open_session(self, app: Any, request: Any) -> Any:
        if not app.secret_key:
            return self._null
        return await super().open_session(app, request)
