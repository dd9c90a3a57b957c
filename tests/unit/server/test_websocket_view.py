"""A WebSocket view under Canopy's connection class, served by Canopy's transport and
by Hypercorn's own Trio server: it receives what the client sends, and it is
cancelled when the client goes, whether it was waiting for a message or not.

Under Canopy's transport the view reads the ASGI messages itself, in the call's own
task, and the transport cancels it at the disconnect (``CANCEL_ON_DISCONNECT``);
under Hypercorn, Quart-Trio's receive loop does both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import websocket
from quart.signals import websocket_received
from quart_trio import QuartTrio
from trio_websocket import open_websocket_url

from canopy.server.pipeline._quart import CanopyWebsocketConnection
from tests.processes import serving_in_process


def _ended() -> dict[str, trio.Event]:
    return {"push": trio.Event(), "echo": trio.Event(), "silent": trio.Event()}


def _app(ended: dict[str, trio.Event]) -> QuartTrio:
    app = QuartTrio(__name__)
    app.asgi_websocket_class = CanopyWebsocketConnection

    @app.websocket("/push")
    async def push() -> None:
        await websocket.accept()
        await websocket.send("hello")
        try:
            await trio.sleep_forever()  # never reads: only the disconnect can end it
        finally:
            ended["push"].set()

    @app.websocket("/echo")
    async def echo() -> None:
        try:
            while True:
                message = await websocket.receive()
                await websocket.send(message)
        finally:
            ended["echo"].set()

    @app.websocket("/silent")
    async def silent() -> None:
        try:
            await trio.sleep_forever()  # neither accepts nor reads
        finally:
            ended["silent"].set()

    @app.websocket("/two-readers")
    async def two_readers() -> None:
        got: list[Any] = []

        async def read() -> None:
            got.append(await websocket.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(read)
            await websocket.accept()
        await websocket.send(",".join(sorted(got)))
        # The client closes first: when the server does, trio-websocket's aclose()
        # returns without closing its socket (a ResourceWarning under pytest).
        await websocket.receive()

    return app


@asynccontextmanager
async def _hypercorn(app: QuartTrio) -> AsyncIterator[int]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        # Stopped by its trigger, not cancelled: cancelled, it leaves its socket open.
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        yield int(binds[0].rsplit(":", 1)[1])
        stop.set()


SERVERS = {"canopy transport": serving_in_process, "hypercorn": _hypercorn}


@pytest.fixture(params=sorted(SERVERS))
def serving(request: pytest.FixtureRequest) -> Any:
    return SERVERS[request.param]


def _handshake(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def _until_ended(ended: dict[str, trio.Event], name: str) -> None:
    with trio.fail_after(5):
        await ended[name].wait()


async def test_a_view_that_never_reads_is_cancelled_when_the_client_goes(serving: Any) -> None:
    ended = _ended()
    async with serving(_app(ended)) as port:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/push") as ws:
            assert await ws.get_message() == "hello"
        await _until_ended(ended, "push")


async def test_a_reading_view_gets_each_message_and_is_cancelled_at_the_close(
    serving: Any,
) -> None:
    ended = _ended()
    app = _app(ended)
    received: list[Any] = []

    async def record(message: Any, **_: Any) -> None:  # the message is the signal's sender
        received.append(message)

    websocket_received.connect(record)
    try:
        async with serving(app) as port:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/echo") as ws:
                for message in ("one", b"two", b"", "three"):
                    await ws.send_message(message)
                    assert await ws.get_message() == message
            await _until_ended(ended, "echo")
    finally:
        websocket_received.disconnect(record)
    assert received == ["one", b"two", b"", "three"]


async def test_a_client_that_vanishes_without_a_close_frame_ends_the_view(serving: Any) -> None:
    ended = _ended()
    async with serving(_app(ended)) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(_handshake("/push"))
        with trio.fail_after(5):
            reply = b""
            while b"hello" not in reply:
                reply += await stream.receive_some(4096)
        await stream.aclose()  # no close frame: the TCP connection just ends
        await _until_ended(ended, "push")


async def test_two_tasks_of_a_view_can_wait_for_messages_at_once(serving: Any) -> None:
    async with serving(_app(_ended())) as port:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/two-readers") as ws:
            await ws.send_message("a")
            await ws.send_message("b")
            with trio.fail_after(5):
                assert await ws.get_message() == "a,b"


async def test_a_client_gone_before_the_view_starts_still_ends_it(serving: Any) -> None:
    """The handshake and the end of the connection arrive together: the transport may
    see the disconnect before the view's task has run at all."""
    handshake = _handshake("/silent")
    for _ in range(20):
        ended = _ended()
        async with serving(_app(ended)) as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(handshake)
            await stream.send_eof()
            await stream.aclose()
            await _until_ended(ended, "silent")
