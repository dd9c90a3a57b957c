"""The ticker: the alert book, the simulated feed's pacing, and the service with a real
hub and store (alerts fire once, survive a restart, and a cut-off notice is resent)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from canopy.handlers.ticker import (
    Alert,
    AlertBook,
    AlertState,
    AlertStore,
    Direction,
    InvalidAlert,
    RandomWalk,
    Tick,
    TickerService,
    TooManyAlerts,
)
from canopy.nurseries import Supervisor
from canopy.nurseries.fanout import Hub
from tests.fanout_sinks import RecordingSink


def alert(symbol: str, direction: Direction, threshold: float, owner: str = "o") -> Alert:
    return Alert(owner, symbol, direction, threshold)


def test_a_price_fires_the_alerts_it_reaches_each_once() -> None:
    book = AlertBook()
    up1, up2, down = (
        alert("X", Direction.ABOVE, 101),
        alert("X", Direction.ABOVE, 105),
        alert("X", Direction.BELOW, 95),
    )
    other = alert("Y", Direction.ABOVE, 1)
    for a in (up1, up2, down, other):
        book.add(a)
    assert book.fired("X", 100) == []
    assert book.fired("X", 101) == [up1]  # at the threshold counts
    assert book.fired("X", 110) == [up2]  # up1 is gone: once
    assert book.fired("X", 90) == [down]
    assert book.fired("X", 200) == [] and len(book) == 1  # only Y's is left


def test_a_cancelled_alert_never_fires_and_its_entries_do_not_pile_up() -> None:
    book = AlertBook()
    alerts = [alert("X", Direction.ABOVE, 100 + n) for n in range(10)]
    for a in alerts:
        book.add(a)
    for a in alerts[:9]:
        assert book.remove(a.id) is a
    assert len(book._sides[("X", Direction.ABOVE)].heap) <= 5  # rebuilt past half dead
    assert book.fired("X", 1000) == [alerts[9]]


async def test_the_random_walk_keeps_its_rate_and_takes_symbols_in_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    walk = RandomWalk({"A": 10.0, "B": 20.0}, rate=1000, seed=1)
    ticks: list[Tick] = []
    start = trio.current_time()
    async with aclosing(walk.batches()) as batches:
        async for batch in batches:
            ticks.extend(batch)
            if trio.current_time() - start >= 1.0:
                break
    assert len(ticks) == 1000  # 100 batches of 10, on a fixed schedule
    assert [t.symbol for t in ticks[:4]] == ["A", "B", "A", "B"]
    assert [t.seq for t in ticks if t.symbol == "A"] == list(range(1, 501))
    slow = RandomWalk({"A": 10.0}, rate=5)
    assert slow.interval == 0.2  # no wake-ups that would emit nothing


class Script:
    """A price source that plays batches when told to."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self._symbols = list(symbols)
        self.send, self.receive = trio.open_memory_channel[list[Tick]](10)
        self.seq = 0

    def symbols(self) -> Sequence[str]:
        return self._symbols

    async def batches(self) -> AsyncGenerator[list[Tick], None]:
        async for batch in self.receive:
            yield batch

    async def play(self, symbol: str, *prices: float) -> None:
        ticks = []
        for price in prices:
            self.seq += 1
            ticks.append(Tick(symbol, price, self.seq, 0.0))
        await self.send.send(ticks)


