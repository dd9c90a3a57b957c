"""Where Canopy reaches into Quart and Quart-Trio: each of their internals that Canopy
replaces, in this one module, written against Quart 0.22.0, Quart-Trio 0.12.0 and
the werkzeug they bring (3.1).

Each replacement does what upstream does, with less work per request; a profile
chose every one. tests/unit/server/test_quart_overrides.py pins the source of each upstream
function replaced or copied here, so a release that changes one fails a test first.

- ASGI connections (:class:`CanopyHTTPConnection`, :class:`CanopyWebsocketConnection`,
  over Quart-Trio's). Quart-Trio opens a nursery with two tasks per request: one runs
  the view, the other waits for ``http.disconnect`` to cancel it. Under Canopy's
  transport the request task already runs in a cancel scope that a disconnect
  cancels (see ``transport``), so the view runs in the request task itself: the body
  is read first (bounded by ``MAX_CONTENT_LENGTH``), then the view runs, then the
  response is sent, a whole body in one ASGI message. A WebSocket's view likewise
  runs in the call's task. Under any other server they behave like Quart-Trio's.
- The request (:class:`CanopyRequest`), JSON provider, session interface, request
  context and URL adapter: cheaper versions of Quart's, each said where it is.
- The app (:class:`LeanQuartTrio`): routing through a cache, JSON answers built at
  once, and ``handle_request`` without the steps that do nothing when no hook,
  signal receiver or test client needs them.
"""

from __future__ import annotations

import enum
import inspect
import json
from collections.abc import Awaitable, Iterable, Mapping
from functools import partial
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlparse

import orjson
import trio
from quart.asgi import ASGIWebsocketConnection, _normalise_path
from quart.ctx import RequestContext
from quart.globals import _cv_app, _cv_request
from quart.helpers import _split_blueprint_path
from quart.json.provider import DefaultJSONProvider
from quart.sessions import NullSession, SecureCookieSessionInterface
from quart.signals import (
    appcontext_popped,
    appcontext_pushed,
    appcontext_tearing_down,
    request_finished,
    request_started,
    request_tearing_down,
    websocket_received,
)
from quart.typing import ResponseReturnValue, ResponseTypes
from quart.wrappers import Request, Response
from quart.wrappers.response import DataBody
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection, TrioASGIWebsocketConnection
from quart_trio.wrappers import TrioRequest
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter
from werkzeug.utils import get_content_type

from canopy.handlers import ApiError, first_header

from ..transport._extensions import CANCEL_ON_DISCONNECT, TRANSPORT_EXTENSION

