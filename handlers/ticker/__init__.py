"""Trading notifications: a pure-Trio service (:class:`TickerService`, usable from any
``trio.run`` program with a hub) and a thin Quart blueprint over it.

A price source (:class:`PriceSource`; :class:`RandomWalk` simulates one) feeds
``ticker.{symbol}``, whose subscribers get the newest price per symbol however slow
they are (the ``latest`` policy). Alerts ("tell me when X crosses Y") are kept in
SQLite, evaluated on every tick in the service's nursery, fired once and delivered
on ``alerts.{owner}``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from ._book import AlertBook
from ._model import Alert, AlertState, Direction, InvalidAlert, Tick, alerts_topic, tick_topic
from ._service import TickerService, TooManyAlerts
from ._source import PriceSource, RandomWalk
from ._store import AlertStore, AlertStoreError

if TYPE_CHECKING:  # create_blueprint imports Quart: only when asked for
    from ._blueprint import create_blueprint

__all__ = [
    "Alert",
    "AlertBook",
    "AlertState",
    "AlertStore",
    "AlertStoreError",
    "Direction",
    "InvalidAlert",
    "PriceSource",
    "RandomWalk",
    "Tick",
    "TickerService",
    "TooManyAlerts",
    "alerts_topic",
    "create_blueprint",
    "tick_topic",
]

__getattr__, __dir__ = lazy_attributes(__name__, {"create_blueprint": "._blueprint"})
