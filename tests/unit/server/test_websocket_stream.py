"""The frames extension is in the WebSocket scope before the app is spawned with it."""

from __future__ import annotations

from typing import Any

from hypercorn.config import Config
from hypercorn.protocol.events import Request

from canopy.handlers.topics import FRAMES_EXTENSION
from canopy.server.transport._hypercorn import CanopyWSStream


class RecordingTaskGroup:
    def __init__(self) -> None:
        self.extensions_at_spawn: dict[str, Any] | None = None

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        self.extensions_at_spawn = dict(scope["extensions"])

        async def put(message: Any) -> None:
            pass

        return put

    def spawn(self, func: Any, *args: Any) -> None:
        pass


async def test_the_scope_advertises_frames_before_the_app_starts() -> None:
    group = RecordingTaskGroup()

    async def send(event: Any) -> None:
        pass

    stream = CanopyWSStream(
        None, Config(), None, group, False, ("127.0.0.1", 1), ("127.0.0.1", 2), send, 1
    )
    headers = [
        (b"host", b"test"),
        (b"upgrade", b"websocket"),
        (b"connection", b"upgrade"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13"),
    ]
    await stream.handle(
        Request(
            stream_id=1,
            headers=headers,
            http_version="1.1",
            method="GET",
            raw_path=b"/ws",
            state={},
        )
    )
    assert group.extensions_at_spawn is not None
    assert FRAMES_EXTENSION in group.extensions_at_spawn
