"""Market data and alerts as data: a tick, an alert and its lifecycle, and input checks.

An alert is ``active`` until the first tick at or past its threshold in its
direction; it is then ``triggered`` (with the price and time that did it), exactly
once, and its delivery is recorded (``delivered``) after it was published. An owner
may ``cancel`` an active one.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Any

from canopy.nurseries import random_hex

from .._invalid import InvalidInput

__all__ = ["Alert", "AlertState", "Direction", "InvalidAlert", "Tick", "alerts_topic", "tick_topic"]


class InvalidAlert(InvalidInput):
    """An alert field that is refused."""


class Direction(enum.StrEnum):
    ABOVE = "above"  # fires at the first price >= threshold
    BELOW = "below"  # fires at the first price <= threshold


class AlertState(enum.StrEnum):
    ACTIVE = "active"
    TRIGGERED = "triggered"
    CANCELLED = "cancelled"


def tick_topic(symbol: str) -> str:
    return f"ticker.{symbol}"


def alerts_topic(owner: str) -> str:
    """Where an owner's triggered alerts are delivered (with history, for a reconnect)."""
    return f"alerts.{owner}"


@dataclass(frozen=True)
class Tick:
    symbol: str
    price: float
    seq: int  # per symbol: 1, 2, 3, ...
    at: float  # wall-clock seconds

    def to_dict(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "price": self.price, "seq": self.seq, "at": self.at}


@dataclass
class Alert:
    owner: str
    symbol: str
    direction: Direction
    threshold: float
    id: str = field(default_factory=lambda: f"a-{random_hex(8)}")
    state: AlertState = AlertState.ACTIVE
    created_at: float = field(default_factory=time.time)
    triggered_at: float | None = None
    trigger_price: float | None = None
    delivered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "owner": self.owner,
            "symbol": self.symbol,
            "direction": self.direction.value,
            "threshold": self.threshold,
            "state": self.state.value,
            "created_at": self.created_at,
            "triggered_at": self.triggered_at,
            "trigger_price": self.trigger_price,
            "topic": alerts_topic(self.owner),
        }


def check_threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidAlert("price", "a finite number")
    if value <= 0:
        raise InvalidAlert("price", "greater than 0")
    return float(value)
