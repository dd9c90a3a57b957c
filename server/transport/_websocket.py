"""WebSocket sessions the transport runs itself: an upgrade, wsproto's frames, a handler.

A WebSocket served through ASGI costs, per connection, Hypercorn's stream and its
wsproto connection, an app task with its queue, and Quart's websocket object and
contexts: about two thirds of an idle subscriber's memory. For the paths an app
hands the transport (``CanopyApp.transport_websockets``, ``/ws`` when the topics
API is included) the connection's own task answers the upgrade and runs the handler,
which reads and writes through a :class:`ServerWebSocket`: nothing else per connection.

What the transport takes is only the plain case: a complete ``GET`` for one of those
paths on a fresh HTTP/1.1 connection, with a valid version 13 upgrade and no
compression to negotiate (none offered, or ``websocket_compression`` off). Anything
else goes to Hypercorn as before, which answers, negotiates and refuses as it always
has; Quart's route stays registered for it and for servers other than Canopy's.

Error handling: what the client gets wrong in a frame ends the connection with the
close code wsproto names (1002, 1007); a message over ``websocket_max_message_size``
with 1009, as Hypercorn does. A client that leaves raises :class:`SubscriberGone`
in whatever reads or writes next.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from canopy.handlers.topics import CLOSE_TOO_BIG, encode_frames
from canopy.nurseries.fanout import SubscriberGone

__all__ = ["ServerWebSocket", "Upgrade", "WebSocketHandler", "WebSocketSession", "parse_upgrade"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 16384  # what h11 allows a request head


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A WebSocket upgrade request the transport takes (see :func:`parse_upgrade`)."""

    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]  # lower-case names, as ASGI spells them
    accept: bytes  # Sec-WebSocket-Accept


# One session on its socket, until it is over.
WebSocketSession = Callable[["ServerWebSocket"], Awaitable[None]]
# Given the upgrade's request, the session to run: it reads what it needs of the
# request first, so that none of it is kept for the connection's lifetime.
WebSocketHandler = Callable[[Upgrade], WebSocketSession]


def parse_upgrade(
    data: bytes, paths: Mapping[str, object], *, compression: bool
) -> tuple[Upgrade, bytes] | None:
    """The upgrade at the start of ``data`` and the bytes after it, if the transport
    should take it; None leaves the connection to Hypercorn."""
    end = data.find(b"\r\n\r\n", 0, MAX_HEAD)
    if end < 0 or not data.startswith(b"GET "):
        return None
    request_line, *lines = data[:end].decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        return None
    path, _, query = parts[1].partition("?")
    if path not in paths:
        return None
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None  # malformed, or folded: Hypercorn's to refuse
        headers.append((name.lower().encode("latin-1"), value.strip().encode("latin-1")))
    if not (
        _tokens(headers, b"upgrade") >= {b"websocket"}
        and _tokens(headers, b"connection") >= {b"upgrade"}
        and _values(headers, b"sec-websocket-version") == [b"13"]
        and _values(headers, b"host")
    ):
        return None
    keys = _values(headers, b"sec-websocket-key")
    if len(keys) != 1 or not _is_key(keys[0]):
        return None
    if compression and any(
        b"permessage-deflate" in value for value in _values(headers, b"sec-websocket-extensions")
    ):
        return None  # Hypercorn negotiates it
    accept = base64.b64encode(hashlib.sha1(keys[0] + _GUID).digest())
    return Upgrade(path, query.encode("latin-1"), headers, accept), data[end + 4 :]


def _values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


def _tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    return {
        token.strip().lower() for value in _values(headers, name) for token in value.split(b",")
    }


def _is_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        return False


