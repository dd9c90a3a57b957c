"""Which alerts a price fires: a plain structure, no I/O, O(log n) per fired alert.

Per symbol, alerts waiting for a rise are in a min-heap by threshold (a price fires
every threshold at or below it, smallest first) and alerts waiting for a fall in a
max-heap. A tick costs one comparison with each heap's top when nothing fires.
A cancelled alert's entry stays in its heap until it reaches the top, or until the
dead entries are half the heap, when the heap is rebuilt without them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ._model import Alert, Direction

__all__ = ["AlertBook"]


@dataclass
class _Side:
    heap: list[tuple[float, str]] = field(default_factory=list)  # (key, alert id)
    dead: int = 0  # entries of alerts removed from the book


class AlertBook:
    def __init__(self) -> None:
        self._sides: dict[tuple[str, Direction], _Side] = {}
        self._alerts: dict[str, Alert] = {}

    def __len__(self) -> int:
        return len(self._alerts)

    def add(self, alert: Alert) -> None:
        self._alerts[alert.id] = alert
        side = self._sides.setdefault((alert.symbol, alert.direction), _Side())
        heapq.heappush(side.heap, (_key(alert.direction, alert.threshold), alert.id))

    def remove(self, alert_id: str) -> Alert | None:
        alert = self._alerts.pop(alert_id, None)
        if alert is not None:
            side = self._sides[(alert.symbol, alert.direction)]
            side.dead += 1
            if side.dead * 2 > len(side.heap):
                side.heap = [entry for entry in side.heap if entry[1] in self._alerts]
                heapq.heapify(side.heap)
                side.dead = 0
        return alert

    def fired(self, symbol: str, price: float) -> list[Alert]:
        """The alerts ``price`` fires, each once: they leave the book."""
        found: list[Alert] = []
        for direction in Direction:
            side = self._sides.get((symbol, direction))
            if side is not None:
                self._pop(side, _key(direction, price), found)
        return found

    def _pop(self, side: _Side, reached: float, found: list[Alert]) -> None:
        heap = side.heap
        while heap and heap[0][0] <= reached:
            _, alert_id = heapq.heappop(heap)
            alert = self._alerts.pop(alert_id, None)
            if alert is None:
                side.dead = max(0, side.dead - 1)  # a cancelled one's entry
            else:
                found.append(alert)


def _key(direction: Direction, value: float) -> float:
    """Heap order: rises fire the smallest thresholds first, falls the largest."""
    return value if direction is Direction.ABOVE else -value
