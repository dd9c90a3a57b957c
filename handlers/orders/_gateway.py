"""The payment gateway: an interface, and the simulated one Canopy ships.

A real gateway (Stripe, Adyen, ...) takes an idempotency key with each charge and
answers a repeat with the original charge; the pipeline relies on that, and on its
own charges table, for a charge's exactly-once effect.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Protocol

import trio

from canopy.nurseries import random_hex

__all__ = ["GatewayUnavailable", "PaymentDeclined", "PaymentGateway", "SimulatedGateway"]


class PaymentDeclined(Exception):
    """A final answer: retrying will not help (the order fails, its stock is released)."""


class GatewayUnavailable(Exception):
    """A transient failure: the charge may be retried (with the same idempotency key)."""


class PaymentGateway(Protocol):
    async def charge(self, amount: int, currency: str, idempotency_key: str) -> str:
        """Charge ``amount`` minor units; the charge's reference. A repeated key gets
        the first charge's reference back and charges nothing more."""
        ...


class SimulatedGateway:
    """Latency and failures on demand, so the pipeline's failure handling can be seen:
    ``failure_rate`` of calls raise GatewayUnavailable, ``decline_rate`` of new charges
    are declined. It keeps what it charged, to check the exactly-once effect.

    A real gateway remembers an idempotency key for a day or so; this one for
    ``remember`` seconds, longer than any retry of a charge step (five attempts of at
    most a minute each), so that a server running for weeks does not keep every
    charge it ever made."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        failure_rate: float = 0.0,
        decline_rate: float = 0.0,
        seed: int | None = None,
        remember: float = 600.0,
    ) -> None:
        self.latency = latency
        self.failure_rate = failure_rate
        self.decline_rate = decline_rate
        self._random = random.Random(seed)
        self.remember = remember
        self.charged: dict[str, tuple[int, str, str]] = {}  # key -> amount, currency, ref
        self._charged_at: deque[tuple[float, str]] = deque()  # oldest first
        self.calls = 0

    async def charge(self, amount: int, currency: str, idempotency_key: str) -> str:
        self.calls += 1
        await trio.sleep(self.latency)
        if self._random.random() < self.failure_rate:
            raise GatewayUnavailable("the simulated gateway timed out")
        if idempotency_key in self.charged:
            return self.charged[idempotency_key][2]
        if self._random.random() < self.decline_rate:
            raise PaymentDeclined("card declined (simulated)")
        reference = f"ch_{random_hex(8)}"
        now = trio.current_time()
        self.charged[idempotency_key] = (amount, currency, reference)
        self._charged_at.append((now, idempotency_key))
        while self._charged_at[0][0] < now - self.remember:
            self.charged.pop(self._charged_at.popleft()[1], None)
        return reference
