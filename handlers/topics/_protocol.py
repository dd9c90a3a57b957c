"""The WebSocket protocol's vocabulary: parsing client frames, building server frames.

Pure functions over JSON text, so the protocol can be tested without a socket. The
protocol itself is documented in docs/PROTOCOL.md; close codes are named here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from canopy.nurseries import strict_json_loads
from canopy.nurseries.fanout import Message, Presence

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_POLICY",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOO_BIG",
    "FRAMES_EXTENSION",
    "OPERATIONS",
    "Frame",
    "Operation",
    "ProtocolError",
    "dumps",
    "encode_frames",
    "encode_text_frame",
    "error_frame",
    "message_frame",
    "parse",
    "presence_frame",
]

CLOSE_GOING_AWAY = 1001  # the server is shutting down: reconnect elsewhere and resume
CLOSE_POLICY = 1008  # the client kept sending frames that were refused
CLOSE_TOO_BIG = 1009  # a frame over the size limit (sent by Hypercorn)
CLOSE_SLOW_CONSUMER = 4000  # the client read too slowly: resume from the offsets it has

# An ASGI extension (implemented by Canopy's server): send pre-encoded text frames in one
# message, {"type": FRAMES_EXTENSION, "bytes": frames, "texts": [their texts]}.
FRAMES_EXTENSION = "canopy.websocket.frames"

OPERATIONS = ("subscribe", "unsubscribe", "publish", "presence", "ping")


class ProtocolError(ValueError):
    """A refused frame: ``code`` for programs, the message for people."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True)
class Operation:
    op: str
    body: dict[str, Any]
    request_id: Any = None

    def error(self, code: str, message: str) -> ProtocolError:
        return ProtocolError(code, message, self.request_id)

    def text(self, name: str, *, required: bool = True) -> str | None:
        value = self.body.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise ProtocolError(
                "invalid_field", f"{name}: must be a non-empty string", self.request_id
            )
        return value

    def offset(self, name: str) -> int | None:
        value = self.body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ProtocolError(
                "invalid_field", f"{name}: must be an offset (integer >= 0)", self.request_id
            )
        return value


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def parse(frame: str | bytes) -> Operation:
    if isinstance(frame, bytes):
        raise ProtocolError("binary_frame", "frames must be JSON text, not binary")
    try:
        body = strict_json_loads(frame)
    except (ValueError, RecursionError):  # NaN and Infinity too: no browser reads them
        raise ProtocolError("invalid_json", "the frame is not valid JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError("invalid_json", "a frame must be a JSON object")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str | int):
        raise ProtocolError("invalid_field", "id: must be a string or an integer")
    op = body.get("op")
    if op not in OPERATIONS:
        raise ProtocolError(
            "unknown_op", f"op: must be one of {', '.join(OPERATIONS)} (got {op!r})", request_id
        )
    return Operation(op, body, request_id)


def error_frame(code: str, message: str, request_id: Any = None) -> str:
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        body["id"] = request_id
    return dumps(body)


class Frame(str):
    """A frame's text that also keeps its WebSocket encoding, built on first use."""

    _encoded: bytes | None = None

    def encoded(self) -> bytes:
        if self._encoded is None:
            self._encoded = encode_text_frame(self)
        return self._encoded


def encode_frames(texts: Sequence[str]) -> bytes:
    """Text frames, one after the other (a :class:`Frame`'s encoding reused)."""
    return b"".join(t.encoded() if isinstance(t, Frame) else encode_text_frame(t) for t in texts)


def encode_text_frame(text: str) -> bytes:
    """A server's (unmasked) final text frame, RFC 6455 section 5.2."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def _encode_message(message: Message) -> Frame:
    body = {"type": "message", "topic": message.topic, "offset": message.offset}
    body["epoch"] = message.epoch
    if message.key is not None:
        body["key"] = message.key
    body["data"] = message.data
    return Frame(dumps(body))


def message_frame(message: Message) -> Frame:
    """Encoded once per message, however many subscribers receive it."""
    return message.wire(_encode_message)


def presence_frame(event: Presence) -> str:
    return dumps(
        {
            "type": "presence",
            "topic": event.topic,
            "event": event.event,
            "client": event.client,
            "info": event.info,
        }
    )
