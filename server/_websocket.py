"""Hypercorn's WebSocket stream plus one ASGI extension: pre-encoded frames in one send.

A broadcast to a thousand subscribers sends the same frame a thousand times. With
the ``canopy.websocket.frames`` extension (advertised in the scope) the app passes
the frame bytes it built once, and a batch of them goes out in one write, instead
of wsproto encoding each message per subscriber. When the connection negotiated an
extension that changes frames (permessage-deflate), the texts are sent the usual way.
"""

from __future__ import annotations

from typing import Any

from hypercorn.protocol import h2, h11
from hypercorn.protocol.events import Data
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage

from handlers.topics import FRAMES_EXTENSION

__all__ = ["CanopyWSStream", "install"]


class CanopyWSStream(WSStream):
    async def handle(self, event: Any) -> None:
        await super().handle(event)
        scope = getattr(self, "scope", None)
        if scope is not None and FRAMES_EXTENSION not in scope["extensions"]:
            scope["extensions"][FRAMES_EXTENSION] = {}

    async def app_send(self, message: Any) -> None:
        if message is None or message["type"] != FRAMES_EXTENSION:
            await super().app_send(message)
            return
        if self.closed or self.state != ASGIWebsocketState.CONNECTED:
            return
        if self.connection.state != ConnectionState.OPEN:
            return
        if getattr(getattr(self.connection, "_proto", None), "extensions", None):
            for text in message["texts"]:
                await self._send_wsproto_event(TextMessage(data=text))
        else:
            await self.send(Data(stream_id=self.stream_id, data=message["bytes"]))


def install() -> None:
    """Make Hypercorn's HTTP/1.1 and HTTP/2 protocols create our stream class."""
    h11.WSStream = CanopyWSStream  # type: ignore[misc]
    h2.WSStream = CanopyWSStream  # type: ignore[misc]
