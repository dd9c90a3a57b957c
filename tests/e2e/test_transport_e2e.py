"""Canopy's transport on a real socket: split bodies, pipelining, large bodies, keep-alive."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import trio
import trustme
from trio_websocket import open_websocket_url

from tests.processes import (
    ResponseReader,
    http_request,
    http_request_response,
    running_server,
    write_config,
)


async def test_body_arriving_after_the_headers(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            body = b'{"order": 42}'
            head = f"POST /demo/json HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
            await stream.send_all(head.encode())
            await trio.sleep(0.2)  # the request is complete only when the body arrives
            await stream.send_all(body[:5])
            await trio.sleep(0.1)
            await stream.send_all(body[5:])
            status, _, reply = await http_request_response(stream)
            assert status == 200
            assert json.loads(reply) == {"received": {"order": 42}, "bytes": len(body)}
            # and the same connection serves the next request
            status, _, reply = await http_request(stream, "GET", "/demo/hello")
            assert status == 200
        assert await server.stop() == 0


async def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            one = b"GET /demo/sleep?ms=50 HTTP/1.1\r\nHost: t\r\n\r\n"
            two = b"GET /demo/hello HTTP/1.1\r\nHost: t\r\n\r\n"
            body = b'{"n": 3}'
            three = b"POST /demo/json HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n" + body
            await stream.send_all(one + two + three)
            reader = ResponseReader(stream)
            replies = [await reader.read() for _ in range(3)]
        assert [status for status, _, _ in replies] == [200, 200, 200]
        assert json.loads(replies[0][2]) == {"slept_ms": 50}
        assert json.loads(replies[1][2]) == {"hello": "world"}
        assert json.loads(replies[2][2])["received"] == {"n": 3}
        assert await server.stop() == 0


async def test_connection_close_ends_with_the_whole_response_then_eof(tmp_path: Path) -> None:
    """The server's half-close and close (done without awaits on plain TCP) deliver
    every byte of the last response, then a clean end of stream, not a reset."""
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        for _ in range(20):
            async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
                reader = ResponseReader(stream)
                head = "GET /demo/hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
                await stream.send_all(head.encode())
                status, headers, reply = await reader.read()
                assert (status, json.loads(reply)) == (200, {"hello": "world"})
                assert headers["connection"] == "close"
                with trio.fail_after(5):
                    assert reader.buffer == b"" and await stream.receive_some(1024) == b""
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            status, _, _ = await http_request(stream, "GET", "/demo/hello")
        assert status == 200  # the server is still serving
        assert await server.stop() == 0


async def test_large_body_streamed_in_small_writes(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            body = json.dumps({"blob": "x" * 600_000}).encode()
            head = f"POST /demo/json HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
            await stream.send_all(head.encode())
            for start in range(0, len(body), 4096):
                await stream.send_all(body[start : start + 4096])
            status, _, reply = await http_request_response(stream)
        assert status == 200
        assert json.loads(reply)["bytes"] == len(body)
        assert await server.stop() == 0


async def test_malformed_json_is_400(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            status, _, reply = await http_request(stream, "POST", "/demo/json", body=b"{nope")
        assert status == 400
        assert json.loads(reply)["error"] == "invalid_json"
        assert await server.stop() == 0


async def test_idle_keep_alive_connection_is_closed_after_timeout(tmp_path: Path) -> None:
    write_config(tmp_path, keep_alive=0.3)
    async with running_server(tmp_path) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            status, _, _ = await http_request(stream, "GET", "/healthz")
            assert status == 200
            started = trio.current_time()
            with trio.fail_after(3):
                assert await stream.receive_some(100) == b""
            assert 0.2 < trio.current_time() - started < 2.0
        assert await server.stop() == 0


async def test_partial_request_is_dropped_after_the_keep_alive_timeout(tmp_path: Path) -> None:
    write_config(tmp_path, keep_alive=0.5)
    async with running_server(tmp_path) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(b"GET /demo/hello HTTP/1.1\r\nHost: t\r\n")  # never finished
            with trio.fail_after(3):
                assert await stream.receive_some(100) == b""
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            status, _, _ = await http_request(stream, "GET", "/healthz")  # others unaffected
            assert status == 200
        assert await server.stop() == 0


async def test_oversized_headers_are_refused_with_4xx(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            huge = "X-Filler: " + "a" * 70_000 + "\r\n"
            await stream.send_all(f"GET /demo/hello HTTP/1.1\r\nHost: t\r\n{huge}\r\n".encode())
            reply = await stream.receive_some(1000)
        assert reply.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400"))
        assert await server.stop() == 0


def write_tls_config(directory: Path) -> ssl.SSLContext:
    """A server certificate from a throwaway CA; returns a client context trusting it."""
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "server.pem")
    )
    path = write_config(directory)
    tls = 'certfile = "server.pem"\nkeyfile = "server.pem"\n'
    path.write_text(path.read_text().replace("workers = 1\n", f"workers = 1\n{tls}"))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_tls_through_the_transport(tmp_path: Path) -> None:
    context = write_tls_config(tmp_path)
    async with running_server(tmp_path) as server:
        base = f"https://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, verify=context) as client:
            response = await client.get("/demo/hello")
            assert response.status_code == 200
            assert response.json() == {"hello": "world"}
            response = await client.post("/demo/json", json={"tls": True})
            assert response.json()["received"] == {"tls": True}
        assert await server.stop() == 0
    assert any(e.get("bind", "").startswith("https://") for e in server.logs)


async def test_http2_over_tls_serves_concurrent_streams(tmp_path: Path) -> None:
    context = write_tls_config(tmp_path)
    async with running_server(tmp_path) as server:
        base = f"https://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, verify=context, http2=True) as client:
            responses: list[httpx.Response] = []

            async def fetch(path: str) -> None:
                responses.append(await client.get(path))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch, "/demo/sleep?ms=200")
                nursery.start_soon(fetch, "/demo/hello")
                nursery.start_soon(fetch, "/demo/quote/h2")
            assert sorted(r.status_code for r in responses) == [200, 200, 200]
            assert {r.http_version for r in responses} == {"HTTP/2"}
            assert (await client.get("/demo/hello")).status_code == 200  # same connection
        assert await server.stop() == 0


async def test_websocket_echo_keeps_empty_and_binary_frames(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        url = f"ws://127.0.0.1:{server.port}/demo/echo"
        async with open_websocket_url(url) as ws:
            for message in (b"", b"\x00\x01", "", "text"):
                await ws.send_message(message)
                assert await ws.get_message() == message
        assert await server.stop() == 0
    assert not [e for e in server.logs if e.get("level") == "error"]
