"""``/ws`` run by Canopy's transport itself (``canopy.server.transport._websocket``):
which upgrades it takes, and the WebSocket protocol it then speaks on its own, against
a real server and a wsproto client on a real socket."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

from canopy.server.config._hypercorn import CanopyConfig
from canopy.server.pipeline._quart import CanopyWebsocketConnection
from canopy.server.transport._websocket import ServerWebSocket, parse_upgrade
from canopy.showcase import create_app
from canopy.testing import Served, serve_app

PATHS = {"/ws": object()}
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example, answered s3pPLMBiTxaQ9kYGzzhZRbK+xOo=


def _upgrade(*, target: bytes = b"/ws", version: bytes = b"HTTP/1.1", extra: bytes = b"") -> bytes:
    return (
        b"GET " + target + b" " + version + b"\r\nHost: example\r\nUpgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )


def test_a_plain_upgrade_is_taken_with_its_query_and_what_follows() -> None:
    taken = parse_upgrade(_upgrade(target=b"/ws?token=abc") + b"\x81", PATHS, compression=False)
    assert taken is not None
    upgrade, rest = taken
    assert (upgrade.path, upgrade.query_string, rest) == ("/ws", b"token=abc", b"\x81")
    assert upgrade.accept == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert (b"host", b"example") in upgrade.headers


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(_upgrade(target=b"/other"), id="another path"),
        pytest.param(_upgrade(version=b"HTTP/1.0"), id="HTTP/1.0"),
        pytest.param(_upgrade().replace(b"GET", b"POST"), id="not a GET"),
        pytest.param(_upgrade()[:-2], id="head not complete"),
        pytest.param(_upgrade().replace(b"Version: 13", b"Version: 8"), id="version 8"),
        pytest.param(_upgrade().replace(KEY, b"short"), id="key not 16 bytes"),
        pytest.param(_upgrade().replace(b"Host: example\r\n", b""), id="no Host"),
        pytest.param(
            _upgrade().replace(b"Upgrade: websocket", b"Upgrade: h2c"), id="not websocket"
        ),
        pytest.param(_upgrade(extra=b" folded\r\n"), id="folded header"),
    ],
)
def test_anything_else_is_left_to_hypercorn(request_bytes: bytes) -> None:
    assert parse_upgrade(request_bytes, PATHS, compression=False) is None


def test_a_deflate_offer_is_left_to_hypercorn_only_when_compression_is_on() -> None:
    offer = _upgrade(extra=b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    assert parse_upgrade(offer, PATHS, compression=False) is not None  # accepted, without it
    assert parse_upgrade(offer, PATHS, compression=True) is None


class Client:
    """A wsproto client on a real socket to the served app."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        self.stream, self.ws = stream, ws
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def send_json(self, body: dict[str, Any]) -> None:
        await self.send(TextMessage(data=json.dumps(body)))

    async def next(self) -> Event:
        with trio.fail_after(5):
            while not self.events:
                data = await self.stream.receive_some(65536)
                self.ws.receive_data(data or None)
                self.events.extend(self.ws.events())
        return self.events.pop(0)

    async def next_json(self) -> dict[str, Any]:
        event = await self.next()
        assert isinstance(event, TextMessage), event
        return json.loads(event.data)  # type: ignore[no-any-return]


@asynccontextmanager
async def connected(
    served: Served, target: str = "/ws", extensions: list[Any] | None = None
) -> AsyncIterator[tuple[Client, AcceptConnection]]:
    async with await served.connect() as stream:
        client = Client(stream, WSConnection(ConnectionType.CLIENT))
        request = Request(host="127.0.0.1", target=target, extensions=extensions or [])
        await client.send(request)
        accepted = await client.next()
        assert isinstance(accepted, AcceptConnection), accepted
        yield client, accepted