@asynccontextmanager
async def ticker(
    tmp_path: Path, source: Script | None = None, **options: int
) -> AsyncIterator[tuple[TickerService, Hub]]:
    hub = Hub(flush_interval=0)
    store = AlertStore(tmp_path / "alerts.db", synchronous="OFF")
    service = TickerService(hub, store, source, **options)
    tree = Supervisor("t")
    tree.add("hub", hub, grace=1)
    tree.add("store", store, grace=1)
    tree.add("ticker", service, grace=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(tree.run)
        yield service, hub
        tree.shutdown()
        await tree.wait_stopped()


async def notified(service: TickerService, count: int) -> None:
    """Until ``count`` notices were published and recorded (the store's thread is real)."""
    with trio.fail_after(5):
        while service.notified < count:  # noqa: ASYNC110 (a counter, no event to wait on)
            await trio.sleep(0.01)
    await trio.sleep(0.05)  # mark_delivered follows the publish


async def test_an_alert_fires_once_is_kept_and_is_delivered_to_its_owner(tmp_path: Path) -> None:
    source = Script(["X"])
    async with ticker(tmp_path, source) as (service, hub):
        inbox = RecordingSink()
        await hub.subscribe("alerts.alice", inbox)
        prices = RecordingSink()
        await hub.subscribe("ticker.X", prices)
        await source.play("X", 100.0)
        await trio.sleep(0.1)
        up = await service.add_alert("alice", "X", 105)  # away from 100: upwards
        down = await service.add_alert("alice", "X", 90)
        assert (up.direction, down.direction) == (Direction.ABOVE, Direction.BELOW)
        await source.play("X", 104.0, 106.0, 107.0)
        await source.play("X", 108.0)
        await notified(service, 1)
        notices = [m.data["alert"] for m in inbox.messages]
        assert [(n["id"], n["trigger_price"]) for n in notices] == [(up.id, 106.0)]
        kept = await service.store.get(up.id)
        assert kept is not None and kept.state is AlertState.TRIGGERED and kept.delivered
        assert [m.data["price"] for m in prices.messages][-1] == 108.0
        assert service.latest["X"].price == 108.0
        with pytest.raises(InvalidAlert):
            await service.add_alert("alice", "NOPE", 1)
        with pytest.raises(InvalidAlert):
            await service.add_alert("alice", "X", -1)

    # Started again on the same store: the down alert is still waiting, the up one is not.
    source = Script(["X"])
    async with ticker(tmp_path, source) as (service, hub):
        inbox = RecordingSink()
        await hub.subscribe("alerts.alice", inbox)
        await source.play("X", 200.0, 80.0)
        await notified(service, 1)
        assert [m.data["alert"]["id"] for m in inbox.messages] == [down.id]


async def test_a_notice_cut_off_before_delivery_is_sent_at_the_next_start(
    tmp_path: Path,
) -> None:
    async with ticker(tmp_path, Script(["X"])) as (service, _):
        fired = await service.add_alert("bob", "X", 50)
        await service.store.trigger([(fired.id, 51.0)])  # then the process died
    async with ticker(tmp_path, Script(["X"])) as (service, hub):
        inbox = RecordingSink()
        await hub.subscribe("alerts.bob", inbox, since=0)  # replays what was published
        await trio.sleep(0.1)
        assert [m.data["alert"]["id"] for m in inbox.messages] == [fired.id]
        kept = await service.store.get(fired.id)
        assert kept is not None and kept.delivered


async def test_a_cancelled_alert_does_not_fire_and_owners_have_a_bound(tmp_path: Path) -> None:
    source = Script(["X"])
    async with ticker(tmp_path, source, max_alerts_per_owner=2) as (service, hub):
        inbox = RecordingSink()
        await hub.subscribe("alerts.carol", inbox)
        first = await service.add_alert("carol", "X", 10, "above")
        second = await service.add_alert("carol", "X", 20, "above")
        with pytest.raises(TooManyAlerts):
            await service.add_alert("carol", "X", 30, "above")
        cancelled = await service.cancel_alert(first)
        assert cancelled is not None and cancelled.state is AlertState.CANCELLED
        # Past the cancelled alert's price, then the other's: only the other fires, and
        # the first price was seen by then (the feed is in order).
        await source.play("X", 15.0, 25.0)
        await notified(service, 1)
        assert [m.data["alert"]["id"] for m in inbox.messages] == [second.id]
        assert (await service.store.get(first.id)).state is AlertState.CANCELLED  # type: ignore[union-attr]


async def test_a_restarted_service_starts_with_a_fresh_book_and_scope(tmp_path: Path) -> None:
    """What a supervisor's restart does: run the same service object again."""
    hub = Hub(flush_interval=0)
    store = AlertStore(tmp_path / "alerts.db", synchronous="OFF")
    source = Script(["X"])
    service = TickerService(hub, store, source)
    async with trio.open_nursery() as outer:
        await outer.start(hub.run)
        await outer.start(store.run)
        for _ in range(2):
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                if not len(service.book):
                    await service.add_alert("dan", "X", 10, "above")
                assert len(service.book) == 1  # reloaded once, not twice
                service.shutdown()
        outer.cancel_scope.cancel()
