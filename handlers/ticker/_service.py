"""Trading notifications as a pure-Trio service: a price feed fanned out, and alerts.

Shape (a supervised service, started after the hub and its store)::

    TickerService.run           nursery
      feed                      source batches -> hub (ticker.{symbol}, key = symbol)
                                               -> book.fired() -> alerts channel
      notifier                  alerts channel -> store.trigger -> hub (alerts.{owner})
                                               -> store.mark_delivered

Subscribers of ``ticker.*`` use the ``latest`` policy (the default rule): a slow
one gets the newest price per symbol, never a backlog. The feed never waits on a
subscriber, and waits on the notifier only when 64 batches of fired alerts are
already queued.

An alert fires once: the book drops it as it fires, and the store triggers it only
if it is still active. Its notice is published after the trigger is committed and
marked delivered after that; a notice cut off by a crash is published again at the
next start (it carries the alert's id, so a client can tell a repeat). On
``shutdown()`` the feed stops and the notifier finishes what was fired.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from typing import Any

import trio

from canopy.nurseries import RepeatingFailure
from canopy.nurseries.fanout import Hub, HubError

from ._book import AlertBook
from ._model import Alert, Direction, InvalidAlert, Tick, alerts_topic, check_threshold, tick_topic
from ._source import PriceSource
from ._store import AlertStore

__all__ = ["TickerService", "TooManyAlerts"]

log = logging.getLogger("canopy.ticker")

Fired = list[tuple[Alert, float]]


class TooManyAlerts(Exception):
    pass


class TickerService:
    def __init__(
        self,
        hub: Hub,
        store: AlertStore,
        source: PriceSource | None,
        *,
        max_alerts_per_owner: int = 100,
        max_alerts: int = 100_000,
    ) -> None:
        self.hub = hub
        self.store = store
        self.source = source
        self.max_alerts_per_owner = max_alerts_per_owner
        self.max_alerts = max_alerts
        self.latest: dict[str, Tick] = {}
        self.book = AlertBook()
        self.published = 0  # ticks
        self._publish_failures = RepeatingFailure(log, "ticks not published")
        self.notified = 0  # alert notices
        self._stop = trio.CancelScope()

    def symbols(self) -> list[str]:
        return list(self.source.symbols()) if self.source is not None else sorted(self.latest)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Fresh each run: a supervisor may restart us, and a scope is entered once.
        self._stop = trio.CancelScope()
        self.book = AlertBook()
        for alert in await self.store.active():
            self.book.add(alert)
        send, receive = trio.open_memory_channel[Fired](64)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._notifier, receive)
            await self._notify(await self.store.undelivered())
            nursery.start_soon(self._feed, send)
            task_status.started()

    def shutdown(self) -> None:
        """Stop the feed; the notifier then finishes what was fired, and run returns."""
        self._stop.cancel()

    # -- alerts ----------------------------------------------------------------------

    async def add_alert(
        self, owner: str, symbol: str, price: Any, direction: str | None = None
    ) -> Alert:
        """Notify ``owner`` when ``symbol`` crosses ``price``: upwards or downwards as
        ``direction`` says, or else away from where the price is now."""
        if symbol not in self.symbols():
            raise InvalidAlert("symbol", f"one of {', '.join(self.symbols())}")
        threshold = check_threshold(price)
        if direction is None:
            now = self.latest.get(symbol)
            chosen = Direction.ABOVE if now is None or now.price < threshold else Direction.BELOW
        else:
            try:
                chosen = Direction(direction)
            except ValueError:
                raise InvalidAlert("direction", "above or below") from None
        if len(self.book) >= self.max_alerts:
            raise TooManyAlerts(f"at most {self.max_alerts} active alerts in all")
        if await self.store.count_active(owner) >= self.max_alerts_per_owner:
            raise TooManyAlerts(f"at most {self.max_alerts_per_owner} active alerts each")
        alert = Alert(owner, symbol, chosen, threshold)
        await self.store.add(alert)  # committed before it can fire
        self.book.add(alert)
        return alert

    async def cancel_alert(self, alert: Alert) -> Alert | None:
        cancelled = await self.store.cancel(alert.id)
        if cancelled is not None:
            self.book.remove(alert.id)
        return cancelled

    async def _notifier(self, receive: trio.MemoryReceiveChannel[Fired]) -> None:
        async with receive:
            async for fired in receive:
                triggered = await self.store.trigger([(a.id, price) for a, price in fired])
                await self._notify(triggered)

    async def _notify(self, alerts: list[Alert]) -> None:
        delivered = []
        for alert in alerts:
            try:
                await self.hub.publish(
                    alerts_topic(alert.owner), {"kind": "alert", "alert": alert.to_dict()}
                )
            except HubError as exc:  # kept undelivered: published again at the next start
                log.warning("alert %s not published: %s", alert.id, exc)
                continue
            delivered.append(alert.id)
            self.notified += 1
        if delivered:
            await self.store.mark_delivered(delivered)

    # -- the feed --------------------------------------------------------------------

    async def _feed(self, send: trio.MemorySendChannel[Fired]) -> None:
        async with send:  # closed when the feed ends: the notifier then drains and ends
            with self._stop:
                if self.source is None:  # no prices, no alerts fire; still serving
                    await trio.sleep_forever()
                async with aclosing(self.source.batches()) as batches:
                    async for batch in batches:
                        await self._publish(batch)
                        fired = self._fired(batch)
                        if fired:
                            await send.send(fired)

    def _fired(self, batch: list[Tick]) -> Fired:
        return [(alert, t.price) for t in batch for alert in self.book.fired(t.symbol, t.price)]

    async def _publish(self, batch: list[Tick]) -> None:
        for tick in batch:
            self.latest[tick.symbol] = tick
        try:
            await self.hub.publish_many(
                [(tick_topic(t.symbol), t.to_dict(), t.symbol) for t in batch]
            )
        except HubError as exc:  # a market feed moves on: the next tick supersedes this one
            self._publish_failures.failed(exc)
            return
        self._publish_failures.succeeded()
        self.published += len(batch)
