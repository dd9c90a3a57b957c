"""The collector on a clock: young collections every second and the middle generation
every ten, so none walks minutes of survivors; what outlives them is frozen, and a
full collection comes only once the heap has grown by half."""

from __future__ import annotations

import gc
import platform
import sys
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from canopy.server import Settings
from canopy.server.app._capability import Mode
from canopy.server.app._process import CollectorPacer, _malloc_trim
from canopy.showcase import create_app


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection while the test runs, with the allocation
    trigger out of reach so that only the pacer collects."""
    seen: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            seen.append(info["generation"])

    thresholds = gc.get_threshold()
    frozen = gc.get_freeze_count()
    gc.set_threshold(10**9, 10**9, 10**9)
    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*thresholds)
        if not frozen:
            gc.unfreeze()


@asynccontextmanager
async def pacing(pacer: CollectorPacer) -> AsyncIterator[None]:
    """``pacer`` running for the block, stopped after it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(pacer.run)
        yield
        nursery.cancel_scope.cancel()


async def test_young_every_second_middle_every_ten(
    autojump_clock: trio.testing.MockClock, collections: list[int]
) -> None:
    async with pacing(CollectorPacer(young=1.0, middle=10.0, growth=1e6)):
        await trio.sleep(40.5)
    assert len(collections) == 40
    middles = [n + 1 for n, generation in enumerate(collections) if generation == 1]
    assert middles == [10, 20, 30, 40]
    assert 2 not in collections


async def test_what_lives_past_a_middle_collection_is_frozen(
    autojump_clock: trio.testing.MockClock, collections: list[int]
) -> None:
    pacer = CollectorPacer(young=1.0, middle=10.0, growth=1e6)
    async with pacing(pacer):
        await trio.sleep(5)
        kept = [Node() for _ in range(1000)]
        before = gc.get_freeze_count()
        await trio.sleep(10)
        assert gc.get_freeze_count() >= before + 1000
        del kept
    assert pacer.full_collections == 0


async def test_a_heap_grown_by_half_gets_a_full_collection(
    autojump_clock: trio.testing.MockClock, collections: list[int]
) -> None:
    pacer = CollectorPacer(young=1.0, middle=10.0, growth=0.5)
    async with pacing(pacer):
        await trio.sleep(15)
        assert pacer.full_collections == 0
        # A cycle that lived long enough to be frozen: only a full collection frees it.
        first, second = Node(), Node()
        first.other, second.other = second, first
        gone = weakref.ref(first)
        await trio.sleep(10)
        del first, second
        await trio.sleep(10)
        assert gone() is not None
        grown = [[n] for n in range(sys.getallocatedblocks())]  # the heap, doubled
        await trio.sleep(10)
        assert pacer.full_collections == 1
        assert gone() is None
        assert 2 in collections
        del grown


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


async def test_a_young_cycle_is_freed_within_a_second(
    autojump_clock: trio.testing.MockClock, collections: list[int]
) -> None:
    first, second = Node(), Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    async with pacing(CollectorPacer()):
        await trio.sleep(0.5)
        assert gone() is not None  # nothing collects it but the pacer
        await trio.sleep(1.0)
        assert gone() is None


async def test_a_collector_turned_off_stays_off(
    autojump_clock: trio.testing.MockClock, collections: list[int]
) -> None:
    gc.disable()
    try:
        async with pacing(CollectorPacer()):
            await trio.sleep(30)
    finally:
        gc.enable()
    assert collections == []


def test_intervals_must_nest() -> None:
    with pytest.raises(ValueError, match="young <= middle"):
        CollectorPacer(young=5.0, middle=1.0)
    with pytest.raises(ValueError, match="must be positive"):
        CollectorPacer(growth=0)


@pytest.mark.parametrize(
    ("threshold", "mode", "paced"),
    [(200_000, Mode.SERVE, True), (200_000, Mode.WORKER, True), (0, Mode.SERVE, False)],
)
def test_a_tuned_process_paces_its_collector(
    tmp_path: Any, threshold: int, mode: Mode, paced: bool
) -> None:
    settings = Settings(access_log=False, data_dir=str(tmp_path), gc_threshold=threshold)
    app = create_app().boot(settings, mode=mode)
    names = [child.name for child in app.runtime.tree.status().children]
    assert ("collector" in names) is paced


async def test_the_c_heap_is_trimmed_after_each_middle_collection(
    autojump_clock: trio.testing.MockClock, collections: list[int]
) -> None:
    pacer = CollectorPacer(young=1.0, middle=10.0, growth=1e6)
    if sys.platform == "linux" and "glibc" in " ".join(platform.libc_ver()):
        assert pacer._trim is not None  # glibc's malloc_trim, found
    trims: list[int] = []
    pacer._trim = lambda pad: trims.append(len(collections)) or 1
    async with pacing(pacer):
        await trio.sleep(30.5)
    # After the 10th, 20th and 30th collections: each a middle one.
    assert trims == [10, 20, 30]
    assert [collections[n - 1] for n in trims] == [1, 1, 1]


def test_the_trim_is_the_c_librarys_own() -> None:
    trim = _malloc_trim()
    if "glibc" not in " ".join(platform.libc_ver()):
        assert trim is None
        return
    assert trim is not None and trim(0) in (0, 1)
