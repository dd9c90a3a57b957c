"""The wall clock a Trio run stamps jobs with: Unix time, or Trio's clock moved to the epoch.

When a job is due, when its lease expires, when a retry's backoff ends and when a
schedule ticks are Unix times, shared with other processes through the store. Trio's
own clock is a per-run object that a test may replace with a ``MockClock``, which
jumps ahead whenever every task is waiting (``autojump_clock``): a retry backoff of a
minute passes at once. Unix time would not jump with it, and the job would never be
due. :func:`follow_trio_clock` makes this run's wall clock jump too.

A thread is invisible to a ``MockClock``: while SQLite works in one, every task is
waiting, so the clock jumps to the next deadline (a request's, a test's
``fail_after``) and fires it. So a run whose wall clock follows Trio's also runs its
SQLite calls on the Trio thread (:func:`runs_inline`): a test's database is small and
the call short, and then nothing is waiting that the clock cannot see.

Outside such a run, :func:`wall_time` is ``time.time()`` at the cost of one
comparison: production never looks the run up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

__all__ = ["follow_trio_clock", "runs_inline", "wall_time"]

_CLOCK: trio.lowlevel.RunVar[Callable[[], float] | None] = trio.lowlevel.RunVar(
    "canopy.wall_clock", default=None
)
# Runs in this process inside follow_trio_clock: while none, no run needs looking up.
_following = 0


def wall_time() -> float:
    """Seconds since the epoch: ``time.time()``, or this run's clock that follows Trio's."""
    if not _following:
        return time.time()
    try:
        clock = _CLOCK.get()
    except RuntimeError:  # not in a Trio run: a thread of some other run, say
        return time.time()
    return time.time() if clock is None else clock()


def runs_inline() -> bool:
    """Whether this run's blocking calls stay on the Trio thread (see the module)."""
    if not _following:
        return False
    try:
        return _CLOCK.get() is not None
    except RuntimeError:
        return False


@contextmanager
def follow_trio_clock() -> Iterator[None]:
    """For the block, this run's wall clock is Trio's clock plus a fixed offset (Unix
    time at entry), so it jumps when a ``MockClock`` jumps; and SQLite calls run inline.
    Enter it before starting the services that read it."""
    global _following
    offset = time.time() - trio.current_time()
    token = _CLOCK.set(lambda: offset + trio.current_time())
    _following += 1
    try:
        yield
    finally:
        _following -= 1
        _CLOCK.reset(token)
