"""Topics end to end: a real ``canopy serve``, real WebSockets, the client library."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from canopy.handlers.topics import TokenIssuer
from canopy.handlers.topics.client import TopicMessage, TopicsError, Unrecovered, connect_topics
from tests.processes import ServerProcess, rss, running_server, write_config


@pytest.fixture(autouse=True, params=["memory", "redis"])
def broker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every server a test starts keeps its topics here (it inherits the env)."""
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        monkeypatch.setenv("CANOPY_BROKER", redis.url)
        monkeypatch.setenv("CANOPY_REDIS_PREFIX", f"topics-{uuid.uuid4().hex[:8]}")
    return str(request.param)


SECRET = "test-secret-that-is-long-enough-for-hs256"
ENV = {"CANOPY_TOPICS_SECRET": SECRET, "CANOPY_ACCESS_LOG": "false"}


@asynccontextmanager
async def server_in(tmp_path: Path, **env: str) -> AsyncIterator[ServerProcess]:
    write_config(tmp_path)
    async with running_server(tmp_path, env={**ENV, **env}) as server:
        yield server


@asynccontextmanager
async def raw_ws(
    port: int, resource: str = "/ws", **kwargs: Any
) -> AsyncIterator[WebSocketConnection]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as nursery:
        ws = await wrap_client_stream(nursery, stream, "127.0.0.1", resource, **kwargs)
        yield ws
        nursery.cancel_scope.cancel()


