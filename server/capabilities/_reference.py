"""Canopy's reference services as capabilities an app includes: the demo, orders,
support chat and the ticker. Each is a pure-Trio service from ``canopy.handlers``
with its store, put in the tree after the hub and the job store it uses (so stopped
before them), its settings a section of its own, and its blueprint over it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canopy.handlers import demo as demo_pages
from canopy.handlers import orders as orders_pages
from canopy.handlers import support as support_pages
from canopy.handlers import tasks as demo_tasks
from canopy.handlers import ticker as ticker_pages
from canopy.handlers.orders import OrdersService, OrderStore, SimulatedGateway
from canopy.handlers.support import SupportService, SupportStore
from canopy.handlers.ticker import AlertStore, RandomWalk, TickerService
from canopy.nurseries.fanout import check_topic

from ..app._application import App, Capability
from ..app._capability import Assembly
from ..config._settings import _fraction, _non_negative_float, _positive_float, setting

__all__ = ["demo", "orders", "support", "ticker"]


class Demo(Capability):
    """``/demo/*`` (deadlines, sub-calls, a topics page), the tasks ``demo.echo``,
    ``demo.sleep`` and ``demo.fail``, and ``demo.*`` topics open to anyone."""

    name = "demo"

    def declare(self, app: App) -> None:
        app.topics("demo.*", publish="anyone", subscribe="anyone")

    def install(self, assembly: Assembly) -> None:
        demo_tasks.register_examples(assembly.registry)
        issuer = assembly.topics.issuer if assembly.topics is not None else None
        assembly.add_blueprint(demo_pages.create_blueprint(demo_pages.DemoService(), issuer))


@dataclass(frozen=True)
class OrdersSettings:
    payment_latency: float = setting(
        0.0, _non_negative_float, "seconds the simulated payment gateway takes per charge"
    )
    payment_failure_rate: float = setting(
        0.0, _fraction, "share of simulated charges that fail transiently (retried)"
    )
    payment_decline_rate: float = setting(
        0.0, _fraction, "share of simulated charges declined (the order fails, stock released)"
    )
    retention: float = setting(
        0.0,
        _non_negative_float,
        "seconds an order that ended (confirmed or failed) is kept, with its reservations, "
        "charges and idempotency key (0: for ever; orders are business records)",
    )


class Orders(Capability):
    """``POST /orders``: a reserve/charge/confirm pipeline of jobs with compensation,
    against a simulated payment gateway; events on ``orders.{id}``."""

    name = "orders"
    settings = OrdersSettings

    def declare(self, app: App) -> None:
        # A topic per order, opened on demand (see install); once opened, kept as long
        # as a client may take to reconnect, not the whole default window (GET
        # /orders/{id} has the state after that). The customers' feeds keep the default.
        app.topics("orders.*", history_ttl=60.0)

    def install(self, assembly: Assembly) -> None:
        own: OrdersSettings = assembly.section(self)
        settings = assembly.settings
        store = OrderStore(
            settings.data_path / "orders.db",
            synchronous=settings.sqlite_synchronous,
            retention=own.retention or None,
        )
        assembly.add_service("order_store", store)
        gateway = SimulatedGateway(
            latency=own.payment_latency,
            failure_rate=own.payment_failure_rate,
            decline_rate=own.payment_decline_rate,
        )
        service = OrdersService(
            store, gateway, publish=assembly.publisher(), enqueue=assembly.jobs.enqueue_task
        )
        service.register_tasks(assembly.registry)
        if assembly.topics is not None:
            assembly.topics.hub.on_demand("orders.*", service.topic_state, service.topic_version)
        issuer = assembly.topics.issuer if assembly.topics is not None else None
        assembly.add_blueprint(orders_pages.create_blueprint(service, issuer))


@dataclass(frozen=True)
class SupportSettings:
    reassign_after: float = setting(
        15.0,
        _positive_float,
        "seconds a support agent may be disconnected before their conversations are "
        "given to other agents",
    )


class Support(Capability):
    """Support chat: conversations assigned to the least-loaded agent, transcripts
    kept before they are published on ``support.{id}``; token-guarded."""

    name = "support"
    settings = SupportSettings

    def declare(self, app: App) -> None:
        # A conversation resumes after a long absence; a typing indicator matters
        # only while it is fresh, and only the newest per participant.
        app.topics("support.*", policy="disconnect", history=1000, history_ttl=3600.0)
        app.topics("typing.*", policy="latest", history=1, history_ttl=30.0)

    def install(self, assembly: Assembly) -> None:
        if not assembly.serving or assembly.topics is None:
            return
        own: SupportSettings = assembly.section(self)
        settings = assembly.settings
        store = SupportStore(
            settings.data_path / "support.db", synchronous=settings.sqlite_synchronous
        )
        assembly.add_service("support_store", store)
        topics = assembly.topics
        service = SupportService(
            store, topics.hub, topics.issuer, reassign_after=own.reassign_after
        )
        assembly.add_service("support", service)
        assembly.add_blueprint(support_pages.create_blueprint(service))


def _symbols(value: Any) -> tuple[tuple[str, float], ...]:
    """``SYMBOL=START_PRICE,...`` (each symbol a topic segment: ``ticker.{symbol}``)."""
    if isinstance(value, tuple):
        return value
    items = value.split(",") if isinstance(value, str) else value
    symbols = []
    for item in items:
        name, _, price = str(item).strip().partition("=")
        bad = ValueError(f"must be SYMBOL=START_PRICE,... (bad: {item!r})")
        try:
            check_topic(f"ticker.{name}")  # one segment of letters, digits and _-:@
            start = float(price)
        except ValueError:  # InvalidTopic is one
            raise bad from None
        if "." in name or not 0 < start < float("inf"):
            raise bad
        symbols.append((name, start))
    if not symbols:
        raise ValueError("must name at least one SYMBOL=START_PRICE")
    return tuple(symbols)


@dataclass(frozen=True)
class TickerSettings:
    symbols: tuple[tuple[str, float], ...] = setting(
        (("BTC-USD", 60000.0), ("ETH-USD", 3000.0), ("AAPL", 190.0), ("MSFT", 420.0),
         ("EUR-USD", 1.08)),
        _symbols,
        "the simulated market feed's symbols and starting prices, SYMBOL=PRICE,...",
    )  # fmt: skip
    rate: float = setting(
        50.0,
        _non_negative_float,
        "price updates per second in all from the simulated feed (0: no feed)",
    )


class Ticker(Capability):
    """A price feed (a simulated random walk) on ``ticker.{symbol}``, open to anyone
    and conflated for slow subscribers, and alerts delivered on ``alerts.{owner}``."""

    name = "ticker"
    settings = TickerSettings

    def declare(self, app: App) -> None:
        app.topics("ticker.*", policy="latest", subscribe="anyone")

    def install(self, assembly: Assembly) -> None:
        if not assembly.serving or assembly.topics is None:
            return
        own: TickerSettings = assembly.section(self)
        settings = assembly.settings
        store = AlertStore(
            settings.data_path / "alerts.db", synchronous=settings.sqlite_synchronous
        )
        assembly.add_service("alert_store", store)
        source = RandomWalk(dict(own.symbols), own.rate) if own.rate > 0 else None
        service = TickerService(assembly.topics.hub, store, source)
        assembly.add_service("ticker", service)
        assembly.add_blueprint(ticker_pages.create_blueprint(service, assembly.topics.issuer))


demo = Demo()
orders = Orders()
support = Support()
ticker = Ticker()