__all__ = [
    "CachedRequestContext",
    "CanopyHTTPConnection",
    "CanopyRequest",
    "CanopySessionInterface",
    "CanopyWebsocketConnection",
    "CompactJSONProvider",
    "LazyMapAdapter",
    "LeanQuartTrio",
    "RouteCache",
    "body_too_large",
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
    usually complete already and is taken without entering a scope. Everything else
    (a body still arriving, one over the size limit, form parsing) goes the upstream
    way.
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

    orjson is several times faster than ``json``, whose C encoder still builds each
    float's repr as a Python object. It is given only what it encodes as ``json`` would: dict,
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
        per code, and only the view's own headers take the checked way.
        tests/unit/server/test_wrappers.py pins that both ways give the same
        response."""
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


class CanopyHTTPConnection(TrioASGIHTTPConnection):
    async def __call__(self, receive: Any, send: Any) -> None:
        if TRANSPORT_EXTENSION not in self.scope.get("extensions", ()):
            await super().__call__(receive, send)
            return
        request = self._request_from_scope(send)
        limit = self.app.config["MAX_CONTENT_LENGTH"]
        outcome = await _read_body(request, receive, limit, self.scope["headers"])
        if outcome is _Body.DISCONNECTED:
            return
        if outcome is _Body.TOO_LARGE:
            request.body.set_complete()
            request.canopy_rejection = body_too_large(limit)  # type: ignore[attr-defined]
        response = await self.app.handle_request(request)
        if isinstance(response, Response) and isinstance(response.response, DataBody):
            await _send_whole(send, response)
            return
        timeout = self.app.config["RESPONSE_TIMEOUT"]
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            await self._send_response(send, response)

    def _request_from_scope(self, send: Any) -> Request:
        """Quart's ``_create_request_from_scope`` (Quart 0.22), with the headers
        listed at once: ``Headers.add`` checks each value for line breaks, which
        Hypercorn's h11 and h2 have refused already, and each name is title-cased
        once, not on every request."""
        scope = self.scope
        items = [("Remote-Addr", (scope.get("client") or ["<local>"])[0])]
        for name, value in scope["headers"]:
            items.append((_title(name), value.decode("latin1")))
        headers = listed_headers(items)
        if scope["http_version"] < "1.1":
            headers.setdefault("Host", self.app.config["SERVER_NAME"] or "")
        path = scope["path"]
        path = path if path[0] == "/" else urlparse(path).path
        root_path = scope.get("root_path", "")
        if root_path != "":
            path = _normalise_path(path, root_path)
        return self.app.request_class(
            scope["method"],
            scope["scheme"],
            path,
            scope["query_string"],
            headers,
            root_path,
            scope["http_version"],
            max_content_length=self.app.config["MAX_CONTENT_LENGTH"],
            body_timeout=self.app.config["BODY_TIMEOUT"],
            send_push_promise=partial(self._send_push_promise, send),
            scope=scope,
        )


# Header names as Quart presents them (``Content-Type``), by their bytes on the wire.
# Bounded: names are the client's to choose.
_TITLES: dict[bytes, str] = {}
_MAX_TITLES = 512


def _title(name: bytes) -> str:
    title = _TITLES.get(name)
    if title is None:
        title = name.decode("latin1").title()
        if len(_TITLES) < _MAX_TITLES:
            _TITLES[name] = title
    return title


def body_too_large(limit: int) -> ApiError:
    """The 413 of a body over ``limit`` bytes, on any server. The connection cannot
    serve another request: the rest of this one's body may still be on its way (the
    transport reads it only to discard it)."""
    return ApiError(
        413,
        "body_too_large",
        f"request body exceeds {limit} bytes",
        headers={"Connection": "close"},
    )


class _Body(enum.Enum):
    COMPLETE = "complete"
    DISCONNECTED = "disconnected"
    TOO_LARGE = "too large"


async def _read_body(
    request: Request, receive: Any, limit: int | None, headers: Iterable[tuple[bytes, bytes]]
) -> _Body:
    """Read the whole body, refusing it as soon as it is known to exceed ``limit``."""
    if limit is not None and _declared_length(headers) > limit:
        return _Body.TOO_LARGE
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _Body.DISCONNECTED
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            return _Body.TOO_LARGE
        request.body.append(chunk)
        if not message.get("more_body", False):
            request.body.set_complete()
            return _Body.COMPLETE


def _declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    value = first_header(headers, b"content-length")
    return int(value) if value is not None and value.isdigit() else 0


async def _send_whole(send: Any, response: Response) -> None:
    body = cast(DataBody, response.response).data
    headers = [
        (name.lower().encode("latin1"), value.encode("latin1"))
        for name, value in response.headers.items()
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class CanopyWebsocketConnection(TrioASGIWebsocketConnection):
    """Quart-Trio's, with two changes.

    - An empty binary message stays ``b""``. Upstream reads a message as
      ``event.get("bytes") or event["text"]``, which turns an empty binary frame into
      ``None`` and breaks the view that receives it.
    - Under Canopy's transport the view runs in the ASGI call's own task and reads
      the ASGI messages itself (``websocket.receive()`` takes the next one), with no
      receive loop, memory channel, nursery or second task between the two: that is
      most of what an idle subscriber costs, and one task switch per message. The
      transport cancels the view when the client disconnects, as upstream's receive
      loop does, whether or not the view is waiting for a message at the time.
      Under any other server, upstream's shape: the receive loop runs in the calling
      task and feeds the view's task through a channel.
    """

    def __init__(self, app: Any, scope: Any) -> None:
        self.app = app
        self.scope = scope
        self._accepted = False
        self._closed = False
        self._transport: dict[str, Any] | None = scope.get("extensions", {}).get(
            TRANSPORT_EXTENSION
        )
        self._receive: Any = None
        self._view_scope: trio.CancelScope  # set by __call__ under Canopy's transport
        if self._transport is None:
            self.send_channel, self.receive_channel = trio.open_memory_channel[bytes | str](10)

    async def __call__(self, receive: Any, send: Any) -> None:
        if self._transport is not None:
            # What upstream's websocket factory takes ``receive`` from: here, the ASGI
            # messages themselves. Our own bound method kept on ourselves is a cycle,
            # which would leave the whole session (scope, websocket, headers) for the
            # collector: it is let go when the call ends.
            self.receive_channel = SimpleNamespace(receive=self._receive_message)  # type: ignore[assignment]
            try:
                websocket = self._create_websocket_from_scope(send)
                self._receive = receive
                with trio.CancelScope() as self._view_scope:
                    self._transport[CANCEL_ON_DISCONNECT](self._view_scope.cancel)
                    await ASGIWebsocketConnection.handle_websocket(self, websocket, send)
            finally:
                del self.receive_channel
            return
        websocket = self._create_websocket_from_scope(send)
        async with trio.open_nursery() as nursery:
            # Either side ending cancels the other, as upstream: the view's task
            # cancels this nursery when it returns, and vice versa.
            nursery.start_soon(self.handle_websocket, nursery, websocket, send)
            await self.handle_messages(nursery, receive)

    def _create_websocket_from_scope(self, send: Any) -> Any:
        websocket = super()._create_websocket_from_scope(send)
        # The raw ASGI send, for handlers that use an extension Quart does not know
        # (canopy.handlers.topics sends pre-encoded frames with it).
        websocket.asgi_send = send  # type: ignore[attr-defined]
        return websocket

    async def _receive_message(self) -> bytes | str:
        while True:
            event = await self._receive()
            kind = event["type"]
            if kind == "websocket.receive":
                return await self._received(event)
            if kind == "websocket.disconnect":
                # The transport has cancelled the view already; this makes sure.
                self._view_scope.cancel()
                await trio.lowlevel.checkpoint()

    async def _received(self, event: Any) -> bytes | str:
        """A ``websocket.receive`` event's message, announced on ``websocket_received``."""
        data = event.get("bytes")
        message = data if data is not None else event["text"]
        await websocket_received.send_async(
            message,
            _sync_wrapper=self.app.ensure_async,  # type: ignore[arg-type]
        )
        return cast("bytes | str", message)

    async def handle_messages(self, nursery: trio.Nursery, receive: Any) -> None:  # type: ignore[override]
        while True:
            event = await receive()
            if event["type"] == "websocket.receive":
                await self.send_channel.send(await self._received(event))
            elif event["type"] == "websocket.disconnect":
                break
        nursery.cancel_scope.cancel()


