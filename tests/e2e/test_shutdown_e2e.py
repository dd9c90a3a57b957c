"""Graceful shutdown of a real ``canopy serve`` process, in the order the issue states."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, wrap_client_stream

from tests.processes import http_request, http_request_response, running_server, write_config


async def test_sigterm_drains_in_order_and_exits_zero(tmp_path: Path) -> None:
    write_config(tmp_path, grace=5)
    async with running_server(tmp_path) as server:
        port = server.port
        # An idle keep-alive connection, opened and used before the signal.
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        status, _, _ = await http_request(idle, "GET", "/healthz")
        assert status == 200
        status, _, body = await http_request(idle, "GET", "/readyz")
        assert status == 200 and json.loads(body)["status"] == "ready"

        slow = await trio.open_tcp_stream("127.0.0.1", port)
        results: dict[str, object] = {}

        async def slow_request() -> None:
            results["slow"] = await http_request(slow, "GET", "/demo/sleep?ms=1500")

        # We own the WebSocket's TCP stream: trio-websocket 0.12 does not close it when
        # the server closes first (its reader exits on EOF in state CLOSED).
        ws_stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with ws_stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, ws_stream, "127.0.0.1", "/demo/echo")
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
            nursery.start_soon(slow_request)
            await trio.sleep(0.3)  # the slow request is in flight
            server.signal(signal.SIGTERM)
            await server.wait_for_log("draining")

            # /readyz on the idle keep-alive connection: 503, and told to close.
            status, headers, body = await http_request(idle, "GET", "/readyz")
            assert status == 503
            assert json.loads(body)["tree"]["state"] == "stopping"
            assert headers.get("connection") == "close"

            # A new connection is refused at once, not left hanging.
            started = trio.current_time()
            with trio.socket.socket() as probe, pytest.raises(ConnectionRefusedError):
                await probe.connect(("127.0.0.1", port))
            assert trio.current_time() - started < 0.1

            # The WebSocket is closed by the server with 1001 and a reason.
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1001
            assert closed.value.reason.reason == "server shutting down"

        await idle.aclose()
        await slow.aclose()
        status, _, body = results["slow"]  # type: ignore[misc]
        assert status == 200
        assert json.loads(body) == {"slept_ms": 1500}
        assert await server.wait() == 0
        messages = [entry.get("msg") for entry in server.logs]
        assert messages.index("draining") < messages.index("drained") < messages.index("stopped")


async def start_slow_request(port: int, ms: int) -> trio.SocketStream:
    """Open a connection and leave a request of ``ms`` milliseconds in flight on it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"GET /demo/sleep?ms={ms} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await trio.sleep(0.2)
    return stream


async def test_grace_cuts_off_requests_that_outlive_it(tmp_path: Path) -> None:
    write_config(tmp_path, grace=0.5)
    async with running_server(tmp_path) as server:
        async with await start_slow_request(server.port, 10_000) as stream:
            started = trio.current_time()
            server.signal(signal.SIGTERM)
            assert await server.wait() == 0
            assert trio.current_time() - started < 3.0  # 0.5 s grace, not 10 s
            status, headers, body = await http_request_response(stream)
        # cut off by the grace: told to retry elsewhere, never a 500
        assert status == 503
        assert headers["retry-after"] == "1"
        assert json.loads(body)["error"] == "unavailable"


async def test_second_signal_cancels_at_once(tmp_path: Path) -> None:
    write_config(tmp_path, grace=30)
    async with running_server(tmp_path) as server:
        async with await start_slow_request(server.port, 20_000):
            started = trio.current_time()
            server.signal(signal.SIGTERM)
            await server.wait_for_log("draining")
            server.signal(signal.SIGINT)
            assert await server.wait() == 1
            assert trio.current_time() - started < 3.0


HEAVY_APP = """
import canopy

app = canopy.App("heavy")
held = []


@app.post("/fill")
async def fill():
    # What a long-running server piles up after start-up (topics, connections'
    # leftovers): objects the collector tracks, some of them in cycles.
    for n in range(800_000):
        node = {"n": n, "items": [n, str(n)]}
        node["self"] = node
        held.append(node)
    return {"held": len(held)}
"""


async def test_exit_follows_the_drain_even_with_a_big_heap(tmp_path: Path) -> None:
    """Once everything has stopped, the process is gone at once: it does not spend
    seconds freeing its heap object by object first (a rolling restart waits on it)."""
    (tmp_path / "heavy.py").write_text(HEAVY_APP)
    argv = [sys.executable, "-m", "canopy", "serve", "heavy:app", "--bind", "127.0.0.1:0"]
    async with running_server(tmp_path, argv=argv, showcase=False) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            status, _, body = await http_request(stream, "POST", "/fill")
        assert status == 200 and json.loads(body) == {"held": 800_000}
        server.signal(signal.SIGTERM)
        stopped = await server.wait_for_log("stopped")
        assert await server.wait() == 0
        lag = time.time() - stopped["ts"]
    assert lag < 0.5, f"exited {lag:.2f} s after 'stopped'"