async def call(ws: WebSocketConnection, body: dict[str, Any]) -> dict[str, Any]:
    await ws.send_message(json.dumps(body))
    return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def post(port: int, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        response = await client.post(path, json=body, headers=_auth(token))
    return response.status_code, response.json()


async def get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        response = await client.get(path, headers=_auth(token))
    return response.status_code, response.json()


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def test_publish_over_http_reaches_websocket_subscribers(tmp_path: Path) -> None:
    async with server_in(tmp_path) as server:
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with connect_topics(url) as one, connect_topics(url) as two:
            async with one.subscribe("demo.room") as a, two.subscribe("demo.*") as b:
                for n in range(3):
                    status, body = await post(
                        server.port, "/topics/demo.room/messages", {"data": n}
                    )
                    assert status == 202 and body["offset"] == n + 1
                with trio.fail_after(5):
                    got_a = [await a.receive() for _ in range(3)]
                    got_b = [await b.receive() for _ in range(3)]
        assert [m.data for m in got_a] == [0, 1, 2]  # type: ignore[union-attr]
        assert [m.offset for m in got_b] == [1, 2, 3]  # type: ignore[union-attr]
        status, history = await get(
            server.port, "/topics/demo.room/history?since=1&epoch=" + body["epoch"]
        )
        assert status == 200 and history["recovered"]
        assert [m["data"] for m in history["messages"]] == [1, 2]


async def test_reconnect_resumes_without_gap_or_duplicate(tmp_path: Path) -> None:
    async with server_in(tmp_path) as server:
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with connect_topics(url) as client, client.subscribe("demo.feed") as sub:
            await post(server.port, "/topics/demo.feed/messages", {"data": "first"})
            first = await sub.receive()
            assert isinstance(first, TopicMessage) and first.offset == 1
            # Drop the connection under the client; publish while it is away.
            client.reconnect()
            with trio.fail_after(5):
                for n in range(5):
                    await post(server.port, "/topics/demo.feed/messages", {"data": n})
            with trio.fail_after(5):
                missed = [await sub.receive() for _ in range(5)]
            assert client.connects == 2
            assert [m.offset for m in missed] == [2, 3, 4, 5, 6]  # type: ignore[union-attr]
            # Resuming from another epoch cannot recover, and says so.
        async with connect_topics(url) as client:
            async with client.subscribe("demo.feed", since=3, epoch="other") as sub:
                with trio.fail_after(5):
                    notice = await sub.receive()
                assert isinstance(notice, Unrecovered) and notice.offset == 6


async def test_bad_frames_get_error_frames_and_the_connection_stays_open(tmp_path: Path) -> None:
    async with server_in(tmp_path) as server, raw_ws(server.port) as ws:
        cases = [
            ("{not json", "invalid_json"),
            ("[1, 2]", "invalid_json"),
            (json.dumps({"op": "explode"}), "unknown_op"),
            (json.dumps({"op": "subscribe", "topic": "bad topic!"}), "invalid_topic"),
            (json.dumps({"op": "subscribe", "topic": "orders.1"}), "forbidden"),
            (json.dumps({"op": "subscribe", "topic": "demo.x", "since": -1}), "invalid_field"),
            (json.dumps({"op": "subscribe", "topic": "demo.x", "since": 4}), "invalid_field"),
            (json.dumps({"op": "publish", "topic": "demo.x"}), "invalid_field"),
            (json.dumps({"op": "unsubscribe", "topic": "demo.x"}), "not_subscribed"),
            (
                json.dumps({"op": "subscribe", "topic": "demo.x", "token": "forged"}),
                "invalid_token",
            ),
            # not JSON, though Python's json reads them: never fanned out
            ('{"op": "publish", "topic": "demo.x", "data": NaN}', "invalid_json"),
            ('{"op": "publish", "topic": "demo.x", "data": [Infinity]}', "invalid_json"),
            ('{"op": "publish", "topic": "demo.x", "data": -Infinity}', "invalid_json"),
            ("[" * 1000 + "]" * 1000, "invalid_json"),  # nesting past any parser's depth
            ('{"op": "ping", "x": ' + "[" * 5000 + "]" * 5000 + "}", "invalid_json"),
        ]
        for frame, code in cases:
            await ws.send_message(frame)
            reply = json.loads(await ws.get_message())
            assert (reply["type"], reply["code"]) == ("error", code), frame
            assert reply["message"]
        await ws.send_message(b"")  # Quart turns this into None unless we fix it
        assert json.loads(await ws.get_message())["code"] == "binary_frame"
        assert await call(ws, {"op": "ping", "id": 7}) == {"type": "pong", "id": 7}


async def test_oversized_frame_closes_with_1009(tmp_path: Path) -> None:
    async with server_in(tmp_path) as server, raw_ws(server.port) as ws:
        await ws.send_message("x" * 70_000)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 1009


async def test_refused_frames_in_a_row_close_with_1008(tmp_path: Path) -> None:
    async with server_in(tmp_path) as server, raw_ws(server.port) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(60):
                await ws.send_message("nonsense")
                await ws.get_message()
        assert closed.value.reason.code == 1008


async def test_tokens_grant_topics(tmp_path: Path) -> None:
    issuer = TokenIssuer(SECRET)
    agent = issuer.issue("agent-7", subscribe=["desk.*"], publish=["desk.*"], info={"n": 7})
    async with server_in(tmp_path) as server:
        port = server.port
        assert (await post(port, "/topics/desk.1/messages", {"data": 1}))[0] == 403
        assert (await post(port, "/topics/desk.1/messages", {"data": 1}, "forged"))[0] == 401
        assert (await post(port, "/topics/desk.1/messages", {"data": 1}, agent))[0] == 202
        assert (await post(port, "/topics/bad!topic/messages", {"data": 1}, agent))[0] == 422
        # JSON but not an object: refused by the model, as every body route refuses it.
        assert (await post(port, "/topics/desk.1/messages", [1], agent))[0] == 422
        assert (await get(port, "/topics/desk.1/history", agent))[1]["offset"] == 1
        assert (await get(port, "/topics/desk.1/history"))[0] == 403
        async with connect_topics(f"ws://127.0.0.1:{port}/ws", token=agent) as client:
            async with client.subscribe("desk.1", since=0) as sub:
                assert (await sub.receive()).data == 1  # type: ignore[union-attr]
                presence = await client.request({"op": "presence", "topic": "desk.1"})
                assert presence["clients"] == [{"client": "agent-7", "info": {"n": 7}}]
            with pytest.raises(TopicsError, match="forbidden"):
                async with client.subscribe("chat.1"):
                    pass
            assert (await client.publish("desk.2", {"x": 1}))[0] == 1


async def test_a_stalled_reader_slows_no_one_and_memory_stays_bounded(tmp_path: Path) -> None:
    payload = "x" * 8000
    async with server_in(tmp_path, CANOPY_SUBSCRIBER_QUEUE="64") as server:
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with raw_ws(server.port, message_queue_size=1) as stalled:
            assert (await call(stalled, {"op": "subscribe", "topic": "demo.load"}))["recovered"]
            rss_before = rss(server.process.pid)
            async with connect_topics(url) as client, client.subscribe("demo.load") as sub:
                started = trio.current_time()
                for n in range(1500):
                    await client.publish("demo.load", {"n": n, "pad": payload})
                    got = await sub.receive()
                    assert got.data["n"] == n  # type: ignore[union-attr]
                elapsed = trio.current_time() - started
            # The stalled reader was disconnected as a slow consumer, with the offset to resume.
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(10):
                while True:
                    await stalled.get_message()
            assert closed.value.reason.code == 4000
            assert "resume from offset" in (closed.value.reason.reason or "")
        growth = rss(server.process.pid) - rss_before
        assert growth < 40 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB"
        assert elapsed < 15


async def test_shutdown_closes_subscribers_with_1001(tmp_path: Path) -> None:
    async with server_in(tmp_path) as server, raw_ws(server.port) as ws:
        assert (await call(ws, {"op": "subscribe", "topic": "demo.x"}))["type"] == "subscribed"
        server.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(5):
            await ws.get_message()
        assert closed.value.reason.code == 1001
        assert await server.wait() == 0


async def test_a_burst_of_publishes_is_answered_in_order(tmp_path: Path) -> None:
    async with server_in(tmp_path) as server, raw_ws(server.port) as publisher:
        async with raw_ws(server.port) as listener:
            subscribed = await call(listener, {"op": "subscribe", "topic": "demo.burst"})
            assert subscribed["type"] == "subscribed"
            frames = [
                json.dumps({"op": "publish", "topic": "demo.burst", "data": n, "id": n})
                for n in range(200)
            ]
            for frame in frames:  # all sent before the first answer is read
                await publisher.send_message(frame)
            answers = [json.loads(await publisher.get_message()) for _ in frames]
            assert [a["id"] for a in answers] == list(range(200))
            offsets = [a["offset"] for a in answers]
            assert offsets == list(range(offsets[0], offsets[0] + 200))
            got = [json.loads(await listener.get_message()) for _ in frames]
            assert [m["data"] for m in got] == list(range(200))
            assert [m["offset"] for m in got] == offsets


async def test_a_bad_token_at_connect_is_told_at_once(tmp_path: Path) -> None:
    """Malformed, signed with another secret or expired, in the query or the header:
    the first frame says so, and the connection goes on with the anonymous grants."""
    other = TokenIssuer("another-secret-that-is-long-enough-for-hs256")
    bad = {
        "malformed": "forged",
        "signed elsewhere": other.issue("eve", subscribe=["orders.*"]),
        "expired": TokenIssuer(SECRET).issue("ann", subscribe=["orders.*"], ttl=-60),
    }
    async with server_in(tmp_path) as server:
        for what, token in bad.items():
            for resource, headers in (
                (f"/ws?token={token}", []),
                ("/ws", [("Authorization", f"Bearer {token}")]),
            ):
                async with raw_ws(server.port, resource, extra_headers=headers) as ws:
                    with trio.fail_after(5):
                        first = json.loads(await ws.get_message())
                    assert (first["type"], first["code"]) == ("error", "invalid_token"), what
                    assert first["message"].endswith("; connected anonymously")
                    assert await call(ws, {"op": "ping"}) == {"type": "pong"}
                    denied = await call(ws, {"op": "subscribe", "topic": "orders.1"})
                    assert denied["code"] == "forbidden"


async def test_a_grant_covers_its_prefix_and_nothing_beside_it(tmp_path: Path) -> None:
    """``orders.*`` is ``orders.`` and below: not ``ordersX.1``, not ``orders`` itself."""
    token = TokenIssuer(SECRET).issue("c", subscribe=["orders.*"], publish=["orders.*"])
    async with server_in(tmp_path) as server:
        for topic, status in (("orders.1", 202), ("ordersX.1", 403), ("orders", 403)):
            answer, _ = await post(server.port, f"/topics/{topic}/messages", {"data": 1}, token)
            assert answer == status, topic
        async with raw_ws(server.port, f"/ws?token={token}") as ws:
            for topic, kind in (
                ("orders.1", "subscribed"),
                ("ordersX.1", "error"),
                ("orders", "error"),
            ):
                reply = await call(ws, {"op": "subscribe", "topic": topic})
                assert reply["type"] == kind, topic
                if kind == "error":
                    assert reply["code"] == "forbidden"