def accept_response(upgrade: Upgrade, extra: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The 101 answer, with the headers every response of the server carries."""
    lines = [
        b"HTTP/1.1 101 \r\nupgrade: WebSocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
        upgrade.accept,
        b"\r\n",
    ]
    for name, value in extra:
        lines += [name, b": ", value, b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)


class Wire(Protocol):
    """The connection under a WebSocket (``_connection.Connection``)."""

    async def read(self) -> bytes: ...
    async def write(self, data: bytes = b"") -> bool: ...
    def write_nowait(self, data: bytes) -> bool: ...
    def queue(self, data: bytes) -> None: ...


class ServerWebSocket:
    """The server's side of one WebSocket, read and written by the connection's task
    and whoever sends to it (the hub's deliveries); a ``Socket`` for the topics'
    :class:`~canopy.handlers.topics.Session`.

    Resource handling: the frame parser is closed when the socket closes, which
    breaks the reference cycle wsproto's parser generator keeps, so an abandoned
    connection is freed by refcounting."""

    __slots__ = (
        "_connection",
        "_max_size",
        "_message",
        "_on_drain",
        "_proto",
        "_ready",
        "_size",
        "closed",
    )

    def __init__(self, connection: Wire, trailing: bytes, max_size: int) -> None:
        self._connection = connection
        self._max_size = max_size
        self._proto: FrameProtocol | None = FrameProtocol(client=False, extensions=[])
        self._ready: list[str | bytes] = []  # whole messages read, not yet received
        self._message: list[Any] = []  # the parts of a fragmented message so far
        self._size = 0
        self._on_drain: Callable[[], object] | None = None
        self.closed = False
        if trailing:
            self._feed(trailing)

    async def receive(self) -> str | bytes:
        """The next message; :class:`SubscriberGone` once the client has left."""
        while not self._ready:
            if self._proto is None:
                raise SubscriberGone("the client closed the WebSocket")
            data = await self._connection.read()
            if not data:
                self._release()
                raise SubscriberGone("the client went away")
            self._feed(data)
            await self._connection.write()  # pongs, or the close a bad frame earned
        return self._ready.pop(0)

    async def send(self, frames: Sequence[str]) -> None:
        """Text frames, in one write."""
        if self.closed:
            raise SubscriberGone("the WebSocket is closed")
        self._connection.queue(encode_frames(frames))
        await self.drain()

    def on_drain(self, end: Callable[[], object] | None) -> None:
        """Have ``end`` called when the server drains: the session's to end itself
        (it closes with 1001, ``CLOSE_GOING_AWAY``). A session that asks for nothing
        runs until the drain's grace is over."""
        self._on_drain = end

    def server_draining(self) -> None:
        """The server has begun a graceful stop (the transport calls this)."""
        if self._on_drain is not None:
            self._on_drain()

    def send_nowait(self, data: bytes) -> bool:
        """Encoded frames, written now as far as the socket takes them; False if some
        are held for :meth:`drain`. Dropped once the WebSocket is closed."""
        if self.closed:
            return True
        return self._connection.write_nowait(data)

    async def drain(self) -> None:
        """Until what is queued (``send_nowait``'s remainder among it) is written."""
        if not await self._connection.write():
            self._release()
            raise SubscriberGone("the client went away")

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame and wait (bounded by the caller) for the client's, or
        the end of the connection; then the connection closes."""
        if self.closed or self._proto is None:
            return
        await self._connection.write(bytes(self._proto.close(code, reason)))
        self.closed = True  # no more messages out; the client's close is still read
        while self._proto is not None:
            data = await self._connection.read()
            if not data:
                break
            self._feed(data)
        self._release()

    def _feed(self, data: bytes) -> None:
        proto = self._proto
        if proto is None:
            return
        proto.receive_bytes(data)
        try:
            for frame in proto.received_frames():
                opcode = frame.opcode
                if opcode is Opcode.PING:
                    self._connection.queue(bytes(proto.pong(cast(bytes, frame.payload))))
                elif opcode is Opcode.CLOSE:
                    self._closed_by_client(proto, *frame.payload)
                    return
                elif opcode is not Opcode.PONG:
                    self._part(frame.payload, frame.message_finished)
        except ParseFailed as exc:
            self._fail(exc.code, str(exc))
        except _TooBig:
            self._fail(CLOSE_TOO_BIG, f"a message over {self._max_size} bytes")

    def _part(self, payload: Any, finished: bool) -> None:
        """One frame's part of a message; the message is ready with its last part."""
        self._size += len(payload)
        if self._size > self._max_size:
            raise _TooBig
        if not finished:
            self._message.append(payload)
            return
        if self._message:
            parts, self._message = [*self._message, payload], []
            payload = "".join(parts) if isinstance(payload, str) else b"".join(parts)
        self._ready.append(payload if isinstance(payload, str) else bytes(payload))
        self._size = 0

    def _closed_by_client(self, proto: FrameProtocol, code: Any, reason: Any) -> None:
        if not self.closed:  # answer it; after our own close, it is the answer
            if code is CloseReason.NO_STATUS_RCVD:
                code = None
            self._connection.queue(bytes(proto.close(code, reason or None)))
        self.closed = True
        self._release()

    def _fail(self, code: int, reason: str) -> None:
        if self._proto is not None and not self.closed:
            self._connection.queue(bytes(self._proto.close(code, reason[:120])))
        self.closed = True
        self._release()

    def _release(self) -> None:
        """No more reading: what was read before stays to be received."""
        proto, self._proto = self._proto, None
        if proto is not None:
            proto._parse_more.close()
        self._message.clear()


class _TooBig(Exception):
    pass
