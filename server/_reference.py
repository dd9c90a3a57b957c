"""Putting the reference services in the supervision tree: support chat and the ticker.

Each after the hub (they publish there and watch presence there) and after its own
store; so each is stopped before its store, and both before the hub.
"""

from __future__ import annotations

from canopy.handlers.support import SupportService, SupportStore
from canopy.handlers.ticker import AlertStore, RandomWalk, TickerService
from canopy.handlers.topics import TopicsService
from canopy.nurseries import Supervisor

from ._settings import Settings

__all__ = ["add_support", "add_ticker"]


def add_support(services: Supervisor, settings: Settings, topics: TopicsService) -> SupportService:
    store = SupportStore(settings.data_path / "support.db", synchronous=settings.sqlite_synchronous)
    services.add("support_store", store, grace=settings.service_grace)
    service = SupportService(
        store, topics.hub, topics.issuer, reassign_after=settings.support_reassign_after
    )
    services.add("support", service, grace=settings.service_grace)
    return service


def add_ticker(services: Supervisor, settings: Settings, topics: TopicsService) -> TickerService:
    """The simulated feed at ``CANOPY_TICKER_RATE`` (none at 0: the service then only
    keeps alerts, which no price fires)."""
    store = AlertStore(settings.data_path / "alerts.db", synchronous=settings.sqlite_synchronous)
    services.add("alert_store", store, grace=settings.service_grace)
    source = None
    if settings.ticker_rate > 0:
        source = RandomWalk(dict(settings.ticker_symbols), settings.ticker_rate)
    service = TickerService(topics.hub, store, source)
    services.add("ticker", service, grace=settings.service_grace)
    return service
