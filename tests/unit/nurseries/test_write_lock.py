"""The write lock: writers in other processes wait their turn, are woken at once, and
give up after the timeout. Real threads, a real second process, real time (short)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio

from canopy.nurseries._write_lock import WriteLock
from canopy.nurseries.jobs import Job, SQLiteJobStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _acquire_in_thread(lock: WriteLock) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def take() -> None:
        try:
            lock.acquire()
            outcome.append(time.monotonic())
        except sqlite3.OperationalError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=take)
    thread.start()
    return thread, outcome


def test_a_waiting_writer_gets_the_lock_as_soon_as_the_holder_lets_go(tmp_path: Path) -> None:
    # Two descriptors of one file conflict as two processes do.
    first, second = WriteLock(tmp_path / "db.write-lock"), WriteLock(tmp_path / "db.write-lock")
    try:
        first.acquire()
        thread, outcome = _acquire_in_thread(second)
        time.sleep(0.2)
        assert outcome == []  # still waiting
        released = time.monotonic()
        first.release()
        thread.join(5)
        (got,) = outcome
        assert isinstance(got, float) and got - released < 0.05
        second.release()
        first.acquire()  # free again: the uncontended path
        first.release()
    finally:
        first.close()
        second.close()


def test_a_writer_gives_up_after_the_timeout_and_leaves_the_lock_free(tmp_path: Path) -> None:
    path = tmp_path / "db.write-lock"
    holder, waiter, third = WriteLock(path), WriteLock(path, timeout=0.2), WriteLock(path)
    try:
        holder.acquire()
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            waiter.acquire()
        assert 0.2 <= time.monotonic() - started < 1.0
        holder.release()
        # The helper got the lock for a caller that had given up, and let it go.
        deadline = time.monotonic() + 2
        while True:
            try:
                third.timeout = 0.05
                third.acquire()
                break
            except sqlite3.OperationalError:
                assert time.monotonic() < deadline, "the abandoned wait kept the lock"
        third.release()
        waiter.timeout = 1.0
        waiter.acquire()  # the waiter itself works again
        waiter.release()
    finally:
        for lock in (holder, waiter, third):
            lock.close()


def test_a_writer_waits_for_another_process_and_not_after_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "db.write-lock"
    lock = WriteLock(path)
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), "30"], stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None and process.stdout.readline() == "held\n"
            thread, outcome = _acquire_in_thread(lock)
            time.sleep(0.2)
            assert outcome == []
            killed = time.monotonic()
            process.kill()  # its descriptors close, and the lock with them
            process.wait(5)
            thread.join(5)
            (got,) = outcome
            assert isinstance(got, float) and got - killed < 0.5
            lock.release()
        finally:
            if process.poll() is None:
                process.kill()
            lock.close()


async def test_a_poll_that_finds_nothing_due_takes_no_write_lock(tmp_path: Path) -> None:
    """An idle runner polls its queue (every 50 ms at most); a poll that finds nothing
    must not queue behind, or hold up, the other processes' writes."""
    import fcntl  # here, not at the top: the module is skipped, not failed, on Windows

    store = SQLiteJobStore(tmp_path / "jobs.db")
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.enqueue(Job("later", run_at=time.time() + 3600))
        assert await store.claim("default", "me", 10, 10.0) == []  # idle from here
        other = os.open(tmp_path / "jobs.db.write-lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(other, fcntl.LOCK_EX)  # another process's write, under way
            with trio.fail_after(1):
                assert await store.claim("default", "me", 10, 10.0) == []
        finally:
            os.close(other)
        await store.enqueue(Job("now"))
        (claimed,) = await store.claim("default", "me", 10, 10.0)
        assert claimed.task == "now"
        nursery.cancel_scope.cancel()