class LeanQuartTrio(QuartTrio):
    """Quart-Trio with the classes above, and the app methods Canopy replaces: each
    does what upstream's does, with less work per request."""

    route_cache: RouteCache
    asgi_http_class = CanopyHTTPConnection
    asgi_websocket_class = CanopyWebsocketConnection
    request_class = CanopyRequest
    session_interface = CanopySessionInterface()
    json_provider_class = CompactJSONProvider

    def request_context(self, request: Request) -> RequestContext:
        return CachedRequestContext(self, request)

    def ensure_async(self, func: Any) -> Any:
        # Quart asks this of every view, hook and session method on every request, and
        # ``inspect.iscoroutinefunction`` unwraps partials and markers first. A plain
        # ``async def`` (or a method of one) answers from its code flags.
        code = getattr(getattr(func, "__func__", func), "__code__", None)
        if code is not None and code.co_flags & inspect.CO_COROUTINE:
            return func
        return super().ensure_async(func)

    async def make_response(self, result: Any) -> ResponseTypes:
        # A view's JSON answer, ``value``, ``(value, status)`` or ``(value, status,
        # headers)``, is built at once (CompactJSONProvider.answer); anything else
        # goes Quart's way.
        value, status, headers = result, 200, None
        if type(result) is tuple:
            if len(result) == 2 and type(result[1]) is int:
                value, status = result
            elif len(result) == 3 and type(result[1]) is int and type(result[2]) is dict:
                value, status, headers = result
            else:
                return await super().make_response(result)
        if type(value) is dict or type(value) is list:
            return cast(CompactJSONProvider, self.json).answer(value, status, headers)
        return await super().make_response(result)

    def create_url_adapter(self, request: Any) -> Any:
        if request is None:
            return super().create_url_adapter(None)
        return LazyMapAdapter(partial(QuartTrio.create_url_adapter, self, request))

    def run_request(self, request: Request) -> Awaitable[ResponseTypes]:
        """Upstream's ``handle_request``, or the same without its idle steps."""
        if self._has_request_hooks(request):
            return super().handle_request(request)
        return self._handle_plainly(request)

    def _has_request_hooks(self, request: Request) -> bool:
        """Whether anything is registered that only Quart's own steps would run:
        teardown and after-request functions, listeners to its request signals, or a
        test client keeping the context."""
        # Spelt out, not a loop over the six signals: this runs on every request.
        return bool(
            request_started.receivers
            or request_finished.receivers
            or request_tearing_down.receivers
            or appcontext_pushed.receivers
            or appcontext_popped.receivers
            or appcontext_tearing_down.receivers
            or any(self.after_request_funcs.values())
            or any(self.teardown_request_funcs.values())
            or self.teardown_appcontext_funcs
            or request.scope.get("_quart._preserve_context", False)
        )

    async def _handle_plainly(self, request: Request) -> ResponseTypes:
        """Quart-Trio's ``handle_request`` when nothing is registered that its
        per-request steps exist for (see ``_has_request_hooks``).

        The same contexts (``request``, ``g``, the session), routing, before-request
        functions, view, error handlers and ``after_this_request`` functions, in the
        same order, without the steps that then do nothing: six signal sends, the
        teardown and after-request loops, and the context managers' awaits
        (tests/unit/server/test_app.py runs a route both ways).
        """
        context = self.request_context(request)
        app_context = _cv_app.get(None)
        app_token = None
        if app_context is None or app_context.app is not self:
            app_token = _cv_app.set(self.app_context())
        request_token = _cv_request.set(context)
        try:
            await context._push()  # the session, and the route match
            try:
                return await self._dispatch_plainly(context)
            except trio.Cancelled:
                raise
            except BaseExceptionGroup as error:  # as Quart-Trio's handle_request
                filtered, _ = error.split(trio.Cancelled)
                if filtered is not None:
                    raise filtered from None
                return await self.handle_exception(error)  # type: ignore[arg-type]
            except Exception as error:
                return await self.handle_exception(error)
        finally:
            await request.close()
            _cv_request.reset(request_token)
            if app_token is not None:
                _cv_app.reset(app_token)

    async def _dispatch_plainly(self, context: RequestContext) -> ResponseTypes:
        # full_dispatch_request, then finalize_request, less what _has_request_hooks
        # said is not there.
        result: ResponseReturnValue | HTTPException | None
        try:
            result = await self.preprocess_request(context)
            if result is None:
                result = await self.dispatch_request(context)
        except (Exception, BaseExceptionGroup) as error:
            result = await self.handle_user_exception(error)
        response = await self.make_response(result)
        if context._after_request_functions or not self.session_interface.is_null_session(
            context.session
        ):
            response = await self.process_response(response, context)
        return response
