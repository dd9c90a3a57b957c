"""Restart policy for supervised children: plain functions, testable without a loop.

Erlang/OTP vocabulary, because operators already know it: a *permanent* child is
always restarted, a *transient* one only after it crashed, a *temporary* one never.
The restart *intensity* bounds how often a child may restart before the supervisor
stops trying and fails upward; between restarts the delay grows exponentially.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Backoff", "RestartIntensity", "RestartPolicy"]


class RestartPolicy(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"

    def should_restart(self, *, crashed: bool) -> bool:
        if self is RestartPolicy.PERMANENT:
            return True
        if self is RestartPolicy.TRANSIENT:
            return crashed
        return False


@dataclass(frozen=True)
class Backoff:
    """Exponential delay before the n-th restart inside the intensity window."""

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0

    def delay(self, attempt: int) -> float:
        """Delay before restart number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        return min(self.maximum, self.initial * self.factor ** (attempt - 1))


@dataclass(frozen=True)
class RestartIntensity:
    """At most ``max_restarts`` restarts within any ``window`` seconds."""

    max_restarts: int = 3
    window: float = 5.0

    def recent(self, restart_times: Sequence[float], now: float) -> int:
        return sum(1 for t in restart_times if now - t < self.window)

    def allows(self, restart_times: Sequence[float], now: float) -> bool:
        return self.recent(restart_times, now) < self.max_restarts
