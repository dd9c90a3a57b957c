"""Leaner ASGI connections for Quart-Trio when Canopy's transport serves them.

Quart-Trio opens a nursery with two tasks per request: one runs the view, the other
waits for ``http.disconnect`` to cancel it. Under Canopy's transport the request
task already runs in a cancel scope that a disconnect cancels (see ``transport``),
so the view can run in the request task itself: the body is read first (it is
bounded by ``MAX_CONTENT_LENGTH``), then the view runs, then the response is sent,
with a whole body in one ASGI message. A WebSocket's view likewise runs in the
call's task (see ``CanopyWebsocketConnection``). Under any other server these
classes behave like Quart-Trio's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from functools import partial
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlparse

import trio
from quart.asgi import ASGIWebsocketConnection, _normalise_path
from quart.signals import websocket_received
from quart.wrappers import Request
from quart.wrappers.response import DataBody, Response
from quart_trio.asgi import TrioASGIHTTPConnection, TrioASGIWebsocketConnection

from canopy.handlers import ApiError, first_header

from ..transport._extensions import CANCEL_ON_DISCONNECT, TRANSPORT_EXTENSION
from ._wrappers import listed_headers

__all__ = [
    "CanopyHTTPConnection",
    "CanopyWebsocketConnection",
    "body_too_large",
]


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
        once, not on every request. 2.9 µs for three headers became 0.7."""
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
        else:
            # What upstream's websocket factory takes ``receive`` from: here, the ASGI
            # messages themselves.
            self.receive_channel = SimpleNamespace(receive=self._receive_message)  # type: ignore[assignment]

    async def __call__(self, receive: Any, send: Any) -> None:
        websocket = self._create_websocket_from_scope(send)
        if self._transport is not None:
            self._receive = receive
            with trio.CancelScope() as self._view_scope:
                self._transport[CANCEL_ON_DISCONNECT](self._view_scope.cancel)
                await ASGIWebsocketConnection.handle_websocket(self, websocket, send)
            return
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
