"""Random ids from the shared buffer: the length asked for, never repeated, and a
forked child does not give out its parent's; sortable ids begin with the time."""

from __future__ import annotations

import os
import threading
import time

import pytest

from canopy.nurseries import random_hex, sortable_id


def test_ids_have_the_length_asked_for_and_do_not_repeat() -> None:
    ids = [random_hex() for _ in range(20_000)]  # several refills of the buffer
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)
    assert len(random_hex(4)) == 8
    with pytest.raises(ValueError):
        random_hex(0)


def test_sortable_ids_begin_with_the_time_so_later_ids_sort_after() -> None:
    """An index of them grows at its end; the rest stays random."""
    ids = []
    for _ in range(10):
        ids.append(sortable_id())
        time.sleep(0.002)
    assert ids == sorted(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    now_ms = time.time_ns() // 1_000_000
    assert 0 <= now_ms - int(ids[-1][:12], 16) < 1000
    assert len({i[12:] for i in ids}) == len(ids)


def test_threads_never_get_the_same_bytes() -> None:
    found: list[list[str]] = [[] for _ in range(4)]

    def make(into: list[str]) -> None:
        into.extend(random_hex(8) for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(ids,)) for ids in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in found for i in ids]
    assert len(set(every)) == len(every)


def test_a_forked_child_starts_from_fresh_bytes() -> None:
    random_hex()  # the parent has unread bytes in its buffer
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, "".join(random_hex() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = "".join(random_hex() for _ in range(8))
    assert len(child) == len(parent) == 256 and child != parent
