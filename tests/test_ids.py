"""Random ids from the shared buffer: the length asked for, never repeated, and a
forked child does not give out its parent's."""

from __future__ import annotations

import os
import threading

import pytest

from nurseries import random_hex


def test_ids_have_the_length_asked_for_and_do_not_repeat() -> None:
    ids = [random_hex() for _ in range(20_000)]  # several refills of the buffer
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)
    assert len(random_hex(4)) == 8
    with pytest.raises(ValueError):
        random_hex(0)


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
