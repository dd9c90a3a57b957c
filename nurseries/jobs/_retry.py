"""When a failed job runs again: exponential backoff with full jitter.

Full jitter (a uniform draw below the exponential bound) spreads the retries of jobs
that failed together, so a recovering dependency is not hit by all of them at once.
It is a few lines over ``random``; the retry libraries (tenacity, stamina) wrap calls
in-process and keep their delay computation internal, while a job's next attempt
must be computed, stored and honoured by whichever worker claims it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base <= 0 or self.factor < 1 or self.cap < self.base:
            raise ValueError("need base > 0, factor >= 1 and cap >= base")

    def retryable(self, attempts: int) -> bool:
        """Whether a job that has now failed ``attempts`` times runs again."""
        return attempts < self.max_attempts

    def bound(self, attempts: int) -> float:
        """The largest delay after the ``attempts``-th failure (1-based)."""
        if attempts < 1:
            raise ValueError("attempts is 1-based")
        return min(self.cap, self.base * self.factor ** (attempts - 1))

    def next_retry_delay(self, attempts: int, rng: random.Random | None = None) -> float:
        bound = self.bound(attempts)
        if not self.jitter:
            return bound
        return (rng or random).uniform(0, bound)
