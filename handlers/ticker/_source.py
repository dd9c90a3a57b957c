"""Where prices come from: an interface a real feed implements, and a simulated one.

A source is an async iterator of batches of ticks: a feed that delivers in bursts
(a network read, a multicast packet) hands over each burst, and the service
publishes it in one go.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Protocol

import trio

from ._model import Tick

__all__ = ["PriceSource", "RandomWalk"]


class PriceSource(Protocol):
    def symbols(self) -> Sequence[str]: ...

    def batches(self) -> AsyncGenerator[list[Tick], None]:
        """Ticks as they arrive, in bursts; ends when the feed does (an async
        generator, so that the service can close it when it stops)."""
        ...


class RandomWalk:
    """``rate`` updates per second in all, spread over ``symbols`` in turn, each a
    geometric random walk step (``volatility`` per update). Paced against a fixed
    schedule (every ``interval``), so a slow loop catches up instead of drifting."""

    def __init__(
        self,
        start: Mapping[str, float],
        rate: float,
        *,
        volatility: float = 0.0005,
        interval: float = 0.01,
        seed: int | None = None,
    ) -> None:
        if rate <= 0 or not start:
            raise ValueError("a random walk needs symbols and a rate > 0")
        self.prices = dict(start)
        self.rate = rate
        self.volatility = volatility
        self.interval = max(interval, 1.0 / rate)  # no wake-ups that emit nothing
        self._random = random.Random(seed)
        self._seq = dict.fromkeys(start, 0)
        self._order = list(start)

    def symbols(self) -> Sequence[str]:
        return self._order

    async def batches(self) -> AsyncGenerator[list[Tick], None]:
        due = 0.0  # updates owed, carried across intervals
        turn = 0
        next_at = trio.current_time()
        while True:
            next_at += self.interval
            await trio.sleep_until(next_at)
            due += self.rate * self.interval
            count, due = int(due), due - int(due)
            now = time.time()
            batch = []
            for _ in range(count):
                symbol = self._order[turn % len(self._order)]
                turn += 1
                batch.append(self._step(symbol, now))
            if batch:
                yield batch

    def _step(self, symbol: str, now: float) -> Tick:
        price = self.prices[symbol] * math.exp(self._random.gauss(0.0, self.volatility))
        self.prices[symbol] = price
        self._seq[symbol] += 1
        return Tick(symbol, round(price, 4), self._seq[symbol], now)
