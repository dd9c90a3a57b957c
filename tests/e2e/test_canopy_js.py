"""canopy.js in a real browser against a real ``canopy serve``: a restart, a network
that drops a connection without a word, and an expired token, each without a lost or
repeated message (or, where the server lost the history, saying so)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from canopy.handlers.topics import TokenIssuer
from tests.browser import Page, chromium
from tests.processes import ServerProcess, running_server, write_config
from tests.redis_server import RedisServer, free_port
from tests.tcp_proxy import Proxy

HEARTBEAT = 1.0  # seconds; the client gives a silent connection up within two
SECRET = "canopy-js-test-secret-of-thirty-two-bytes"

# Loads /canopy.js into the page and subscribes; every callback is recorded in
# window.log for the test to read.
HARNESS = """
(async () => {
  const { connect } = await import("/canopy.js");
  const log = { received: [], lost: [], states: [], errors: [], subscribed: 0, tokens: 0 };
  window.log = log;
  const options = {
    heartbeat: %(heartbeat)d,
    refreshBefore: 1000,
    backoff: { initial: 100, max: 1000 },
    onState: (state) => log.states.push(state),
    onError: (error) => log.errors.push(error.code),
  };
  // The tokens the test hands over in window.tokens, in turn; the last one for good.
  const next = () => (window.tokens.length > 1 ? window.tokens.shift() : window.tokens[0]);
  if (%(tokens)s) options.getToken = () => { log.tokens += 1; return next(); };
  window.client = connect(%(url)s, options);
  client.subscribe(%(topic)s, {
    onSubscribed: () => (log.subscribed += 1),
    onRecovered: (recovered, frame) => log.lost.push([frame.epoch, frame.offset]),
    onMessage: (data, frame) => log.received.push([frame.epoch, frame.offset, data]),
  });
  return true;
})()
"""


async def start_client(page: Page, topic: str, url: str = "/ws", *, tokens: bool = False) -> None:
    script = HARNESS % {
        "heartbeat": HEARTBEAT * 1000,
        "tokens": "true" if tokens else "false",
        "url": json.dumps(url),
        "topic": json.dumps(topic),
    }
    assert await page.evaluate(script) is True
    await subscribed(page, 1)


async def subscribed(page: Page, times: int) -> None:
    await page.wait_for(f"window.log && log.subscribed >= {times}")


async def received(page: Page, count: int) -> list[list[Any]]:
    """What the page's onMessage got, once it has ``count`` messages."""
    return list(await page.wait_for(f"log.received.length >= {count} && log.received"))


async def publish(base: str, topic: str, numbers: range, token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base, headers=headers) as http:
        for n in numbers:
            response = await http.post(f"/topics/{topic}/messages", json={"data": n})
            assert response.status_code == 202, response.text


