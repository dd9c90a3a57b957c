"""The hub on autojump_clock: ordering, policies, history windows, resume, presence."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import trio
import trio.lowlevel
import trio.testing

from canopy.nurseries.fanout import (
    CloseReason,
    Hub,
    HubClosed,
    InvalidTopic,
    Message,
    SlowConsumerPolicy,
    SubscriberGone,
    Subscription,
    TooManySubscriptions,
    TooManyTopics,
    TopicRule,
    TopicRules,
    check_pattern,
    pattern_matches,
)
from tests.fanout_sinks import RecordingSink, settle


@pytest.fixture
async def hub(nursery: trio.Nursery) -> AsyncIterator[Hub]:
    rules = TopicRules(
        [
            TopicRule("drop.*", SlowConsumerPolicy.DROP_OLDEST),
            TopicRule("ticker.*", SlowConsumerPolicy.LATEST),
            TopicRule("short.*", history_size=3, history_ttl=10.0),
        ]
    )
    hub = Hub(rules, queue_size=4, batch_size=2)
    await nursery.start(hub.run)
    yield hub
    hub.shutdown()


def test_topic_names_and_patterns() -> None:
    assert pattern_matches("orders.*", "orders.1")
    assert pattern_matches("orders.*", "orders.1.lines")
    assert not pattern_matches("orders.*", "orders")
    assert not pattern_matches("orders.*", "ordersx.1")
    assert pattern_matches("*", "anything.at.all")
    for bad in ["", "a..b", ".a", "a.", "a b", "a.*.b", "x" * 201, 7, "orders.**"]:
        with pytest.raises(InvalidTopic):
            check_pattern(bad)


def test_rules_pick_the_most_specific() -> None:
    rules = TopicRules([TopicRule("a.*", history_size=1), TopicRule("a.b.*", history_size=2)])
    assert rules.for_topic("a.b.c").history_size == 2
    assert rules.for_topic("a.c").history_size == 1
    assert rules.for_topic("z").history_size == rules.default.history_size


async def test_messages_arrive_in_order_with_offsets(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    sink = RecordingSink()
    sub = await hub.subscribe("orders.1", sink)
    assert sub.replay is not None and sub.replay.offset == 0 and sub.replay.recovered
    for n in range(10):
        await hub.publish("orders.1", {"n": n})
        await settle()
    assert sink.offsets == list(range(1, 11))
    assert [m.data["n"] for m in sink.messages] == list(range(10))
    assert {m.epoch for m in sink.messages} == {sub.replay.epoch}


async def test_wildcards_and_exact_both_match(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    exact, wildcard, everything = RecordingSink(), RecordingSink(), RecordingSink()
    await hub.subscribe("orders.1", exact)
    await hub.subscribe("orders.*", wildcard)
    await hub.subscribe("*", everything)
    await hub.publish("orders.1", "a")
    await hub.publish("orders.2", "b")
    await hub.publish("chat.x", "c")
    await settle()
    assert [m.data for m in exact.messages] == ["a"]
    assert [m.data for m in wildcard.messages] == ["a", "b"]
    assert [m.data for m in everything.messages] == ["a", "b", "c"]


async def test_a_lone_message_goes_out_as_soon_as_the_loop_is_idle(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hub = Hub(flush_interval=60.0)
    await nursery.start(hub.run)
    sink = RecordingSink()
    await hub.subscribe("orders.1", sink)
    start = trio.current_time()
    await hub.publish("orders.1", "hello")
    await settle()
    assert sink.offsets == [1]
    assert trio.current_time() == start  # no flush interval was waited out
    hub.shutdown()


async def test_a_burst_reaches_each_subscriber_in_one_delivery(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    sinks = [RecordingSink() for _ in range(3)]
    for sink in sinks:
        await hub.subscribe("burst.x", sink)
    await settle()
    # The publisher yields between messages, but the loop is never idle meanwhile.
    for n in range(2):  # the hub fixture's queues hold 4: half full is written at once
        await hub.publish("burst.x", n)
        await trio.lowlevel.checkpoint()
    await settle()
    assert [sink.batches for sink in sinks] == [[2]] * 3


async def test_a_busy_loop_holds_deliveries_back_no_longer_than_the_flush_interval(
    nursery: trio.Nursery,
) -> None:
    async def spin() -> None:  # keeps the loop from ever going idle
        while True:
            await trio.lowlevel.checkpoint()

    hub = Hub(flush_interval=0.05)
    await nursery.start(hub.run)
    sink = RecordingSink()
    await hub.subscribe("orders.1", sink)
    await settle()  # its pump is parked
    nursery.start_soon(spin)
    start = trio.current_time()
    await hub.publish("orders.1", "hello")
    with trio.fail_after(5):
        while not sink.items:
            await trio.lowlevel.checkpoint()
    assert 0.05 <= trio.current_time() - start < 1.0
    hub.shutdown()
    nursery.cancel_scope.cancel()


async def test_publishing_never_waits_for_a_stalled_subscriber(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    stalled, healthy = RecordingSink(), RecordingSink()
    stalled.stall()
    await hub.subscribe("orders.1", stalled)
    await hub.subscribe("orders.1", healthy)
    start = trio.current_time()
    for n in range(100):
        await hub.publish("orders.1", n)
        await trio.lowlevel.checkpoint()
    assert trio.current_time() == start
    await settle()
    assert healthy.offsets == list(range(1, 101))
    assert stalled.closed_with == [CloseReason.SLOW_CONSUMER]


async def test_disconnect_policy_closes_with_the_offset_to_resume_from(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    sink = RecordingSink()
    sub = await hub.subscribe("orders.1", sink)
    await hub.publish("orders.1", 0)
    await settle()
    sink.stall()
    for n in range(1, 10):
        await hub.publish("orders.1", n)
    await settle()
    assert sink.closed_with == [CloseReason.SLOW_CONSUMER]
    assert sub.closed and sub.resume_offset == 1
    assert hub.stats()["subscriptions"] == 0 and hub.stats()["slow_disconnects"] == 1
    # Resuming from that offset replays exactly what it missed.
    again = RecordingSink()
    resumed = await hub.subscribe("orders.1", again, since=1, epoch=sub.replay.epoch)  # type: ignore[union-attr]
    await settle()
    assert resumed.replay is not None and resumed.replay.recovered
    assert again.offsets == list(range(2, 11))


async def test_drop_oldest_keeps_the_newest(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    sink = RecordingSink()
    sink.stall()
    sub = await hub.subscribe("drop.x", sink)
    await hub.publish("drop.x", 1)
    await settle()  # the pump takes the first and stalls delivering it
    for n in range(2, 21):
        await hub.publish("drop.x", n)
    sink.resume()
    await settle()
    # The queue keeps the last 4.
    assert sink.offsets == [1, 17, 18, 19, 20]
    assert sub.dropped == 15 and not sub.closed


async def test_latest_conflates_per_key(hub: Hub, autojump_clock: trio.testing.MockClock) -> None:
    sink = RecordingSink()
    sink.stall()
    await hub.subscribe("ticker.*", sink)
    await hub.publish("ticker.BTC", 1)  # taken by the pump before it stalls
    await settle()
    for n in range(2, 30):
        await hub.publish("ticker.BTC" if n % 2 else "ticker.ETH", n)
    sink.resume()
    await settle()
    # When the queue fills, what is queued is conflated to the newest per key.
    got = [(m.topic, m.data) for m in sink.messages]
    assert got[0] == ("ticker.BTC", 1)
    assert got[-2:] == [("ticker.ETH", 28), ("ticker.BTC", 29)]
    assert len(got) <= 1 + 4
    assert [m.offset for m in sink.messages if m.topic == "ticker.BTC"] == sorted(
        m.offset for m in sink.messages if m.topic == "ticker.BTC"
    )


async def test_history_window_by_size_and_ttl(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    for n in range(1, 6):
        await hub.publish("short.a", n)
    page = await hub.history("short.a")
    assert [m.offset for m in page.messages] == [3, 4, 5]
    ok = await hub.history("short.a", since=2, epoch=page.epoch)
    assert ok.recovered and [m.offset for m in ok.messages] == [3, 4, 5]
    gone = await hub.history("short.a", since=1, epoch=page.epoch)
    assert not gone.recovered and gone.messages == []
    await trio.sleep(10)
    expired = await hub.history("short.a", since=4, epoch=page.epoch)
    assert not expired.recovered
    current = await hub.history("short.a", since=5, epoch=page.epoch)
    assert current.recovered and current.messages == []


async def test_resume_is_refused_across_epochs_and_from_the_future(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    await hub.publish("orders.9", 1)
    for since, epoch in [
        (0, "not-the-epoch"),
        (5, None),
        (7, (await hub.history("orders.9")).epoch),
    ]:
        sink = RecordingSink()
        sub = await hub.subscribe("orders.9", sink, since=since, epoch=epoch)
        await settle()
        assert sub.replay is not None and not sub.replay.recovered
        assert sink.messages == []
    fresh = RecordingSink()
    await hub.subscribe("orders.9", fresh, since=0)
    await settle()
    assert fresh.offsets == [1]


async def test_resume_then_live_has_no_gap_and_no_duplicate(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    for n in range(1, 4):
        await hub.publish("orders.5", n)
    epoch = (await hub.history("orders.5")).epoch
    sink = RecordingSink()
    await hub.subscribe("orders.5", sink, since=1, epoch=epoch)
    for n in range(4, 7):
        await hub.publish("orders.5", n)
    await settle()
    assert sink.offsets == [2, 3, 4, 5, 6]


async def test_presence_joins_and_leaves(hub: Hub, autojump_clock: trio.testing.MockClock) -> None:
    watcher = RecordingSink()
    await hub.subscribe("chat.room", watcher, client="agent", presence=True)
    alice = await hub.subscribe("chat.room", RecordingSink(), client="alice", info={"n": 1})
    second = await hub.subscribe("chat.room", RecordingSink(), client="alice")
    assert {p["client"] for p in hub.presence("chat.room")} == {"agent", "alice"}
    hub.unsubscribe(alice)
    await settle()
    assert watcher.presence == [("join", "agent"), ("join", "alice")]
    hub.unsubscribe(second)
    await settle()
    assert watcher.presence[2:] == [("leave", "alice")]
    assert [p["client"] for p in hub.presence("chat.room")] == ["agent"]


async def test_a_failing_sink_ends_only_its_subscription(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    class Broken(RecordingSink):
        async def deliver(self, subscription, items):  # type: ignore[no-untyped-def]
            raise ConnectionError("gone")

    good = RecordingSink()
    broken = await hub.subscribe("orders.1", Broken())
    await hub.subscribe("orders.1", good)
    await hub.publish("orders.1", 1)
    await settle()
    await hub.publish("orders.1", 2)
    await settle()
    assert broken.closed and good.offsets == [1, 2]


async def test_a_client_that_left_is_counted_not_logged_as_an_error(
    hub: Hub, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A vanished client is the normal end of a WebSocket, not a server fault: the
    sink says so with SubscriberGone; any other exception is still an error."""

    class Gone(RecordingSink):
        async def deliver(self, subscription, items):  # type: ignore[no-untyped-def]
            raise SubscriberGone("the connection is closed")

    class Broken(RecordingSink):
        async def deliver(self, subscription, items):  # type: ignore[no-untyped-def]
            raise RuntimeError("a bug")

    caplog.set_level(logging.DEBUG, logger="canopy.fanout")
    await hub.subscribe("orders.1", Gone())
    await hub.subscribe("orders.2", Broken())
    await hub.publish("orders.1", 1)
    await hub.publish("orders.2", 1)
    await settle()
    assert hub.stats()["gone"] == 1 and hub.stats()["subscriptions"] == 0
    by_level = {(r.levelname, r.getMessage().split(" (")[0].split()[0]) for r in caplog.records}
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.exc_info[0] for r in errors if r.exc_info] == [RuntimeError]
    assert ("DEBUG", "subscriber") in by_level


