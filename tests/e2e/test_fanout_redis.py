"""The hub on the Redis broker: two hubs stand for two processes (each its own
connection, the same keys). Offsets are global, a client resumes on either hub with no
gap and no duplicate, and a lost log is reported, never papered over."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from canopy.nurseries.fanout import (
    BrokerUnavailable,
    CloseReason,
    Hub,
    SlowConsumerPolicy,
    TopicRule,
    TopicRules,
)
from canopy.nurseries.redis import RedisBroker, RedisConnection, client_for_url
from tests.fanout_sinks import RecordingSink
from tests.redis_server import RedisServer

RULES = TopicRules(default=TopicRule(history_size=1000, history_ttl=60))


async def open_hub(
    nursery: trio.Nursery, url: str, prefix: str, rules: TopicRules = RULES, **options: Any
) -> Hub:
    connection = RedisConnection(url)
    hub = Hub(rules, broker=RedisBroker(connection, prefix=prefix), **options)
    await nursery.start(connection.run)
    await nursery.start(hub.run)
    return hub


@pytest.fixture
async def hubs(redis_server: RedisServer, nursery: trio.Nursery) -> AsyncIterator[list[Hub]]:
    prefix = f"fan-{uuid.uuid4().hex[:8]}"
    yield [await open_hub(nursery, redis_server.url, prefix) for _ in range(2)]


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        while True:
            if check():
                return
            await trio.sleep(0.01)


async def test_a_message_published_on_one_hub_reaches_subscribers_on_both(
    hubs: list[Hub],
) -> None:
    here, there = RecordingSink(), RecordingSink()
    await hubs[0].subscribe("orders.*", here)
    await hubs[1].subscribe("orders.7", there)
    first = await hubs[0].publish("orders.7", {"n": 1})
    second = await hubs[1].publish("orders.7", {"n": 2}, key="k")
    assert (first.offset, second.offset) == (1, 2) and first.epoch == second.epoch
    await until(lambda: len(here.messages) == 2 and len(there.messages) == 2)
    for sink in (here, there):
        assert [(m.offset, m.data, m.key) for m in sink.messages] == [
            (1, {"n": 1}, None),
            (2, {"n": 2}, "k"),
        ]


async def test_resume_on_the_other_hub_replays_exactly_what_was_missed_under_load(
    hubs: list[Hub],
) -> None:
    topic = "chat.room-1"
    first = RecordingSink()
    sub = await hubs[0].subscribe(topic, first)
    for n in range(10):
        await hubs[0].publish(topic, n)
    await until(lambda: len(first.messages) == 10)
    hubs[0].unsubscribe(sub)
    last = first.messages[-1]
    done = trio.Event()
    published: list[int] = []  # offsets, in order

    async def publisher() -> None:  # publishing goes on while the client resumes
        n = 10
        while not done.is_set():
            published.append((await hubs[0].publish(topic, n)).offset)
            n += 1
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        # Counted, not timed: missed messages exist before the resume, and more are
        # published after it (a slow CI host publishes fewer per second).
        await until(lambda: len(published) >= 5)
        resumed = RecordingSink()
        await hubs[1].subscribe(topic, resumed, since=last.offset, epoch=last.epoch)
        after = len(published)
        await until(lambda: len(published) >= after + 5)
        done.set()
    await until(lambda: resumed.offsets[-1:] == published[-1:])  # the last live copies
    (replay,) = resumed.opened_with
    assert replay.recovered and replay.epoch == last.epoch
    assert resumed.offsets == list(range(11, published[-1] + 1))  # no gap, no dup
    assert [m.data for m in resumed.messages] == [o - 1 for o in resumed.offsets]


async def test_outside_the_window_or_after_a_lost_log_is_not_recovered(
    redis_server: RedisServer, hubs: list[Hub]
) -> None:
    small = TopicRules(default=TopicRule(history_size=3, history_ttl=60))
    hubs[0].rules = hubs[1].rules = small
    for n in range(6):
        message = await hubs[0].publish("ticker.X", n)
    old = RecordingSink()
    await hubs[1].subscribe("ticker.X", old, since=1, epoch=message.epoch)
    await until(lambda: bool(old.opened_with))
    assert not old.opened_with[0].recovered and old.opened_with[0].offset == 6

    # The log is lost (say, a Redis without persistence restarted): a new epoch.
    broker = hubs[0].broker
    assert isinstance(broker, RedisBroker)
    client = broker.connection.client
    await client.delete([f"{broker.prefix}:log:ticker.X", f"{broker.prefix}:topic:ticker.X"])
    again = await hubs[0].publish("ticker.X", "after")
    assert again.epoch != message.epoch and again.offset == 1
    stale = RecordingSink()
    await hubs[1].subscribe("ticker.X", stale, since=6, epoch=message.epoch)
    await until(lambda: bool(stale.opened_with))
    assert not stale.opened_with[0].recovered and stale.opened_with[0].epoch == again.epoch


async def test_a_log_past_its_window_goes_and_its_offsets_stay(hubs: list[Hub]) -> None:
    """The log lives its rule's history_ttl, the offsets the broker's idle_ttl: a
    client quiet for longer than the window still hears that it missed nothing."""
    hubs[0].rules = hubs[1].rules = TopicRules(default=TopicRule(history_size=10, history_ttl=5))
    for n in range(3):
        message = await hubs[0].publish("news.quiet", n)
    broker = hubs[0].broker
    assert isinstance(broker, RedisBroker)
    client = broker.connection.client
    log_key, meta_key = f"{broker.prefix}:log:news.quiet", f"{broker.prefix}:topic:news.quiet"
    assert 0 < await client.ttl(log_key) <= 5
    assert 3590 < await client.ttl(meta_key) <= 3600

    await client.delete([log_key])  # as its expiry would, five quiet seconds on
    caught_up, behind = RecordingSink(), RecordingSink()
    await hubs[1].subscribe("news.quiet", caught_up, since=3, epoch=message.epoch)
    await hubs[1].subscribe("news.quiet", behind, since=2, epoch=message.epoch)
    await until(lambda: bool(caught_up.opened_with and behind.opened_with))
    assert caught_up.opened_with[0].recovered and caught_up.opened_with[0].epoch == message.epoch
    assert not behind.opened_with[0].recovered  # offset 3 went with the log: a gap
    following = await hubs[0].publish("news.quiet", 3)
    assert (following.epoch, following.offset) == (message.epoch, 4)
    await until(lambda: caught_up.offsets == [4])


async def test_past_max_topics_the_least_recently_published_topics_are_forgotten(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    prefix = f"fan-{uuid.uuid4().hex[:8]}"
    connection = RedisConnection(redis_server.url)
    broker = RedisBroker(connection, prefix=prefix, max_topics=3)
    hub = Hub(RULES, broker=broker)
    await nursery.start(connection.run)
    await nursery.start(hub.run)
    first = {}
    for topic in ("jobs.a", "jobs.b", "jobs.c", "jobs.a"):  # a is then the newest
        first.setdefault(topic, await hub.publish(topic, topic))
    assert broker.evicted == 0
    await hub.publish("jobs.d", "d")  # forgets b
    await hub.publish_many([("jobs.e", "e", None), ("jobs.f", "f", None)])  # c, then a
    assert broker.evicted == 3 and hub.stats()["topics_evicted"] == 3

    client = connection.client
    kept = await client.zrange(f"{broker.prefix}:topics", 0, -1)
    assert sorted(kept) == ["jobs.d", "jobs.e", "jobs.f"]
    for topic in ("jobs.a", "jobs.b", "jobs.c"):
        keys = [f"{broker.prefix}:topic:{topic}", f"{broker.prefix}:log:{topic}"]
        assert await client.exists(keys) == 0
    # A forgotten topic's next publish is a new lifetime; its old resume is told so.
    again = await hub.publish("jobs.b", "b again")
    assert again.epoch != first["jobs.b"].epoch and again.offset == 1
    stale = RecordingSink()
    await hub.subscribe("jobs.b", stale, since=1, epoch=first["jobs.b"].epoch)
    await until(lambda: bool(stale.opened_with))
    assert not stale.opened_with[0].recovered
    assert await client.zcard(f"{broker.prefix}:topics") == 3


async def test_a_topic_subscribed_to_exactly_is_kept_while_its_hub_renews_the_pin(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """As on the memory broker, a topic with an exact subscriber is never forgotten
    to make room: its hub pins it on subscribing and renews the pin (every third of
    ``pin_for``); once nobody renews it, it lapses and the topic may go."""
    prefix = f"fan-{uuid.uuid4().hex[:8]}"
    connection = RedisConnection(redis_server.url)
    broker = RedisBroker(connection, prefix=prefix, max_topics=3, pin_for=0.6)
    hub = Hub(RULES, broker=broker)
    await nursery.start(connection.run)
    await nursery.start(hub.run)
    client = connection.client
    meta = f"{broker.prefix}:topic:chat.keep"

    sink = RecordingSink()
    sub = await hub.subscribe("chat.keep", sink)
    first = await hub.publish("chat.keep", "before")
    await trio.sleep(1.5)  # past pin_for: kept only if the hub renewed the pin
    for n in range(5):
        await hub.publish(f"jobs.{n}", n)
    assert broker.evicted == 3 and await client.exists([meta]) == 1
    after = await hub.publish("chat.keep", "after")
    assert (after.epoch, after.offset) == (first.epoch, 2)
    await until(lambda: sink.offsets == [1, 2])

    hub.unsubscribe(sub)
    await trio.sleep(0.7)  # the pin lapses
    for n in range(5, 8):
        await hub.publish(f"jobs.{n}", n)
    assert await client.exists([meta]) == 0
    assert await client.zcard(f"{broker.prefix}:topics") == 3


async def test_history_reads_the_shared_log(hubs: list[Hub]) -> None:
    for n in range(5):
        message = await hubs[0].publish("news.a", {"n": n})
    latest = await hubs[1].history("news.a", limit=2)
    assert [m.offset for m in latest.messages] == [4, 5] and latest.epoch == message.epoch
    after = await hubs[1].history("news.a", since=2, epoch=message.epoch, limit=10)
    assert after.recovered and [m.data["n"] for m in after.messages] == [2, 3, 4]
    nothing = await hubs[1].history("news.never")
    assert nothing.epoch == "" and nothing.offset == 0


async def test_publish_without_redis_is_refused(redis_server: RedisServer) -> None:
    connection = RedisConnection(redis_server.url)  # never started: not connected
    hub = Hub(RULES, broker=RedisBroker(connection, prefix="nowhere"))
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        with pytest.raises(BrokerUnavailable):
            await hub.publish("a.b", 1)
        hub.shutdown()


async def test_slow_consumer_policies_apply_to_what_the_broker_delivers(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    rules = TopicRules(
        [TopicRule("ticker.*", SlowConsumerPolicy.LATEST)],
        TopicRule(history_size=100, history_ttl=60),
    )
    prefix = f"fan-{uuid.uuid4().hex[:8]}"
    hub = await open_hub(nursery, redis_server.url, prefix, queue_size=4, batch_size=2)
    hub.rules = rules

    slow = RecordingSink()
    sub = await hub.subscribe("orders.1", slow)
    await hub.publish("orders.1", 0)
    await until(lambda: len(slow.messages) == 1)
    slow.stall()
    for n in range(1, 10):
        await hub.publish("orders.1", n)
    await until(lambda: slow.closed_with == [CloseReason.SLOW_CONSUMER])
    assert sub.resume_offset == 1
    again = RecordingSink()
    assert sub.replay is not None
    await hub.subscribe("orders.1", again, since=1, epoch=sub.replay.epoch)
    await until(lambda: again.offsets == list(range(2, 11)))

    ticker = RecordingSink()
    await hub.subscribe("ticker.*", ticker)
    await hub.publish("ticker.BTC", 1)
    await until(lambda: len(ticker.messages) == 1)
    ticker.stall()
    await hub.publish_many(
        [("ticker.BTC" if n % 2 else "ticker.ETH", n, None) for n in range(2, 30)]
    )
    await trio.sleep(0.2)  # all heard and conflated while stalled
    ticker.resume()
    await until(lambda: ticker.messages[-1].data == 29)
    got = [(m.topic, m.data) for m in ticker.messages]
    # Conflated to the newest per key: besides the first, at most the batch the pump
    # held when it stalled (2) and a full queue (4).
    assert got[-2:] == [("ticker.ETH", 28), ("ticker.BTC", 29)] and len(got) <= 1 + 2 + 4


async def test_a_stalled_pump_holds_a_broker_fed_flush_back_only_briefly(
    redis_server: RedisServer, nursery: trio.Nursery
) -> None:
    """A broker-fed flush waits for the pumps it woke to write before the next one;
    a pump that never finishes (its sink stalled, as a full socket would) must not
    hold the other subscribers' deliveries back for more than a few intervals."""
    prefix = f"fan-{uuid.uuid4().hex[:8]}"
    hub = await open_hub(nursery, redis_server.url, prefix, flush_interval=0.05)
    stalled, healthy = RecordingSink(), RecordingSink()
    await hub.subscribe("orders.1", stalled)
    await hub.subscribe("orders.1", healthy)
    stalled.stall()
    await hub.publish("orders.1", 0)  # the stalled pump takes it and blocks
    await until(lambda: healthy.offsets == [1])
    for n in range(1, 6):
        start = trio.current_time()
        await hub.publish("orders.1", n)
        await until(lambda n=n: len(healthy.offsets) == n + 1, seconds=1.0)
        # one interval's wait for the last flush, two for the stalled pump, and Redis
        assert trio.current_time() - start < 3 * 0.05 + 0.2
    assert healthy.offsets == [1, 2, 3, 4, 5, 6]
    stalled.resume()
    await until(lambda: stalled.offsets == [1, 2, 3, 4, 5, 6])


