"""Group commit: concurrent writes share a transaction, and no caller is left waiting."""

from __future__ import annotations

import pytest
import trio

from canopy.nurseries import GroupCommit
from canopy.nurseries.jobs import JobStoreError


def slow_commit(batch_size: int) -> tuple[GroupCommit[int, int], list[list[int]]]:
    """A committer whose every write takes 1 s, and the batches it has written."""
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[int | Exception]:
        await trio.sleep(1)
        writes.append(items)
        return list(items)

    return GroupCommit[int, int]("item", write, batch_size, error=JobStoreError), writes


async def test_concurrent_submits_share_one_write() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[int | Exception]:
        writes.append(items)
        return [item * 2 for item in items]

    commit = GroupCommit[int, int]("item", write, batch_size=100, error=JobStoreError)
    results: dict[int, int] = {}

    async def submit(item: int) -> None:
        results[item] = await commit.submit(item)

    async with trio.open_nursery() as nursery:
        await nursery.start(commit.run)
        async with trio.open_nursery() as callers:
            for item in range(50):
                callers.start_soon(submit, item)
        nursery.cancel_scope.cancel()
    assert results == {item: item * 2 for item in range(50)}
    assert len(writes) < 5


async def test_a_write_that_crashes_fails_its_callers_instead_of_leaving_them_waiting() -> None:
    async def write(items: list[int]) -> list[int | Exception]:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("disk on fire")

    commit = GroupCommit[int, int]("item", write, batch_size=100, error=JobStoreError)
    refused: list[JobStoreError] = []

    async def submit(item: int) -> None:
        try:
            await commit.submit(item)
        except JobStoreError as exc:
            refused.append(exc)

    with trio.fail_after(5), pytest.RaisesGroup(RuntimeError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(commit.run)
            for item in range(3):
                nursery.start_soon(submit, item)
    assert len(refused) == 3
    with pytest.raises(JobStoreError, match="not running"):
        await commit.submit(4)


async def test_callers_beyond_the_bound_wait_for_room_and_are_refused_when_it_stops(
    autojump_clock: trio.abc.Clock,
) -> None:
    """batch_size 1 holds at most 4 queued items: the rest wait and get in as batches
    leave; those still waiting when the committer stops fail at once."""
    commit, writes = slow_commit(batch_size=1)
    done: list[int] = []
    refused: list[str] = []

    async def submit(item: int) -> None:
        try:
            done.append(await commit.submit(item))
        except JobStoreError as exc:
            refused.append(str(exc))

    async with trio.open_nursery() as callers:
        async with trio.open_nursery() as store:
            await store.start(commit.run)
            for item in range(12):
                callers.start_soon(submit, item)
                await trio.lowlevel.checkpoint()
            # At 0.5 s: one batch writing, four queued, seven waiting. Each batch written
            # lets one waiting caller in.
            await trio.sleep(3.5)
            assert done == [0, 1, 2]
            store.cancel_scope.cancel()  # the committer stops mid-write
    assert writes == [[0], [1], [2]]
    # Item 3 was being written (its caller is told the store failed), 4-7 were queued
    # (not committed), 8-11 were still waiting for room (not accepted).
    assert refused.count("the store failed while writing this item") == 1
    assert refused.count("the store stopped before committing this item") == 4
    assert refused.count("the store stopped before accepting this item") == 4


async def test_a_queued_caller_can_be_cancelled_and_its_item_is_never_written(
    autojump_clock: trio.abc.Clock,
) -> None:
    commit, writes = slow_commit(batch_size=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(commit.run)
        nursery.start_soon(commit.submit, 1)
        await trio.sleep(0.1)  # 1 is taken, and its write takes 1 s
        with trio.move_on_after(0.5) as queued:
            await commit.submit(2)  # queued behind it, and cancelled there
        assert queued.cancelled_caught
        assert trio.current_time() == 0.6  # at once, not when the batch ended
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert writes == [[1]]


async def test_a_taken_caller_gets_its_outcome_and_the_cancellation_after_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    """As trio.to_thread: once its batch has taken it, an item is written, and its
    caller hears the outcome (a claim's leased jobs are not lost to a cancel)."""

    commit, _ = slow_commit(batch_size=10)
    heard: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(commit.run)
        with trio.move_on_after(0.5) as taken:
            heard.append(await commit.submit(7))
            await trio.lowlevel.checkpoint()  # where the cancellation arrives
            heard.append(-1)  # never reached
        assert taken.cancelled_caught
        assert heard == [7]
        assert trio.current_time() == 1  # waited for the batch
        nursery.cancel_scope.cancel()
