"""Sub-call helpers and load shedding, on a virtual clock."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio

from canopy.nurseries import InflightLimit, Overloaded, first_completed, gather


async def value_after(delay: float, value: Any, log: list[str] | None = None) -> Any:
    try:
        await trio.sleep(delay)
    except trio.Cancelled:
        if log is not None:
            log.append(f"cancelled:{value}")
        raise
    return value


async def fail_after_delay(delay: float, message: str) -> None:
    await trio.sleep(delay)
    raise ValueError(message)


async def test_gather_returns_results_in_call_order(autojump_clock: Any) -> None:
    start = trio.current_time()
    results = await gather(partial(value_after, 3, "a"), partial(value_after, 1, "b"))
    assert results == ["a", "b"]
    assert trio.current_time() - start == pytest.approx(3)


async def test_gather_first_failure_cancels_siblings(autojump_clock: Any) -> None:
    log: list[str] = []
    start = trio.current_time()
    with pytest.raises(ValueError, match="boom"):
        await gather(
            partial(value_after, 10, "slow", log),
            partial(fail_after_delay, 2, "boom"),
        )
    assert trio.current_time() - start == pytest.approx(2)
    assert log == ["cancelled:slow"]


async def test_first_completed_returns_winner_and_cancels_losers(autojump_clock: Any) -> None:
    log: list[str] = []
    start = trio.current_time()
    winner = await first_completed(
        partial(value_after, 5, "primary", log), partial(value_after, 1, "backup", log)
    )
    assert winner == "backup"
    assert log == ["cancelled:primary"]
    assert trio.current_time() - start == pytest.approx(1)


async def test_first_completed_tolerates_failures_until_all_fail(autojump_clock: Any) -> None:
    assert (
        await first_completed(partial(fail_after_delay, 1, "a"), partial(value_after, 2, "ok"))
        == "ok"
    )
    with pytest.RaisesGroup(
        pytest.RaisesExc(ValueError, match="a"), pytest.RaisesExc(ValueError, match="b")
    ):
        await first_completed(partial(fail_after_delay, 1, "a"), partial(fail_after_delay, 2, "b"))


async def test_first_completed_stagger_only_starts_backup_when_primary_is_slow(
    autojump_clock: Any,
) -> None:
    started: list[float] = []

    async def replica(delay: float, name: str) -> str:
        started.append(trio.current_time())
        await trio.sleep(delay)
        return name

    t0 = trio.current_time()
    assert (
        await first_completed(
            partial(replica, 0.1, "fast"), partial(replica, 0.1, "backup"), stagger=0.5
        )
        == "fast"
    )
    assert [t - t0 for t in started] == [0.0]  # the backup never started
    t0 = trio.current_time()
    started.clear()
    assert (
        await first_completed(
            partial(replica, 5, "slow"), partial(replica, 0.1, "backup"), stagger=0.5
        )
        == "backup"
    )
    assert [round(t - t0, 6) for t in started] == [0.0, 0.5]


def test_inflight_limit_sheds_instead_of_queueing() -> None:
    limit = InflightLimit(2, retry_after=3)
    with limit, limit:
        assert limit.inflight == 2
        with pytest.raises(Overloaded) as info, limit:
            pass
        assert info.value.retry_after == 3
        assert limit.inflight == 2  # a refused entry holds nothing
    assert limit.inflight == 0
    with pytest.raises(KeyError), limit:
        raise KeyError("released on error too")
    assert limit.inflight == 0
    with pytest.raises(ValueError):
        InflightLimit(0)