@asynccontextmanager
async def heard_on(url: str, *channels: str) -> AsyncIterator[list[tuple[str, Any]]]:
    """What a process subscribed to ``channels`` (one subscription) hears, decoded."""
    heard: list[tuple[str, Any]] = []
    client = client_for_url(url)

    async def listen(task_status: trio.TaskStatus[None]) -> None:
        async with client.pubsub(channels=list(channels), ignore_subscribe_messages=True) as sub:
            task_status.started()
            async for message in sub:
                heard.append((message["channel"], json.loads(message["data"])))

    async with client, trio.open_nursery() as nursery:
        await nursery.start(listen)
        yield heard
        nursery.cancel_scope.cancel()


THREE = [("orders.7", {"n": n}, None) for n in range(3)]


async def test_a_publish_scripts_messages_travel_as_one_batch(
    hubs: list[Hub], redis_server: RedisServer
) -> None:
    prefix = hubs[0].broker.prefix  # type: ignore[union-attr]
    there = RecordingSink()
    await hubs[1].subscribe("orders.7", there)
    # A process like this one: it hears both channels.
    async with heard_on(redis_server.url, f"{prefix}:fanout", f"{prefix}:fanout:batch") as heard:
        await hubs[0].publish_many(THREE)
        await until(lambda: len(there.messages) == 3 and len(heard) == 1)
    ((channel, batch),) = heard
    assert channel == f"{prefix}:fanout:batch"
    assert [(m["o"], m["d"]) for m in batch] == [(1, {"n": 0}), (2, {"n": 1}), (3, {"n": 2})]
    assert [m.data for m in there.messages] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_an_older_canopy_keeps_hearing_and_sending_single_messages(
    hubs: list[Hub], redis_server: RedisServer
) -> None:
    """During a rolling upgrade: an older instance listens on ``{P}:fanout`` alone and
    publishes there, one message each. It hears every message; this one hears its,
    in order, with no gap and no duplicate; and once it has gone, batches resume."""
    prefix = hubs[0].broker.prefix  # type: ignore[union-attr]
    there = RecordingSink()
    await hubs[1].subscribe("orders.7", there)
    async with heard_on(redis_server.url, f"{prefix}:fanout") as older:
        await hubs[0].publish_many(THREE)
        await until(lambda: len(older) == 3 and len(there.messages) == 3)
        assert [(channel, body["o"]) for channel, body in older] == [
            (f"{prefix}:fanout", offset) for offset in (1, 2, 3)
        ]
        # What an older instance publishes: one message, on the single channel.
        async with client_for_url(redis_server.url) as client:
            await client.hincrby(f"{prefix}:topic:orders.7", "offset", 1)
            single = {"t": "orders.7", "o": 4, "e": older[0][1]["e"], "ts": 1.0, "k": None}
            await client.publish(f"{prefix}:fanout", json.dumps({**single, "d": {"n": 3}}))
        await until(lambda: len(there.messages) == 4)
    async with heard_on(redis_server.url, f"{prefix}:fanout", f"{prefix}:fanout:batch") as heard:
        await hubs[0].publish_many(THREE)
        await until(lambda: len(heard) == 1 and len(there.messages) == 7)
    assert heard[0][0] == f"{prefix}:fanout:batch"
    assert [m.offset for m in there.messages] == list(range(1, 8))


