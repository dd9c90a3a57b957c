"""A leaner ASGI HTTP connection for Quart-Trio when Canopy's transport serves it.

Quart-Trio opens a nursery with two tasks per request: one runs the view, the other
waits for ``http.disconnect`` to cancel it. Under Canopy's transport the request
task already runs in a cancel scope that a disconnect cancels (see ``_transport``),
so the view can run in the request task itself: the body is read first (it is
bounded by ``MAX_CONTENT_LENGTH``), then the view runs, then the response is sent,
with a whole body in one ASGI message. Under any other server this class behaves
exactly like Quart-Trio's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, cast

import trio
from quart.signals import websocket_received
from quart.wrappers import Request
from quart.wrappers.response import DataBody, Response
from quart_trio.asgi import TrioASGIHTTPConnection, TrioASGIWebsocketConnection

from handlers import ApiError, first_header

__all__ = ["TRANSPORT_EXTENSION", "CanopyHTTPConnection", "CanopyWebsocketConnection"]

TRANSPORT_EXTENSION = "canopy.transport"


class CanopyHTTPConnection(TrioASGIHTTPConnection):
    async def __call__(self, receive: Any, send: Any) -> None:
        if TRANSPORT_EXTENSION not in self.scope.get("extensions", ()):
            await super().__call__(receive, send)
            return
        request = self._create_request_from_scope(send)
        limit = self.app.config["MAX_CONTENT_LENGTH"]
        outcome = await _read_body(request, receive, limit, self.scope["headers"])
        if outcome is _Body.DISCONNECTED:
            return
        if outcome is _Body.TOO_LARGE:
            request.body.set_complete()
            request.canopy_rejection = ApiError(  # type: ignore[attr-defined]
                413, "body_too_large", f"request body exceeds {limit} bytes"
            )
        response = await self.app.handle_request(request)
        if isinstance(response, Response) and isinstance(response.response, DataBody):
            await _send_whole(send, response)
            return
        timeout = self.app.config["RESPONSE_TIMEOUT"]
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            await self._send_response(send, response)


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
    - The ASGI receive loop runs in the calling task instead of a task of its own
      (which left the caller only waiting on the nursery): one task fewer for each
      open WebSocket, which is most of what an idle subscriber costs.
    """

    async def __call__(self, receive: Any, send: Any) -> None:
        websocket = self._create_websocket_from_scope(send)
        async with trio.open_nursery() as nursery:
            # Either side ending cancels the other, as upstream: the view's task
            # cancels this nursery when it returns, and vice versa.
            nursery.start_soon(self.handle_websocket, nursery, websocket, send)
            await self.handle_messages(nursery, receive)

    def _create_websocket_from_scope(self, send: Any) -> Any:
        # The raw ASGI send, for handlers that use an extension Quart does not know
        # (handlers.topics sends pre-encoded frames with it).
        websocket = super()._create_websocket_from_scope(send)
        websocket.asgi_send = send  # type: ignore[attr-defined]
        return websocket

    async def handle_messages(self, nursery: trio.Nursery, receive: Any) -> None:  # type: ignore[override]
        while True:
            event = await receive()
            if event["type"] == "websocket.receive":
                data = event.get("bytes")
                message = data if data is not None else event["text"]
                await websocket_received.send_async(
                    message,
                    _sync_wrapper=self.app.ensure_async,  # type: ignore[arg-type]
                )
                await self.send_channel.send(message)
            elif event["type"] == "websocket.disconnect":
                break
        nursery.cancel_scope.cancel()
