"""A failure that repeats is logged when it starts, counted now and then, and ended."""

from __future__ import annotations

import logging

import pytest
import trio

from canopy.nurseries._failures import RepeatingFailure

log = logging.getLogger("test.failures")


async def test_a_repeating_failure_is_three_kinds_of_line(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "test.failures")
    failure = RepeatingFailure(log, "claim failed", interval=5)
    for _ in range(48):  # eight a second for six seconds: the outage
        failure.failed(ConnectionError("redis is away"))
        await trio.sleep(0.125)
    failure.succeeded()
    failure.succeeded()  # working, and nothing to say
    assert [r.getMessage() for r in caplog.records] == [
        "claim failed: redis is away (said again at most every 5 s while it lasts)",
        "claim failed: still failing, 40 more times in 5 s, the last: redis is away",
        "claim failed: works again after 6.0 s and 48 failures",
    ]
    assert not failure.failing
    failure.failed("again")
    assert failure.failing and caplog.records[-1].getMessage().startswith("claim failed: again")
