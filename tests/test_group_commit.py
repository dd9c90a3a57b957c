"""Group commit: concurrent writes share a transaction, and no caller is left waiting."""

from __future__ import annotations

import pytest
import trio

from nurseries import GroupCommit
from nurseries.jobs import JobStoreError


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
