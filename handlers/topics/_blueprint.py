"""The web layer over :class:`TopicsService`: ``/ws`` and ``/topics/...`` (docs/PROTOCOL.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

import trio
from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, request, websocket
from quart_schema import document_querystring, document_response

from canopy.nurseries.fanout import BrokerUnavailable, HubError, InvalidTopic, SubscriberGone

from .._errors import ApiError
from .._requests import bearer_token, int_arg
from .._schema import ErrorBody, body
from ..grants import Grants, InvalidToken
from ._endpoint import serve_socket
from ._protocol import FRAMES_EXTENSION, encode_frames
from ._service import Forbidden, TopicsService

__all__ = ["create_blueprint"]

MAX_HISTORY = 1000
# The browser client: a day in caches, then revalidated by its ETag, so that an
# upgrade reaches every tab within a day and costs a 304 otherwise.
CLIENT_MAX_AGE = 86400


class _QuartSocket:
    """Quart's websocket object as a :class:`Socket`; the object itself, not the
    context-local proxy, because the hub's pumps send from outside the request.

    Where the server offers the frames extension (Canopy's does), a batch of frames
    goes out as one ASGI message of pre-encoded bytes."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._asgi_send = getattr(ws, "asgi_send", None)
        if FRAMES_EXTENSION not in ws.scope.get("extensions", {}):
            self._asgi_send = None
        self._accepted = False

    async def receive(self) -> str | bytes:
        return await self._ws.receive()

    async def send(self, frames: Sequence[str]) -> None:
        try:
            await self._send(frames)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            # The ASGI spec has a server raise an OSError for a connection that is
            # gone; a client that left is not a fault of ours.
            raise SubscriberGone(str(exc) or type(exc).__name__) from exc

    async def _send(self, frames: Sequence[str]) -> None:
        if self._asgi_send is None:
            for frame in frames:
                await self._ws.send(frame)
            return
        if not self._accepted:
            # Quart accepts on a send or receive of its own; frames sent past it, before
            # the handshake, the transport would drop (a first frame, say).
            await self._ws.accept()
            self._accepted = True
        encoded = encode_frames(frames)
        await self._asgi_send({"type": FRAMES_EXTENSION, "bytes": encoded, "texts": frames})

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


def _http_grants(service: TopicsService) -> Grants:
    try:
        return service.grants(bearer_token(request._get_current_object()))  # type: ignore[attr-defined]
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", str(exc)) from None


def _topic_errors(exc: Exception) -> ApiError:
    if isinstance(exc, InvalidTopic):
        return ApiError(422, "invalid_topic", str(exc), field="topic")
    if isinstance(exc, Forbidden):
        return ApiError(403, "forbidden", str(exc))
    if isinstance(exc, BrokerUnavailable):
        return ApiError(503, "broker_unavailable", str(exc), headers={"Retry-After": "1"})
    return ApiError(429, "limit_reached", str(exc), headers={"Retry-After": "1"})


class NewMessage(BaseModel):
    """What ``POST /topics/{topic}/messages`` takes: validated and documented by this
    model alone (``@body``)."""

    model_config = ConfigDict(extra="forbid")

    data: Any = Field(description="any JSON")
    key: str | None = Field(None, min_length=1, description="for the latest policy")


class Published(BaseModel):
    topic: str
    offset: int
    epoch: str


class HistoryQuery(BaseModel):
    since: int | None = Field(None, ge=0)
    epoch: str | None = None
    limit: int = Field(100, ge=1, le=MAX_HISTORY)


class TopicMessageOut(BaseModel):
    """``Message.to_dict()``: one message of a topic's history."""

    topic: str
    offset: int
    epoch: str
    data: Any
    key: str | None = None
    time: float


class History(BaseModel):
    topic: str
    epoch: str
    offset: int
    recovered: bool
    messages: list[TopicMessageOut]


class Client(BaseModel):
    client: str
    info: Any = None


class PresenceOut(BaseModel):
    topic: str
    clients: list[Client]


def create_blueprint(service: TopicsService) -> Blueprint:
    blueprint = Blueprint("topics", __name__)
    client = (resources.files("canopy.handlers.topics") / "js" / "canopy.js").read_bytes()
    client_etag = hashlib.sha256(client).hexdigest()[:16]

    @blueprint.get("/canopy.js")
    async def client_module() -> Any:
        """canopy.js, the browser client (docs/PROTOCOL.md, "From a browser")."""
        headers = {"Cache-Control": f"public, max-age={CLIENT_MAX_AGE}", "ETag": f'"{client_etag}"'}
        if client_etag in request.if_none_match:
            return "", 304, headers
        return client, 200, {**headers, "Content-Type": "text/javascript; charset=utf-8"}

    @blueprint.websocket("/ws")
    async def ws() -> None:
        current = websocket._get_current_object()  # type: ignore[attr-defined]
        await serve_socket(service, bearer_token(current), _QuartSocket(current))

    @blueprint.post("/topics/<topic>/messages")
    @body(NewMessage, auth=lambda: _http_grants(service))
    @document_response(Published, 202)
    @document_response(ErrorBody, 403)
    async def publish(topic: str, data: NewMessage, who: Grants) -> Any:
        try:
            message = await service.publish(who, topic, data.data, data.key)
        except (InvalidTopic, Forbidden, HubError) as exc:
            raise _topic_errors(exc) from None
        return {"topic": topic, "offset": message.offset, "epoch": message.epoch}, 202

    @blueprint.get("/topics/<topic>/history")
    @document_querystring(HistoryQuery)
    @document_response(History, 200)
    async def history(topic: str) -> Any:
        grants = _http_grants(service)
        since = int_arg("since", None, 0, 2**63 - 1)
        limit = int_arg("limit", 100, 1, MAX_HISTORY)
        epoch = request.args.get("epoch") or None
        try:
            page = await service.history(grants, topic, since, epoch, limit)
        except (InvalidTopic, Forbidden) as exc:
            raise _topic_errors(exc) from None
        return {
            "topic": topic,
            "epoch": page.epoch,
            "offset": page.offset,
            "recovered": page.recovered,
            "messages": [m.to_dict() for m in page.messages],
        }

    @blueprint.get("/topics/<topic>/presence")
    @document_response(PresenceOut, 200)
    async def presence(topic: str) -> Any:
        grants = _http_grants(service)
        try:
            return {"topic": topic, "clients": service.presence(grants, topic)}
        except (InvalidTopic, Forbidden) as exc:
            raise _topic_errors(exc) from None

    return blueprint
