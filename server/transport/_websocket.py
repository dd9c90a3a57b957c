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

from canopy.handlers.topics import FRAMES_EXTENSION

__all__ = ["CanopyWSStream", "install"]


class _Advertising:
    """A task group that adds the frames extension to a WebSocket scope before the
    app is spawned with it (Hypercorn builds the scope inside ``WSStream.handle``)."""

    def __init__(self, task_group: Any) -> None:
        self._task_group = task_group

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        scope["extensions"][FRAMES_EXTENSION] = {}
        return await self._task_group.spawn_app(app, config, scope, send)

    def spawn(self, func: Any, *args: Any) -> None:
        self._task_group.spawn(func, *args)


class CanopyWSStream(WSStream):
    def __init__(self, app: Any, config: Any, context: Any, task_group: Any, *args: Any) -> None:
        # The stream only spawns into its task group; it never enters or exits it.
        super().__init__(app, config, context, _Advertising(task_group), *args)  # type: ignore[arg-type]

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
    h11.WSStream = CanopyWSStream  # type: ignore[misc,assignment]
    h2.WSStream = CanopyWSStream  # type: ignore[misc,assignment]