@asynccontextmanager
async def serving(
    tmp_path: Path, port: int, env: dict[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    write_config(tmp_path, bind=[f"127.0.0.1:{port}"])
    full_env = {"CANOPY_ACCESS_LOG": "false", **(env or {})}
    async with running_server(tmp_path, env=full_env) as server:
        yield server


@asynccontextmanager
async def page_on_server(
    tmp_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[ServerProcess, Page, int]]:
    """A server on a free port, and a browser page loaded from it (so that the page may
    import /canopy.js); yields the server, the page and the port."""
    port = free_port()
    async with (
        serving(tmp_path, port, env) as server,
        chromium(tmp_path / "profile") as open_page,
        open_page("about:blank") as page,
    ):
        await page.goto(f"http://127.0.0.1:{port}/demo/hello")
        yield server, page, port


DEMO_ITEMS = "[...document.querySelectorAll('#messages li')]"


async def restart_mid_stream(
    tmp_path: Path, env: dict[str, str], check: Callable[[Page, Page, str], Any]
) -> None:
    """A page subscribes with canopy.js (through a proxy) and another shows the demo
    page on the same topic. 100 messages are published, and the server is stopped
    with SIGTERM while the pages may still be receiving them, then started again on
    the same port. 50 more are published while the first page cannot reach it, then
    it may; ``check(page, demo, base)`` runs once it has subscribed again."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with (
        chromium(tmp_path / "profile") as open_page,
        open_page("about:blank") as page,
        open_page("about:blank") as demo,
        trio.open_nursery() as nursery,  # the proxy's: ended first
    ):
        proxy = Proxy(port)
        await nursery.start(proxy.run)
        async with serving(tmp_path, port, env) as first:
            await page.goto(f"{base}/demo/hello")
            await start_client(page, "demo.restart", f"ws://127.0.0.1:{proxy.port}/ws")
            await demo.goto(f"{base}/demo/topics?topic=demo.restart")
            await demo.wait_for("document.getElementById('status').textContent === 'subscribed'")
            await publish(base, "demo.restart", range(1, 101))
            proxy.refusing = True
            assert await first.stop() == 0
        async with serving(tmp_path, port, env) as second:
            await publish(base, "demo.restart", range(101, 151))
            proxy.refusing = False
            await subscribed(page, 2)  # it reconnected and subscribed again by itself
            await demo.wait_for("document.getElementById('state').textContent === 'open'")
            await publish(base, "demo.restart", range(151, 201))
            await check(page, demo, base)
            assert await second.stop() == 0
        nursery.cancel_scope.cancel()


async def test_a_restart_on_redis_delivers_every_message_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    env = {"CANOPY_BROKER": redis_server.url, "CANOPY_REDIS_PREFIX": f"js-{uuid.uuid4().hex[:8]}"}

    async def check(page: Page, demo: Page, base: str) -> None:
        got = await received(page, 200)
        # 101-150 came from the history in Redis, as the resume asked.
        assert [offset for _, offset, _ in got] == list(range(1, 201))
        assert [data for _, _, data in got] == list(range(1, 201))
        assert len({epoch for epoch, _, _ in got}) == 1
        log = await page.evaluate("log")
        assert log["lost"] == []
        assert log["states"].count("open") == 2
        shown = await demo.wait_for(
            f"{DEMO_ITEMS}.length >= 200 && {DEMO_ITEMS}.map(li => Number(li.dataset.offset))"
        )
        assert shown == list(range(1, 201))
        assert await demo.evaluate("document.getElementById('notice').hidden") is True

    await restart_mid_stream(tmp_path, env, check)


async def test_a_restart_on_the_memory_broker_says_what_was_lost(tmp_path: Path) -> None:
    async def check(page: Page, demo: Page, base: str) -> None:
        log = await page.evaluate("log")
        old_epoch = log["received"][0][0]
        # 101-150 went with the old process's history: onRecovered(false), once, at
        # the new epoch's offset 50; delivery goes on from there.
        [(new_epoch, offset)] = log["lost"]
        assert new_epoch != old_epoch and offset == 50
        got = await page.wait_for("log.received.at(-1)?.[2] === 200 && log.received")
        old = [o for epoch, o, _ in got if epoch == old_epoch]
        new = [(o, data) for epoch, o, data in got if epoch == new_epoch]
        assert old == list(range(1, len(old) + 1))  # no gap before the restart
        assert new == [(n - 100, n) for n in range(151, 201)]
        # The demo page tells a person, and goes on too.
        await demo.wait_for("!document.getElementById('notice').hidden")
        await demo.wait_for(f"{DEMO_ITEMS}.at(-1)?.textContent === '200'")
        assert await demo.evaluate("document.getElementById('offset').textContent") == "100"

    await restart_mid_stream(tmp_path, {}, check)


async def test_a_connection_the_network_drops_silently_is_replaced(tmp_path: Path) -> None:
    async with (
        page_on_server(tmp_path) as (server, page, port),
        trio.open_nursery() as nursery,  # the proxy's: ended first
    ):
        base = f"http://127.0.0.1:{port}"
        proxy = Proxy(port)
        await nursery.start(proxy.run)
        await start_client(page, "demo.silent", f"ws://127.0.0.1:{proxy.port}/ws")
        await publish(base, "demo.silent", range(1, 51))
        await received(page, 50)
        proxy.hold()  # no close, no reset: the browser's own socket would wait minutes
        held_at = trio.current_time()
        await publish(base, "demo.silent", range(51, 101))
        await subscribed(page, 2)
        assert trio.current_time() - held_at < 2 * HEARTBEAT + 1.0 + 1.0  # + backoff, slack
        got = await received(page, 100)
        assert [offset for _, offset, _ in got] == list(range(1, 101))
        log = await page.evaluate("log")
        assert log["lost"] == [] and proxy.accepted == 2
        assert await server.stop() == 0
        nursery.cancel_scope.cancel()


async def test_an_expired_token_is_refreshed_without_losing_a_message(tmp_path: Path) -> None:
    issuer = TokenIssuer(SECRET)
    topic = "private.feed"
    publisher = issuer.issue("publisher", publish=[topic])
    async with (
        page_on_server(tmp_path, {"CANOPY_TOPICS_SECRET": SECRET}) as (server, page, port),
        trio.open_nursery() as nursery,  # the proxy's: ended first
    ):
        base = f"http://127.0.0.1:{port}"
        proxy = Proxy(port)
        await nursery.start(proxy.run)
        short = issuer.issue("reader", subscribe=[topic], ttl=2)
        await page.evaluate(f"window.tokens = [{json.dumps(short)}]")
        await start_client(page, topic, f"ws://127.0.0.1:{proxy.port}/ws", tokens=True)
        await publish(base, topic, range(1, 51), publisher)
        await received(page, 50)
        await trio.sleep(2.5)  # the token expires; the open connection goes on
        fresh = issuer.issue("reader", subscribe=[topic])
        await page.evaluate(f"window.tokens = [{json.dumps(fresh)}]")
        proxy.cut()  # a reconnect now needs a token that is valid
        await publish(base, topic, range(51, 101), publisher)
        await subscribed(page, 2)
        got = await received(page, 100)
        assert [data for _, _, data in got] == list(range(1, 101))
        log = await page.evaluate("log")
        assert log["lost"] == [] and log["errors"] == []
        assert log["tokens"] == 2  # at the first connect, and for the expired one
        assert await server.stop() == 0
        nursery.cancel_scope.cancel()


async def test_a_token_the_server_refuses_is_replaced_through_get_token(
    tmp_path: Path,
) -> None:
    topic = "private.refused"
    forged = TokenIssuer("not-the-servers-secret-but-as-long-as-it").issue(
        "reader", subscribe=[topic]
    )
    valid = TokenIssuer(SECRET).issue("reader", subscribe=[topic])
    publisher = TokenIssuer(SECRET).issue("publisher", publish=[topic])
    env = {"CANOPY_TOPICS_SECRET": SECRET}
    async with page_on_server(tmp_path, env) as (server, page, port):
        base = f"http://127.0.0.1:{port}"
        await page.evaluate(f"window.tokens = {json.dumps([forged, valid])}")
        await start_client(page, topic, tokens=True)
        await publish(base, topic, range(1, 11), publisher)
        got = await received(page, 10)
        assert [data for _, _, data in got] == list(range(1, 11))
        log = await page.evaluate("log")
        # At connect (the forged one), then for the connection's invalid_token, and
        # for the subscribe's, which was sent again with the valid token.
        assert log["tokens"] == 3 and log["errors"] == [] and log["subscribed"] == 1
        assert await server.stop() == 0


async def test_a_frame_too_big_ends_the_client_with_an_error_not_a_retry_loop(
    tmp_path: Path,
) -> None:
    async with page_on_server(tmp_path) as (server, page, _port):
        await start_client(page, "demo.big")
        refused = await page.evaluate(
            "client.publish('demo.big', 'x'.repeat(70000)).then(() => 'published', e => e.code)"
        )
        assert refused == "disconnected"  # its connection closed before the reply
        await page.wait_for("client.state === 'closed'")
        await trio.sleep(2 * HEARTBEAT)  # time for any reconnect to show
        log = await page.evaluate("log")
        assert log["errors"] == ["close_1009"]
        assert log["states"] == ["open", "closed"]
        assert await server.stop() == 0
