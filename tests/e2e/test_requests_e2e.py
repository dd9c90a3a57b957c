"""Requests through a real server: deadlines, load shedding, errors, request ids, logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.processes import http_request, http_request_response, running_server, write_config


async def test_deadline_gives_504_and_route_deadline_applies(tmp_path: Path) -> None:
    write_config(tmp_path)
    env = {"CANOPY_REQUEST_TIMEOUT": "0.3"}
    async with running_server(tmp_path, env=env) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            started = trio.current_time()
            response = await client.get("/demo/sleep", params={"ms": 5000})
            assert response.status_code == 504
            assert response.json()["error"] == "deadline_exceeded"
            assert trio.current_time() - started < 2.0
            # /demo/quote declares its own 2 s deadline, longer than the default 0.3 s
            response = await client.get("/demo/quote/abc")
            assert response.status_code == 200
            started = trio.current_time()
            response = await client.get("/demo/quote/abc", params={"slow": "tax"})
            assert response.status_code == 504
            assert 1.9 < trio.current_time() - started < 4.0
        assert await server.stop() == 0
    # Hypercorn's error log goes through Canopy's logging: no log file of its own
    assert sorted(os.listdir(tmp_path)) == ["hypercorn.toml", "var"]


async def test_overload_sheds_with_503_and_retry_after(tmp_path: Path) -> None:
    write_config(tmp_path)
    env = {"CANOPY_MAX_INFLIGHT": "2", "CANOPY_RETRY_AFTER": "3"}
    async with running_server(tmp_path, env=env) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as client, trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(client.get, "/demo/sleep?ms=800")
            await trio.sleep(0.3)
            response = await client.get("/demo/hello")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "3"
            assert response.json()["error"] == "overloaded"
            # health checks are never shed
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/demo/hello")).status_code == 200
        assert await server.stop() == 0


async def test_sub_call_failure_cancels_siblings(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            started = trio.current_time()
            # stock fails after ~5 ms while tax would take 10 s: all-or-nothing cancels tax
            response = await client.get("/demo/quote/abc", params={"fail": "stock", "slow": "tax"})
            assert response.status_code == 502
            assert response.json() == {
                "error": "upstream_failed",
                "message": "stock back-end failed",
                "backend": "stock",
            }
            assert trio.current_time() - started < 1.0
        assert await server.stop() == 0


async def test_bad_input_gets_json_4xx_never_500(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path, env={"CANOPY_MAX_BODY_SIZE": "100"}) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            response = await client.get("/nope")
            assert response.status_code == 404 and response.json()["error"] == "not_found"
            response = await client.post("/demo/hello", content=b"x")
            assert response.status_code == 405
            response = await client.get("/demo/sleep", params={"ms": "soon"})
            assert response.status_code == 422 and response.json()["field"] == "ms"
            response = await client.post("/demo/hello", content=b"x" * 1000)
            assert response.status_code == 413
            assert response.json()["error"] == "body_too_large"
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            reply = await stream.receive_some(1000)
        assert reply.startswith(b"HTTP/1.1 400")
        # the server is still fine
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).status_code == 200
        assert await server.stop() == 0
        assert not any(entry.get("status", 0) >= 500 for entry in server.logs)


async def test_request_id_is_echoed_and_logged(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            status, headers, _ = await http_request(
                stream, "GET", "/demo/hello", headers="X-Request-ID: order-42\r\n"
            )
            assert status == 200 and headers["x-request-id"] == "order-42"
            status, headers, _ = await http_request(stream, "GET", "/demo/hello")
        generated = headers["x-request-id"]
        assert generated and generated != "order-42"
        assert await server.stop() == 0
    access = [entry for entry in server.logs if entry.get("logger") == "canopy.access"]
    assert {entry["request_id"] for entry in access} >= {"order-42", generated}
    entry = next(e for e in access if e["request_id"] == "order-42")
    assert entry["method"] == "GET" and entry["path"] == "/demo/hello"
    assert entry["status"] == 200 and entry["duration_ms"] >= 0


def test_invalid_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    write_config(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "canopy", "serve"],
        cwd=tmp_path,
        env={"CANOPY_REQUEST_TIMEOUT": "soon", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "CANOPY_REQUEST_TIMEOUT" in lines[0]


async def test_plain_hypercorn_serves_the_app(tmp_path: Path) -> None:
    write_config(tmp_path)
    argv = [
        sys.executable,
        "-m",
        "hypercorn",
        "--config",
        "hypercorn.toml",
        "canopy.showcase:app",
    ]
    async with running_server(tmp_path, argv=argv, started_line="Running on http://") as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            response = await client.get("/readyz")
            assert response.status_code == 200
            tree = response.json()["tree"]
            assert tree["state"] == "running"
            # No http service (Hypercorn serves); the collector is paced here too.
            assert [child["name"] for child in tree["children"]] == ["services", "collector"]
            response = await client.get("/demo/hello")
            assert response.json() == {"hello": "world"}
        # A body declared over the limit: the same answer as under canopy serve, before
        # the body is sent. (Over httpx, the answer left its body generator unfinished,
        # and whenever the collector found it, it was an "Exception ignored" warning.)
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            head = "POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 1048600\r\n\r\n"
            await stream.send_all(head.encode())
            with trio.fail_after(5):
                status, headers, body = await http_request_response(stream)
        assert (status, json.loads(body)["error"]) == (413, "body_too_large")
        assert headers["connection"] == "close"
        assert await server.stop() == 0