async def test_a_malformed_batch_is_ignored_and_the_next_heard(
    hubs: list[Hub], redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = hubs[0].broker.prefix  # type: ignore[union-attr]
    there = RecordingSink()
    await hubs[1].subscribe("orders.7", there)
    async with client_for_url(redis_server.url) as client:
        for junk in ("not json", '{"t": "orders.7"}', '[{"t": "orders.7"}, 3]'):
            await client.publish(f"{prefix}:fanout:batch", junk)
    await hubs[0].publish("orders.7", {"n": 1})
    await until(lambda: len(there.messages) == 1)
    assert there.messages[0].offset == 1
    # Each of the two hubs: two batches refused whole, two entries of the third.
    assert sum("malformed fan-out" in r.message for r in caplog.records) == 2 * 4


@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_the_resume_window_is_the_same_on_both_brokers(
    broker: str, request: pytest.FixtureRequest, nursery: trio.Nursery
) -> None:
    """``history_size`` and ``history_ttl`` bound what a resume recovers, alike on both.
    On Redis the stream is trimmed by length, and on a topic that stays active (its
    key refreshed by each publish) only the age check ages messages out: a broker
    without it would pass the memory hub's own test and fail this one."""
    rules = TopicRules(
        [
            TopicRule("short.*", history_size=3, history_ttl=60.0),
            TopicRule("aged.*", history_size=100, history_ttl=1.0),
        ]
    )
    if broker == "memory":
        hub = Hub(rules)
        await nursery.start(hub.run)
    else:
        redis: RedisServer = request.getfixturevalue("redis_server")
        hub = await open_hub(nursery, redis.url, f"win-{uuid.uuid4().hex[:8]}", rules)
    for n in range(1, 6):
        await hub.publish("short.a", n)
    page = await hub.history("short.a")
    assert [m.offset for m in page.messages] == [3, 4, 5]
    kept = await hub.history("short.a", since=2, epoch=page.epoch)
    assert kept.recovered and [m.offset for m in kept.messages] == [3, 4, 5]
    trimmed = await hub.history("short.a", since=1, epoch=page.epoch)
    assert not trimmed.recovered and trimmed.messages == []

    for n in range(1, 4):
        await hub.publish("aged.a", n)
    await trio.sleep(0.7)
    epoch = (await hub.publish("aged.a", 4)).epoch  # the topic stays active
    await trio.sleep(0.6)  # 1 to 3 are past the TTL now, 4 is not
    for since, recovered in ((1, False), (3, True)):
        sink = RecordingSink()
        resumed = await hub.subscribe("aged.a", sink, since=since, epoch=epoch)
        assert resumed.replay is not None and resumed.replay.recovered is recovered, since
        if recovered:  # the replay goes to the subscriber, then live messages follow
            await until(lambda: sink.offsets == [4])  # noqa: B023 (awaited at once)


async def test_on_a_broker_every_topic_is_kept_on_demand_or_not(hubs: list[Hub]) -> None:
    """A subscriber may be on any process, so a hub with a broker cannot know that
    nobody hears a topic: ``on_demand`` leaves the topics to the broker, which keeps
    each one's window (and bounds their number) as for any topic."""

    async def snapshot(topic: str) -> object:
        raise AssertionError("the broker keeps the topic: no state is read")

    for hub in hubs:
        hub.on_demand("jobs.*", snapshot, lambda data: 0)
    published = await hubs[0].publish("jobs.1", {"state": "running"})
    assert published.offset == 1 and hubs[0].stats()["unheard"] == 0
    sink = RecordingSink()
    await hubs[1].subscribe("jobs.1", sink, since=0)
    await until(lambda: len(sink.messages) == 1)
    assert sink.messages[0].data == {"state": "running"}
