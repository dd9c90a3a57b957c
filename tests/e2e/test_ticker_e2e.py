"""The ticker: through a real server process, a stalled subscriber gets the newest
prices when it reads again, not a backlog, while the process's memory stays flat;
served as a user's app would serve it (canopy.testing), alerts over HTTP and /ws."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

import canopy
from canopy import capabilities, reference
from canopy.handlers.topics import TokenIssuer
from canopy.handlers.topics.client import TopicMessage, connect_topics
from canopy.testing import serve_app
from tests.processes import rss, running_server, write_config

SECRET = "ticker-e2e-secret-".ljust(40, "x")
RATE = 2000  # updates/s in all
ENV = {
    "CANOPY_TICKER_RATE": str(RATE),
    "CANOPY_TICKER_SYMBOLS": "A=100,B=200,C=300,D=400",
    "CANOPY_TOPICS_SECRET": SECRET,
    "CANOPY_RUN_JOBS": "false",
    "CANOPY_ACCESS_LOG": "false",
}


async def small_buffer_ws(nursery: trio.Nursery, port: int) -> WebSocketConnection:
    """A WebSocket whose kernel receive buffer is 4 KiB (set before connecting, so the
    window stays small): what a stalled reader leaves unread is held by the server."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    return await wrap_client_stream(nursery, trio.SocketStream(sock), "127.0.0.1", "/ws")


async def frame(ws: WebSocketConnection) -> dict[str, Any]:
    return dict(json.loads(await ws.get_message()))


async def test_a_stalled_subscriber_gets_the_latest_price_and_memory_stays_flat(
    tmp_path: Path,
) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path, env=ENV) as server, trio.open_nursery() as nursery:
        ws = await small_buffer_ws(nursery, server.port)
        await ws.send_message(json.dumps({"op": "subscribe", "topic": "ticker.*"}))
        assert (await frame(ws))["type"] == "subscribed"
        for _ in range(200):  # flowing
            assert (await frame(ws))["type"] == "message"
        await trio.sleep(1)  # the server warm: what it allocates from here on counts
        before = rss(server.process.pid)

        stalled_for = 5.0
        await trio.sleep(stalled_for)  # not reading: ~10,000 updates go by
        grown = rss(server.process.pid) - before
        assert grown < 16 * 2**20, f"server RSS grew {grown / 2**20:.1f} MiB while stalled"

        # Reading again: what the buffers held, then the newest prices, fresh.
        unstalled, stale = time.time(), 0
        with trio.fail_after(5):
            while True:
                message = await frame(ws)
                assert message["type"] == "message"  # never closed as a slow consumer
                if message["data"]["at"] >= unstalled - 0.5:
                    break
                stale += 1
        # Measured: about 180 (what the socket buffers held), of ~10,000 published.
        assert stale < 1000, f"{stale} stale updates: a backlog"
        caught_up = time.time() - unstalled
        assert caught_up < 2.0, f"{caught_up:.2f} s to reach fresh prices"
        await ws.aclose()
        assert await server.stop() == 0  # drained and exited cleanly, stalled client and all
        nursery.cancel_scope.cancel()


def ticker_app() -> canopy.App:
    """An app with the ticker and the topics endpoint, as a user's app would have them."""
    app = canopy.App("market")
    app.include(capabilities.topics_api)
    app.include(reference.ticker)
    return app


async def test_alerts_fire_once_and_reach_their_owner() -> None:
    token = TokenIssuer(SECRET).issue("trader-1", subscribe=["alerts.trader-1"])
    headers = {"Authorization": f"Bearer {token}"}
    feed = reference.ticker.settings(  # type: ignore[misc]
        symbols=(("A", 100.0), ("B", 200.0), ("C", 300.0), ("D", 400.0)), rate=RATE
    )
    async with serve_app(ticker_app(), sections={"ticker": feed}, topics_secret=SECRET) as served:
        async with (
            httpx.AsyncClient(base_url=served.base_url, headers=headers) as http,
            connect_topics(f"ws://127.0.0.1:{served.port}/ws", token=token) as client,
            client.subscribe("alerts.trader-1") as inbox,
        ):
            with trio.fail_after(5):
                while True:
                    if (now := await http.get("/ticker/symbols/A")).status_code == 200:
                        break
                    await trio.sleep(0.05)
            price = now.json()["price"]
            # Already past: "above" half the price and "below" twice it fire on the next
            # tick; "above" ten times it waits (a random walk does not get there).
            ids = []
            for direction, threshold in (("above", price / 2), ("below", price * 2)):
                added = await http.post(
                    "/ticker/alerts",
                    json={"symbol": "A", "price": threshold, "direction": direction},
                )
                assert added.status_code == 201, added.text
                ids.append(added.json()["id"])
            waiting = await http.post("/ticker/alerts", json={"symbol": "A", "price": price * 10})
            assert waiting.json()["direction"] == "above"  # away from where the price is
            got = []
            with trio.fail_after(10):
                while len(got) < 2:
                    event = await inbox.receive()
                    assert isinstance(event, TopicMessage)
                    got.append(event.data["alert"])
            assert sorted(a["id"] for a in got) == sorted(ids)
            above = next(a for a in got if a["direction"] == "above")
            assert above["trigger_price"] >= above["threshold"]
            with trio.move_on_after(0.5) as quiet:  # more ticks: nothing fires twice
                extra = await inbox.receive()
            assert quiet.cancelled_caught, f"a notice too many: {extra}"
            listed = (await http.get("/ticker/alerts")).json()["alerts"]
            states = {a["id"]: a["state"] for a in listed}
            far = waiting.json()["id"]
            assert states == {ids[0]: "triggered", ids[1]: "triggered", far: "active"}
            cancelled = await http.delete(f"/ticker/alerts/{far}")
            assert cancelled.json()["state"] == "cancelled"

            cases = [
                (await http.post("/ticker/alerts", json={"symbol": "Z", "price": 1}), 422),
                (await http.post("/ticker/alerts", json={"symbol": "A", "price": "x"}), 422),
                (await http.post("/ticker/alerts", content=b"[1"), 400),
                (await http.delete(f"/ticker/alerts/{ids[0]}"), 409),  # not active now
                (await http.delete("/ticker/alerts/a-none"), 404),
                (
                    await http.post(
                        "/ticker/alerts",
                        json={"symbol": "A", "price": 1},
                        headers={"Authorization": ""},
                    ),
                    401,
                ),
                # The token is checked first: a stranger learns nothing from the body.
                (
                    await http.post("/ticker/alerts", content=b"[1", headers={"Authorization": ""}),
                    401,
                ),
            ]
            for response, status in cases:
                assert response.status_code == status, (response.request.url, response.text)
                assert "error" in response.json()
