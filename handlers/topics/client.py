"""A Trio client for Canopy's topics: subscribe, iterate, resume after reconnecting, publish.

Used by the tests, the load generator and any Trio program that consumes topics::

    async with connect_topics("ws://127.0.0.1:8000/ws", token=token) as client:
        async with client.subscribe("orders.1234") as sub:
            async for event in sub:
                if isinstance(event, Unrecovered):
                    ...  # messages were lost for good: reload the state, then go on
                else:
                    handle(event.data)

Resource handling: :func:`connect_topics` owns a nursery with one connection task
that reconnects with backoff and resubscribes each topic from the last offset it
delivered. Each subscription buffers at most ``queue_size`` events; a program that
stops reading makes the reader wait, and the server then treats it as any slow
consumer (it disconnects, and the client resumes).

Error handling: ``publish`` raises :class:`TopicsError` with the server's error code,
or ``ConnectionError`` if the connection dropped before the server answered (the
message may or may not have been published).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, wrap_client_stream

__all__ = [
    "PresenceEvent",
    "TopicMessage",
    "TopicsClient",
    "TopicsError",
    "Unrecovered",
    "connect_topics",
]


StreamOpener = Callable[[], Awaitable[trio.SocketStream]]


class TopicsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class TopicMessage:
    topic: str
    offset: int
    epoch: str
    data: Any
    key: str | None = None


@dataclass(frozen=True)
class Unrecovered:
    """The server could not replay what was missed on ``topic``: there is a gap."""

    topic: str
    epoch: str
    offset: int


@dataclass(frozen=True)
class PresenceEvent:
    """A client joined or left ``topic`` (for subscriptions made with ``presence=True``)."""

    topic: str
    event: str  # "join" or "leave"
    client: str
    info: Any = None


Event = TopicMessage | Unrecovered | PresenceEvent


@dataclass(eq=False)
class ClientSubscription:
    topic: str
    queue_size: int
    epoch: str | None = None
    offset: int | None = None  # the last delivered (None: from now on)
    token: str | None = None  # for this subscription only (sent again on each resubscribe)
    presence: bool = False
    subscribed: trio.Event = field(default_factory=trio.Event)
    error: TopicsError | None = None

    def __post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Event](self.queue_size)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._receive.__aiter__()

    async def receive(self) -> Event:
        return await self._receive.receive()

    async def _put(self, event: Event) -> None:
        await self._send.send(event)
        if isinstance(event, TopicMessage) and "*" not in self.topic:
            self.offset, self.epoch = event.offset, event.epoch


class TopicsClient:
    def __init__(
        self,
        url: str,
        token: str | None,
        queue_size: int,
        max_backoff: float,
        open_stream: StreamOpener | None = None,
    ) -> None:
        self.url = url
        self.open_stream = open_stream
        self.token = token
        self.queue_size = queue_size
        self.max_backoff = max_backoff
        self.subscriptions: dict[str, ClientSubscription] = {}
        self._ws: WebSocketConnection | None = None
        self._connected = trio.Event()
        self._connection_scope = trio.CancelScope()
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self.connects = 0
        self.close_codes: list[int] = []

    @asynccontextmanager
    async def subscribe(
        self,
        topic: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        token: str | None = None,
        presence: bool = False,
    ) -> AsyncIterator[ClientSubscription]:
        """``token``: grants for this subscription alone (the connection keeps its own);
        ``presence``: also receive join and leave events (as :class:`PresenceEvent`)."""
        sub = ClientSubscription(topic, self.queue_size, epoch, since, token, presence)
        self.subscriptions[topic] = sub
        try:
            if self._ws is not None:
                await self._send_subscribe(self._ws, sub)
            with trio.fail_after(10):
                await sub.subscribed.wait()
            if sub.error is not None:
                raise sub.error
            yield sub
        finally:
            del self.subscriptions[topic]
            if self._ws is not None and not self._ws.closed:
                with trio.move_on_after(1) as scope:
                    scope.shield = True
                    await self._ws.send_message(json.dumps({"op": "unsubscribe", "topic": topic}))

    def reconnect(self) -> None:
        """Drop the current connection at once; the client reconnects and resumes
        (after a token refresh, or to test that resuming works)."""
        self._connection_scope.cancel()

    async def publish(self, topic: str, data: Any, *, key: str | None = None) -> tuple[int, str]:
        """Publish and wait for the server's acknowledgement: ``(offset, epoch)``."""
        reply = await self.request({"op": "publish", "topic": topic, "data": data, "key": key})
        return reply["offset"], reply["epoch"]

    async def presence(self, topic: str) -> list[dict[str, Any]]:
        """Who is subscribed to ``topic`` now: ``[{"client", "info"}, ...]``."""
        return list((await self.request({"op": "presence", "topic": topic}))["clients"])

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._connected.wait()
        ws = self._ws
        assert ws is not None
        request_id = next(self._ids)
        done: tuple[trio.Event, list[dict[str, Any]]] = (trio.Event(), [])
        self._waiting[request_id] = done
        try:
            await ws.send_message(json.dumps({**body, "id": request_id}))
            await done[0].wait()
        finally:
            del self._waiting[request_id]
        if not done[1]:
            raise ConnectionError("the connection dropped before the server answered")
        reply = done[1][0]
        if reply.get("type") == "error":
            raise TopicsError(reply["code"], reply["message"])
        return reply

    # -- the connection task -------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, and reconnect with jittered exponential backoff whenever it drops; the
        first attempt must succeed (its error is raised to whoever started the client)."""
        failures = 0
        while True:
            connects = self.connects
            try:
                await self._connect_once(task_status)
            except (OSError, ExceptionGroup) as exc:
                if not _dropped(exc) or self.connects == 0:
                    raise
            failures = 0 if self.connects > connects else failures + 1
            task_status = trio.TASK_STATUS_IGNORED
            self._connected = trio.Event()
            self._ws = None
            for event, _ in self._waiting.values():
                event.set()  # no reply: the caller gets ConnectionError
            delay = min(self.max_backoff, 0.05 * 2 ** min(failures, 10))
            await trio.sleep(random.uniform(delay / 2, delay))

    async def _connect_once(self, task_status: trio.TaskStatus[None]) -> None:
        parts = urlsplit(self.url)
        resource = parts.path or "/"
        if self.token:
            resource += "?" + urlencode({"token": self.token})
        if self.open_stream is not None:
            stream = await self.open_stream()
        else:
            stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
        # We own the TCP stream: trio-websocket 0.12 leaves it open when the server closes first.
        async with stream, trio.open_nursery() as nursery:
            self._connection_scope = nursery.cancel_scope
            ws = await wrap_client_stream(nursery, stream, parts.hostname or "", resource)
            try:
                self._ws = ws
                for sub in list(self.subscriptions.values()):
                    await self._send_subscribe(ws, sub)
                self.connects += 1
                self._connected.set()
                task_status.started()
                await self._read(ws)
            finally:
                if ws.closed is not None:
                    self.close_codes.append(ws.closed.code)
                nursery.cancel_scope.cancel()

    async def _send_subscribe(self, ws: WebSocketConnection, sub: ClientSubscription) -> None:
        body: dict[str, Any] = {"op": "subscribe", "topic": sub.topic, "id": f"s:{sub.topic}"}
        if sub.offset is not None:
            body["since"] = sub.offset
            if sub.epoch is not None:
                body["epoch"] = sub.epoch
        if sub.token is not None:
            body["token"] = sub.token
        if sub.presence:
            body["presence"] = True
        await ws.send_message(json.dumps(body))

    async def _read(self, ws: WebSocketConnection) -> None:
        while True:
            frame = json.loads(await ws.get_message())
            kind = frame.get("type")
            sub = self.subscriptions.get(frame.get("topic", ""))
            if kind == "message":
                # A wildcard subscription receives messages of the topics below it.
                sub = sub or self._wildcard_for(frame["topic"])
                if sub is not None:
                    await sub._put(
                        TopicMessage(
                            frame["topic"],
                            frame["offset"],
                            frame["epoch"],
                            frame["data"],
                            frame.get("key"),
                        )
                    )
            elif kind == "subscribed" and sub is not None:
                await self._subscribed(sub, frame)
            elif kind == "presence" and "event" in frame and sub is not None:
                await sub._put(
                    PresenceEvent(
                        frame["topic"], frame["event"], frame["client"], frame.get("info")
                    )
                )
            elif kind == "error" and str(frame.get("id", "")).startswith("s:"):
                refused = self.subscriptions.get(frame["id"][2:])
                if refused is not None:
                    refused.error = TopicsError(frame["code"], frame["message"])
                    refused.subscribed.set()
            elif "id" in frame and frame["id"] in self._waiting:
                event, replies = self._waiting[frame["id"]]
                replies.append(frame)
                event.set()

    async def _subscribed(self, sub: ClientSubscription, frame: dict[str, Any]) -> None:
        asked = sub.offset is not None
        if "epoch" in frame:
            if asked and not frame["recovered"]:
                await sub._put(Unrecovered(sub.topic, frame["epoch"], frame["offset"]))
            if not asked or not frame["recovered"]:
                sub.offset, sub.epoch = frame["offset"], frame["epoch"]
        sub.subscribed.set()

    def _wildcard_for(self, topic: str) -> ClientSubscription | None:
        for pattern, sub in self.subscriptions.items():
            if pattern == "*" or (pattern.endswith(".*") and topic.startswith(pattern[:-1])):
                return sub
        return None


_DROPS = (OSError, ConnectionClosed, HandshakeError, trio.BrokenResourceError)


def _dropped(exc: BaseException) -> bool:
    """Whether ``exc`` (or every exception in the group) means the connection dropped."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_dropped(inner) for inner in exc.exceptions)
    return isinstance(exc, _DROPS)


@asynccontextmanager
async def connect_topics(
    url: str,
    *,
    token: str | None = None,
    queue_size: int = 1000,
    max_backoff: float = 5.0,
    open_stream: StreamOpener | None = None,
) -> AsyncIterator[TopicsClient]:
    """Connect (the first attempt must succeed) and keep reconnecting until exit.

    ``open_stream``: how to reach the server, if not by TCP to the URL's host and port
    (a Unix socket, say); the URL still names the path and the ``Host``."""
    client = TopicsClient(url, token, queue_size, max_backoff, open_stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        yield client
        nursery.cancel_scope.cancel()
