"""Bodies that once made a 500 (found by schemathesis): each now gets a clear 4xx."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.processes import running_server, write_config

NOT_UTF8 = b"\xff\xfe{\x80"


async def test_bodies_that_are_not_json_or_too_big_for_the_store_get_a_4xx(
    tmp_path: Path,
) -> None:
    write_config(tmp_path)
    env = {"CANOPY_TOPICS_SECRET": "b" * 40, "CANOPY_ACCESS_LOG": "false"}
    async with running_server(tmp_path, env=env) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            json_type = {"Content-Type": "application/json"}
            for path in ("/jobs", "/jobs/batch", "/support/conversations", "/demo/json"):
                for body in (NOT_UTF8, b'{"task": NaN}', b"[" * 100_000):
                    response = await http.post(path, content=body, headers=json_type)
                    assert response.status_code == 400, (path, body[:10], response.text)
                    assert response.json()["error"] == "invalid_json"
            too_big = await http.put("/stock/sku-1", json={"available": 10**24})
            assert (too_big.status_code, too_big.json()["field"]) == (422, "available")
            priority = await http.post("/jobs", json={"task": "demo.echo", "priority": 10**24})
            assert (priority.status_code, priority.json()["field"]) == (422, "priority")
            curl_style = await http.post(  # curl -d sends form-encoded: still read as JSON
                "/topics/demo.x/messages",
                content=b'{"data": 1}',
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert curl_style.status_code == 202
        assert await server.stop() == 0


async def test_a_body_over_the_limit_gets_its_413(tmp_path: Path) -> None:
    """Declared too large, with or without ``Expect: 100-continue``: the 413 reaches
    the client, with ``Connection: close``, while it is still sending (the server
    reads the rest only to discard it, so the close does not reset the answer away)."""
    write_config(tmp_path)
    size = 1_048_600  # just over the default 1 MiB
    async with running_server(tmp_path, env={"CANOPY_ACCESS_LOG": "false"}) as server:
        for expect in (False, True):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                head = (
                    f"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n"
                    + ("Expect: 100-continue\r\n" if expect else "")
                    + "\r\n"
                )
                await stream.send_all(head.encode())
                with trio.fail_after(10):
                    sent = 0
                    while sent < size:  # as curl does after its 100, or at once
                        chunk = min(65536, size - sent)
                        try:
                            await stream.send_all(b"x" * chunk)
                        except trio.BrokenResourceError:
                            break
                        sent += chunk
                    answer = b""
                    while b"body_too_large" not in answer:
                        data = await stream.receive_some(65536)
                        assert data, answer
                        answer += data
            final = answer[answer.rindex(b"HTTP/1.1 ") :]
            assert final.startswith(b"HTTP/1.1 413"), answer[:200]
            assert b"connection: close" in final.lower()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            with trio.fail_after(10):
                response = await http.post("/jobs", content=b"x" * size)
            assert (response.status_code, response.json()["error"]) == (413, "body_too_large")
        assert await server.stop() == 0
