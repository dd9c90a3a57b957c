"""A served request, and a closed connection, leave no reference cycle behind:
refcounting frees them at once.

Cycles per request fed the young-generation counter, and with many requests in
flight each collection walked all of them (see ``canopy.server.app._process.tune_gc``).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio
import trio.lowlevel
from hypercorn.protocol.http_stream import HTTPStream

from canopy.server.transport._connection import Connection, _AppCall
from tests.processes import http_request, serving_app_in_process

REQUESTS = 40


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _alive(kind: type) -> int:
    # ``type(obj)``, not ``isinstance``: the latter asks a dead weak proxy (an earlier
    # test's) for its class, which raises ReferenceError.
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/demo/hello", b""),
        ("POST", "/demo/json", b'{"n": 1}'),
        ("POST", "/demo/json", b"not json"),  # 400
        ("GET", "/nope", b""),  # 404
        ("DELETE", "/demo/hello", b""),  # 405
    ],
)
async def test_requests_leave_no_cycles(
    collector_off: None, method: str, path: str, body: bytes
) -> None:
    async with serving_app_in_process() as port:
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await http_request(stream, method, path, body)  # warm: caches, first-use objects
            before = (_alive(_AppCall), _alive(HTTPStream))
            for _ in range(REQUESTS):
                status, _, _ = await http_request(stream, method, path, body)
                assert status in (200, 400, 404, 405)
            after = (_alive(_AppCall), _alive(HTTPStream))
    # Each request's call and stream are gone without a collection (the collector is
    # off): at most the one the connection still held.
    assert after[0] - before[0] <= 1 and after[1] - before[1] <= 1, (before, after)


async def test_closed_connections_leave_no_cycles(collector_off: None) -> None:
    async with serving_app_in_process() as port:
        for _ in range(REQUESTS // 4):
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                status, _, _ = await http_request(stream, "GET", "/demo/hello")
                assert status == 200
        await trio.sleep(0.2)  # the server's side of the last one closes too
        alive = _alive(Connection)
    assert alive == 0


@pytest.mark.parametrize("leave", ["close frame", "connection dropped"])
async def test_websocket_sessions_leave_no_cycles(collector_off: None, leave: str) -> None:
    """A subscriber that comes and goes, as a chat or ticker client does all day,
    leaves nothing behind for the collector: no session, socket or wsproto parser
    of the transport's own ``/ws`` (nor a Quart connection, had Quart served it) is
    left in a cycle. Left there, each
    collection walked them, and a full one, rare under a high threshold, had
    thousands to free at once; one that outlived a middle collection is frozen
    (CollectorPacer), so its cycle was not freed at all."""
    from trio_websocket import wrap_client_stream
    from wsproto.frame_protocol import FrameProtocol

    from canopy.handlers.topics import Session
    from canopy.server.pipeline._quart import CanopyWebsocketConnection
    from canopy.server.transport._websocket import ServerWebSocket
    from canopy.showcase import create_app
    from canopy.testing import serve_app

    async def session(port: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, "127.0.0.1", "/ws")
            await ws.send_message('{"op": "subscribe", "topic": "public.gc", "id": 1}')
            assert '"subscribed"' in str(await ws.get_message())
            if leave == "close frame":
                await ws.aclose()
            nursery.cancel_scope.cancel()

    async with serve_app(create_app()) as served:
        assert served.port is not None
        await session(served.port)  # warm: caches, first-use objects
        await trio.sleep(0.2)
        kinds = (CanopyWebsocketConnection, _AppCall, Connection, ServerWebSocket, Session)
        # wsproto's frame parser is a generator that holds its protocol: a cycle per
        # connection dropped without a close frame, unless the stream breaks it. The
        # server's parsers, not the test client's (trio-websocket's, which
        # leaves the same cycle behind for the collector).
        parsers = lambda: sum(  # noqa: E731
            1 for obj in gc.get_objects() if type(obj) is FrameProtocol and not obj.client
        )
        before = [*(_alive(kind) for kind in kinds), parsers()]
        for _ in range(REQUESTS // 4):
            await session(served.port)
        await trio.sleep(0.5)  # the server's side of the last one ends too
        after = [*(_alive(kind) for kind in kinds), parsers()]
    assert after == before, (before, after)


async def test_the_collectors_pauses_are_in_the_metrics() -> None:
    """Each collection is timed, by generation: a full one shows in /metrics."""
    import canopy
    from canopy.testing import serve_app

    def full_collections(text: str) -> float:
        line = 'canopy_gc_pause_seconds_count{generation="2"} '
        return float(next(row for row in text.splitlines() if row.startswith(line)).split()[-1])

    async with serve_app(canopy.App("paused")) as served:
        before = full_collections((await served.http.get("/metrics")).text)
        gc.collect()
        gc.collect()
        after = full_collections((await served.http.get("/metrics")).text)
    assert after - before == 2


async def test_a_slow_consumer_closed_by_the_hub_leaves_no_cycles(collector_off: None) -> None:
    """A subscriber that stops reading: the socket holds back, the session's writer
    waits, the queue fills and the hub closes it with 4000. Its session, socket and
    connection go with it, not into a cycle (the writer's queue of subscriptions
    held them as their sink)."""
    from canopy.handlers.topics import Session
    from canopy.server.transport._websocket import ServerWebSocket
    from canopy.showcase import create_app
    from canopy.testing import serve_app

    frame = b'{"op": "subscribe", "topic": "public.gc", "id": 1}'
    handshake = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )

    async with serve_app(create_app(), subscriber_queue=4) as served:
        assert served.port is not None
        hub = served.app.runtime.topics.hub

        async def slow_session() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", served.port)
            async with stream:
                masked = bytes([0x81, 0x80 | len(frame)]) + b"\0\0\0\0" + frame
                await stream.send_all(handshake + masked)
                seen = b""
                while b"subscribed" not in seen:
                    seen += await stream.receive_some(65536)
                before = hub.slow_disconnects
                with trio.fail_after(10):
                    while hub.slow_disconnects == before:  # never read: the socket fills
                        await hub.publish("public.gc", "z" * 50_000)
                        await trio.lowlevel.checkpoint()
            await trio.sleep(0.2)  # the server's side ends

        await slow_session()  # warm
        kinds = (Connection, ServerWebSocket, Session)
        before = [_alive(kind) for kind in kinds]
        for _ in range(5):
            await slow_session()
        after = [_alive(kind) for kind in kinds]
    assert after == before, (before, after)