def _alive(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


async def test_ws_runs_in_the_transport_with_no_asgi_call() -> None:
    async with serve_app(create_app()) as served, connected(served) as (client, _):
        await client.send_json({"op": "subscribe", "topic": "public.t", "id": 1})
        assert (await client.next_json())["type"] == "subscribed"
        assert _alive(ServerWebSocket) == 1
        assert _alive(CanopyWebsocketConnection) == 0


async def test_an_app_that_hooks_its_websockets_keeps_quarts_route() -> None:
    app = create_app()
    hooked: list[str] = []

    @app.before_websocket
    async def note() -> None:
        hooked.append("ws")

    async with serve_app(app) as served, connected(served) as (client, _):
        await client.send_json({"op": "subscribe", "topic": "public.t", "id": 1})
        assert (await client.next_json())["type"] == "subscribed"
        assert _alive(ServerWebSocket) == 0
        assert hooked == ["ws"]


async def test_a_ping_is_answered_and_a_fragmented_message_is_one_message() -> None:
    async with serve_app(create_app()) as served, connected(served) as (client, _):
        await client.send(Ping(payload=b"hello"))
        assert await client.next() == Pong(payload=b"hello")
        body = json.dumps({"op": "subscribe", "topic": "public.t", "id": 7})
        await client.send(TextMessage(data=body[:10], message_finished=False))
        await client.send(TextMessage(data=body[10:], message_finished=True))
        reply = await client.next_json()
        assert (reply["type"], reply["id"]) == ("subscribed", 7)


async def test_a_message_over_the_limit_closes_with_1009() -> None:
    async with serve_app(create_app()) as served, connected(served) as (client, _):
        size = CanopyConfig.websocket_max_message_size
        await client.send(TextMessage(data="x" * (size + 1)))
        closed = await client.next()
        assert isinstance(closed, CloseConnection) and closed.code == 1009


async def test_invalid_utf8_closes_with_1007() -> None:
    async with serve_app(create_app()) as served, connected(served) as (client, _):
        mask = b"\x00\x00\x00\x00"
        await client.stream.send_all(b"\x81\x82" + mask + b"\xc3\x28")  # a text frame
        closed = await client.next()
        assert isinstance(closed, CloseConnection)
        assert closed.code == CloseReason.INVALID_FRAME_PAYLOAD_DATA


async def test_the_clients_close_is_answered_and_the_connection_ends() -> None:
    async with serve_app(create_app()) as served, connected(served) as (client, _):
        await client.send(CloseConnection(code=1000, reason="bye"))
        answer = await client.next()
        assert isinstance(answer, CloseConnection) and answer.code == 1000
        with trio.fail_after(5):
            assert await client.stream.receive_some(65536) == b""  # and the server's FIN


async def test_a_token_in_the_query_string_is_read() -> None:
    async with (
        serve_app(create_app()) as served,
        connected(served, "/ws?token=nonsense") as (
            client,
            _,
        ),
    ):
        notice = await client.next_json()
        assert (notice["type"], notice["code"]) == ("error", "invalid_token")


async def test_a_drain_closes_with_1001_and_a_reason() -> None:
    async with serve_app(create_app()) as served:
        async with connected(served) as (client, _):
            await client.send_json({"op": "subscribe", "topic": "public.t", "id": 1})
            assert (await client.next_json())["type"] == "subscribed"
            served.app.runtime.tree.shutdown()
            closed = await client.next()
            assert isinstance(closed, CloseConnection)
            assert (closed.code, closed.reason) == (1001, "server shutting down")


async def test_compression_on_and_offered_goes_through_hypercorn() -> None:
    offer = PerMessageDeflate(client_max_window_bits=15, server_max_window_bits=15)
    async with serve_app(create_app(), ws_compression=True) as served:
        async with connected(served, extensions=[offer]) as (client, accepted):
            assert accepted.extensions and accepted.extensions[0].name == "permessage-deflate"
            await client.send_json({"op": "subscribe", "topic": "public.t", "id": 1})
            assert (await client.next_json())["type"] == "subscribed"
            assert _alive(ServerWebSocket) == 0


async def test_a_slow_reader_gets_everything_in_order_through_the_writer() -> None:
    """A client that stops reading: the socket holds back, the session's writer takes
    over, and once the client reads again every message arrives, in order."""
    async with serve_app(create_app(), subscriber_queue=100_000) as served:
        hub = served.app.runtime.topics.hub
        async with connected(served) as (client, _):
            await client.send_json({"op": "subscribe", "topic": "public.slow", "id": 1})
            assert (await client.next_json())["type"] == "subscribed"
            payload = "y" * 2000
            count = 2000  # about 4 MB: more than the socket buffers hold
            for n in range(count):
                await hub.publish("public.slow", {"n": n, "pad": payload})
            seen, text = [], ""
            while len(seen) < count:
                event = await client.next()
                assert isinstance(event, Message)
                text += str(event.data)  # wsproto hands on a frame as far as it has read
                if event.message_finished:
                    seen.append(json.loads(text)["data"]["n"])
                    text = ""
            assert seen == list(range(count))