async def test_limits_and_bad_requests(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hub = Hub(max_subscriptions=1)
    with pytest.raises(HubClosed):
        await hub.subscribe("a", RecordingSink())
    await nursery.start(hub.run)
    with pytest.raises(ValueError, match="exact topic"):
        await hub.subscribe("a.*", RecordingSink(), since=3)
    await hub.subscribe("a", RecordingSink())
    with pytest.raises(TooManySubscriptions):
        await hub.subscribe("b", RecordingSink())
    hub.shutdown()


async def test_shutdown_closes_every_subscriber_and_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub()
    sinks = [RecordingSink() for _ in range(3)]
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        for sink in sinks:
            await hub.subscribe("t", sink)
        sinks[0].stall()
        await hub.publish("t", 1)
        await settle()
        hub.shutdown()
    assert all(s.closed_with == [CloseReason.HUB_STOPPING] for s in sinks)
    assert hub.stats()["subscriptions"] == 0


async def test_idle_topics_are_forgotten_and_get_a_new_epoch(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hub = Hub(TopicRules(default=TopicRule(history_ttl=5)), idle_topic_ttl=60, sweep_interval=1)
    await nursery.start(hub.run)
    first = await hub.publish("t", 1)
    await trio.sleep(62)
    assert hub.stats()["topics"] == 0
    second = await hub.publish("t", 2)
    assert second.offset == 1 and second.epoch != first.epoch
    hub.shutdown()


async def test_a_topic_nobody_watched_is_forgotten_with_its_window(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A job's or an order's topic that no one subscribed to costs memory only while
    its history could still be asked for; one that was watched keeps its offsets for
    the idle TTL, so a resume after a quiet spell is still answered."""
    hub = Hub(TopicRules(default=TopicRule(history_ttl=5)), idle_topic_ttl=60, sweep_interval=1)
    await nursery.start(hub.run)
    await hub.publish("jobs.1", "done")
    watched = await hub.subscribe("chat.1", RecordingSink())
    last = await hub.publish("chat.1", "hi")
    hub.unsubscribe(watched)
    await trio.sleep(4)
    assert (await hub.history("jobs.1")).offset == 1  # still in its window
    await trio.sleep(3)
    assert (await hub.history("jobs.1")).epoch == ""  # window empty: forgotten
    sub = await hub.subscribe("chat.1", RecordingSink(), since=1, epoch=last.epoch)
    assert sub.replay is not None and sub.replay.recovered  # offsets kept
    hub.shutdown()


async def test_the_sweeper_lets_others_run_between_slices(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A full table is swept a slice at a time: a task that asks for a turn during a
    pass gets it before the pass ends."""
    from canopy.nurseries.fanout._hub import SWEEP_SLICE

    hub = Hub(TopicRules(default=TopicRule(history_ttl=5)), idle_topic_ttl=60, sweep_interval=10)
    start = trio.current_time()
    await nursery.start(hub.run)
    topics = 3 * SWEEP_SLICE
    for n in range(topics):
        await hub.publish(f"jobs.{n}", n)
    sizes: list[int] = []

    async def watch() -> None:
        await trio.sleep_until(start + 10)  # when the sweeper wakes too
        while hub.stats()["topics"]:
            sizes.append(hub.stats()["topics"])
            await trio.lowlevel.checkpoint()

    nursery.start_soon(watch)
    await trio.sleep(11)
    assert hub.stats()["topics"] == 0
    assert any(0 < size < topics for size in sizes)  # seen between two slices
    hub.shutdown()


async def test_a_full_topic_table_forgets_the_least_recently_used_unsubscribed_topic(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Past max_topics a new topic takes the place of the least recently used one that
    has no exact subscriber; a resume of the forgotten one is refused explicitly."""
    hub = Hub(max_topics=3)
    await nursery.start(hub.run)
    first_c = await hub.publish("c.1", "c")
    for topic in ["a.1", "b.1"]:
        await hub.publish(topic, topic)
    sink = RecordingSink()
    await hub.subscribe("c.1", sink, since=0)  # c is used again, and pinned
    await hub.publish("d.1", "d")  # the table is full: a (least recently used) goes
    assert (await hub.history("a.1")).epoch == ""  # forgotten, with its history
    assert hub.stats()["topics"] == 3 and hub.stats()["topics_evicted"] == 1
    await hub.publish("b.1", "b again")  # b is now the most recently used
    await hub.publish("e.1", "e")  # c is at the front, subscribed: d goes instead
    assert (await hub.history("d.1")).epoch == ""
    assert (await hub.history("b.1")).offset == 2
    second_c = await hub.publish("c.1", "c again")  # never forgotten while subscribed
    assert (second_c.epoch, second_c.offset) == (first_c.epoch, 2)
    await settle()
    assert [m.data for m in sink.messages] == ["c", "c again"]
    forgotten = RecordingSink()
    sub = await hub.subscribe("d.1", forgotten, since=1, epoch="whatever d had")
    assert sub.replay is not None and not sub.replay.recovered
    hub.shutdown()


async def test_a_new_topic_is_refused_only_when_every_topic_has_a_subscriber(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    hub = Hub(max_topics=2)
    await nursery.start(hub.run)
    await hub.subscribe("x.1", RecordingSink())
    held = await hub.subscribe("y.1", RecordingSink())
    with pytest.raises(TooManyTopics, match="every one has a subscriber"):
        await hub.publish("z.1", 1)
    hub.unsubscribe(held)
    await hub.publish("z.1", 1)  # y has no subscriber now: it makes room
    assert (await hub.history("y.1")).epoch == ""
    assert (await hub.history("x.1")).offset == 0 and hub.stats()["topics"] == 2
    hub.shutdown()


class RecordingOutlet:
    """An Outlet: takes what the hub wakes it for, at once, with no pump."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.writes: list[list[int]] = []  # the offsets of each wake's take
        self.ended_with: list[CloseReason] = []

    def wake(self, subscription: Subscription) -> None:
        items = subscription.take(100)
        self.hub.took(subscription, items)
        self.writes.append([item.offset for item in items if isinstance(item, Message)])

    def ended(self, subscription: Subscription, reason: CloseReason) -> None:
        self.ended_with.append(reason)


async def test_an_idle_hub_writes_a_message_to_an_outlet_at_once(nursery: trio.Nursery) -> None:
    """The rule of docs/ARCHITECTURE.md: a lone message goes out in the publisher's
    task, with no wait; what is published before the loop goes idle again, or
    several at once, waits for the flusher and goes out in one write each."""
    hub = Hub(queue_size=100)
    await nursery.start(hub.run)
    outlet = RecordingOutlet(hub)
    sub = await hub.subscribe("paced.1", outlet)
    assert sub.scope is None  # no pump
    sub.held = False  # the outlet has sent what comes first
    await hub.publish("paced.1", "a")
    assert outlet.writes == [[1]]  # before any checkpoint: written during publish
    await hub.publish("paced.1", "b")
    await hub.publish("paced.1", "c")
    assert outlet.writes == [[1]]  # not idle since: batched
    await trio.testing.wait_all_tasks_blocked()
    await trio.sleep(0.01)
    assert outlet.writes == [[1], [2, 3]]
    assert sub.resume_offset == 3
    await hub.publish_many([("paced.1", "d", None), ("paced.1", "e", None)])
    assert outlet.writes == [[1], [2, 3]]  # several at once: batched
    await trio.sleep(0.01)
    assert outlet.writes == [[1], [2, 3], [4, 5]]
    await trio.sleep(0.01)
    await hub.publish("paced.1", "f")  # idle again
    assert outlet.writes[-1] == [6]
    hub.shutdown()


async def test_an_outlet_hears_when_the_hub_ends_its_subscription(hub: Hub) -> None:
    outlet = RecordingOutlet(hub)
    await hub.subscribe("paced.2", outlet)
    hub.shutdown()
    await trio.sleep(0.01)
    assert outlet.ended_with == [CloseReason.HUB_STOPPING]


async def test_an_outlet_is_not_woken_for_a_subscription_it_has_not_opened(
    nursery: trio.Nursery,
) -> None:
    """Live messages wait until the outlet has sent what comes first (with a broker,
    they arrive while its replay is read): written before, they came ahead of the
    backlog and again after it."""
    hub = Hub(queue_size=100)
    await nursery.start(hub.run)
    outlet = RecordingOutlet(hub)
    sub = await hub.subscribe("held.1", outlet)
    assert sub.held
    await hub.publish("held.1", "a")  # an idle hub: at once, but not to a held one
    await trio.sleep(0.01)  # and not at the flush
    assert outlet.writes == []
    sub.held = False
    outlet.wake(sub)
    assert outlet.writes == [[1]]
    hub.shutdown()


async def test_an_on_demand_topic_keeps_nothing_until_opened_and_starts_with_its_state(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    """A job's or order's topic: publishes before anyone subscribes are kept nowhere;
    the log a subscriber opens starts with the state the store has, read while live
    messages queue, so none is lost between the two."""
    states = {"job.1": {"state": "running"}}
    reading = trio.Event()
    release = trio.Event()

    async def snapshot(topic: str) -> object:
        reading.set()
        await release.wait()
        return states.get(topic)

    hub.on_demand("job.*", snapshot, _version)
    for n in range(3):
        unheard = await hub.publish("job.1", {"n": n})
        assert unheard.offset == 0 and unheard.epoch == ""
    assert hub.stats()["topics"] == 0 and hub.stats()["unheard"] == 3
    assert (await hub.history("job.1")).messages == []

    first, second = RecordingSink(), RecordingSink()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.subscribe, "job.1", first)
        await reading.wait()
        # Published while the state is read: queued live, and after the state.
        await hub.publish("job.1", {"n": 3})
        nursery.start_soon(lambda: hub.subscribe("job.1", second, since=0))
        await trio.testing.wait_all_tasks_blocked()
        assert first.messages == [] and second.messages == []
        release.set()
    await hub.publish("job.1", {"n": 4})
    await settle()
    # Live messages only: the state, offered once read, and what came after.
    assert [m.data for m in first.messages] == [{"state": "running"}, {"n": 3}, {"n": 4}]
    # From the start: the state (offset 1), then everything since, once each.
    assert [m.data for m in second.messages] == [{"state": "running"}, {"n": 3}, {"n": 4}]
    assert second.offsets == [1, 2, 3]
    assert hub.stats()["unheard"] == 3
    history = await hub.history("job.1", since=0)
    assert [m.offset for m in history.messages] == [1, 2, 3]

    # Not on demand, or already open: as any topic.
    await hub.publish("other.1", {"n": 0})
    assert [m.data for m in (await hub.history("other.1")).messages] == [{"n": 0}]


async def test_an_on_demand_topic_with_no_state_starts_empty_and_a_failed_read_says_so(
    hub: Hub, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def snapshot(topic: str) -> object:
        if topic == "job.broken":
            raise OSError("store away")
        return None

    hub.on_demand("job.*", snapshot, _version)
    sink = RecordingSink()
    sub = await hub.subscribe("job.none", sink, since=0)
    assert sub.replay is not None and sub.replay.recovered and sub.replay.offset == 0
    await hub.publish("job.none", {"n": 0})
    await settle()
    assert sink.offsets == [1]

    with caplog.at_level(logging.WARNING, "canopy.fanout"):
        broken = RecordingSink()
        sub = await hub.subscribe("job.broken", broken, since=0)
    assert "could not read the state of job.broken" in caplog.text
    # Its state could not be read: from the start is not recoverable, and says so.
    assert sub.replay is not None and not sub.replay.recovered and sub.replay.offset == 1
    await hub.publish("job.broken", {"n": 0})
    await settle()
    assert broken.offsets == [2]


async def test_a_subscriber_that_leaves_while_the_state_is_read_leaves_the_others_served(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    release = trio.Event()

    async def snapshot(topic: str) -> object:
        await release.wait()
        return {"state": "queued"}

    hub.on_demand("job.*", snapshot, _version)
    sink = RecordingSink()
    with trio.move_on_after(1):
        await hub.subscribe("job.1", RecordingSink(), since=0)
    assert hub.stats()["subscriptions"] == 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: hub.subscribe("job.1", sink, since=0))
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    await settle()
    assert [m.data for m in sink.messages] == [{"state": "queued"}]


async def test_a_pattern_subscriber_hears_an_on_demand_topic_as_any_other(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    """Someone hears ``job.*``: a publish to one of its topics makes that topic's log
    as for any topic (each message is the whole state), with the offsets an exact
    subscriber then gets."""

    async def snapshot(topic: str) -> object:
        raise AssertionError("a log a publish makes starts with the message")

    hub.on_demand("job.*", snapshot, _version)
    await hub.publish("job.1", {"n": 0})
    assert hub.stats()["unheard"] == 1
    watcher = RecordingSink()
    await hub.subscribe("job.*", watcher)
    await hub.publish("job.1", {"n": 1})
    await hub.publish("job.1", {"n": 2})
    await settle()
    assert [(m.offset, m.data) for m in watcher.messages] == [(1, {"n": 1}), (2, {"n": 2})]
    assert hub.stats()["unheard"] == 1 and hub.stats()["topics"] == 1
    exact = RecordingSink()
    await hub.subscribe("job.1", exact, since=0)
    await settle()
    assert exact.offsets == [1, 2]


async def test_what_is_published_while_the_state_is_read_and_is_older_is_not_kept(
    hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    """Stored before the state was read, published after: the state shows it already,
    and it would take a subscriber back in time."""
    release = trio.Event()

    async def snapshot(topic: str) -> object:
        await release.wait()
        return {"n": 5}

    hub.on_demand("job.*", snapshot, _version)
    sink = RecordingSink()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: hub.subscribe("job.1", sink, since=0))
        await trio.testing.wait_all_tasks_blocked()
        for n in (4, 5, 6):
            await hub.publish("job.1", {"n": n})
        release.set()
    await settle()
    assert [(m.offset, m.data) for m in sink.messages] == [
        (1, {"n": 5}),
        (2, {"n": 5}),
        (3, {"n": 6}),
    ]
    assert hub.stats()["unheard"] == 1


def _version(data: object) -> object:
    return data.get("n", 0) if isinstance(data, dict) else 0


async def test_a_version_key_that_fails_keeps_the_message_and_the_hub(
    hub: Hub, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    release = trio.Event()

    async def snapshot(topic: str) -> object:
        await release.wait()
        return {"n": 5}

    hub.on_demand("job.*", snapshot, lambda data: data["n"])
    sink = RecordingSink()
    with caplog.at_level(logging.WARNING, "canopy.fanout"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: hub.subscribe("job.1", sink, since=0))
            await trio.testing.wait_all_tasks_blocked()
            await hub.publish("job.1", "not a dict")
            release.set()
    await hub.publish("job.1", {"n": 6})
    await settle()
    assert [m.data for m in sink.messages] == [{"n": 5}, "not a dict", {"n": 6}]
    assert "could not order a message against the state" in caplog.text
