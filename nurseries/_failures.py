"""Logging a failure that repeats: once when it starts, a count now and then, once when
it ends.

While Redis is away, every tick of every loop that uses it fails: the runner's claims,
the ticker's publishes, the job events. Logged each time, that was about 240 warnings
in 6 seconds, burying the one line that said why. A :class:`RepeatingFailure` says
when the failure starts (with its cause), then at most once every ``interval``
seconds how many times it happened since, and once when the thing works again.
"""

from __future__ import annotations

import logging

import trio

__all__ = ["RepeatingFailure"]


class RepeatingFailure:
    """One kind of failure of one loop, logged to ``log`` as ``what``."""

    def __init__(self, log: logging.Logger, what: str, *, interval: float = 10.0) -> None:
        self.log = log
        self.what = what
        self.interval = interval
        self._started: float | None = None  # when it began failing, if it is failing
        self._said = 0.0  # when the last line about it was logged
        self._since_said = 0  # failures since then
        self._total = 0

    @property
    def failing(self) -> bool:
        return self._started is not None

    def failed(self, cause: BaseException | str) -> None:
        now = trio.current_time()
        self._total += 1
        if self._started is None:
            self._started = self._said = now
            self._since_said = 0
            self.log.warning(
                "%s: %s (said again at most every %g s while it lasts)",
                self.what,
                cause,
                self.interval,
            )
            return
        self._since_said += 1
        if now - self._said >= self.interval:
            self.log.warning(
                "%s: still failing, %d more times in %.0f s, the last: %s",
                self.what,
                self._since_said,
                now - self._said,
                cause,
            )
            self._said = now
            self._since_said = 0

    def succeeded(self) -> None:
        if self._started is None:
            return
        self.log.warning(
            "%s: works again after %.1f s and %d failures",
            self.what,
            trio.current_time() - self._started,
            self._total,
        )
        self._started = None
        self._total = 0
