"""The doorbell between processes on one SQLite file: real Unix sockets, real time
(short). Two doorbells (or stores) on one path stand for two processes; the last test
is two real processes."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from canopy.nurseries._doorbell import Doorbell
from canopy.nurseries.jobs import Job, JobRunner, JobState, SQLiteJobStore, TaskRegistry

ROOT = str(Path(__file__).resolve().parents[3])
pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="Unix sockets")


@pytest.fixture
def bells(tmp_path: Path) -> Iterator[Callable[[], Doorbell]]:
    """Doorbells on one database path, as processes sharing it have; closed after."""
    made: list[Doorbell] = []

    def make() -> Doorbell:
        made.append(Doorbell(tmp_path / "jobs.db"))
        return made[-1]

    yield make
    for bell in made:
        bell.close()


class Heard:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.changed = trio.Event()

    def __call__(self, message: bytes) -> None:
        self.messages.append(message)
        self.changed.set()

    async def next(self) -> bytes:
        with trio.fail_after(2):
            while not self.messages:
                self.changed = trio.Event()
                await self.changed.wait()
        return self.messages.pop(0)


async def test_a_ring_reaches_the_other_listeners_and_not_the_ringer(
    bells: Callable[[], Doorbell], nursery: trio.Nursery
) -> None:
    ringer, other = bells(), bells()
    heard_by_ringer, heard_by_other = Heard(), Heard()
    await nursery.start(ringer.listen, heard_by_ringer)
    await nursery.start(other.listen, heard_by_other)
    ringer.ring(b"enqueued")
    assert await heard_by_other.next() == b"enqueued"
    await trio.sleep(0.05)
    assert heard_by_ringer.messages == []
    assert ringer.rings == 1


async def test_rings_that_came_together_are_heard_once(
    bells: Callable[[], Doorbell], nursery: trio.Nursery
) -> None:
    ringer, other = bells(), bells()
    heard = Heard()
    await nursery.start(other.listen, heard)
    for _ in range(3):  # no checkpoint between them: all three wait in the socket
        ringer.ring(b"enqueued")
    ringer.ring(b"cancel:j1")
    assert sorted([await heard.next(), await heard.next()]) == [b"cancel:j1", b"enqueued"]
    await trio.sleep(0.05)
    assert heard.messages == []


async def test_a_listener_whose_process_died_is_forgotten(
    bells: Callable[[], Doorbell], nursery: trio.Nursery
) -> None:
    ringer, other = bells(), bells()
    heard = Heard()
    await nursery.start(other.listen, heard)
    # What a killed process leaves behind: its socket's file, with nothing bound to it.
    dead = other.directory / "0000deadbeef0000"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(dead))
    ringer.ring(b"enqueued")
    assert await heard.next() == b"enqueued"
    assert not dead.exists()
    assert len(os.listdir(other.directory)) == 1  # the live listener's


async def test_a_listener_removes_its_socket_when_it_stops(tmp_path: Path) -> None:
    bell = Doorbell(tmp_path / "jobs.db")
    async with trio.open_nursery() as nursery:
        await nursery.start(bell.listen, Heard())
        assert len(os.listdir(bell.directory)) == 1
        nursery.cancel_scope.cancel()
    assert os.listdir(bell.directory) == []


async def test_a_path_too_long_for_a_socket_leaves_the_bell_silent(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    bell = Doorbell(deep / "jobs.db")
    assert not bell.enabled
    await nursery.start(bell.listen, Heard())
    bell.ring(b"enqueued")  # nothing to ring, nothing raised
    assert bell.rings == 0


async def test_a_bell_that_cannot_listen_leaves_the_store_polling(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A bells directory that cannot be made (here a file is in its way) costs the
    rings, never the store: it starts, enqueues return as before, and another
    process's runner still finds the jobs by polling and hears a cancel at its
    heartbeat."""
    (tmp_path / "jobs.db.bells").write_text("in the way")
    web, worker = SQLiteJobStore(tmp_path / "jobs.db"), SQLiteJobStore(tmp_path / "jobs.db")
    await nursery.start(web.run)
    await nursery.start(worker.run)
    registry = TaskRegistry()
    started, cancelled = trio.Event(), trio.Event()

    @registry.task("wait")
    async def wait(args: dict[str, object]) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    runner = JobRunner(worker, registry, poll_interval=0.05, lease=1.5)
    await nursery.start(runner.run)
    job, created = await web.enqueue(Job("wait", {}))
    assert created and web.doorbell.rings == 0 and worker.doorbell.rings == 0
    assert not worker.hears_enqueues  # so its runner polls every poll_interval
    with trio.fail_after(2):  # found by polling: no bell rang
        await started.wait()
    await web.cancel(job.id)  # no push reaches the other store: its heartbeat reads it
    with trio.fail_after(2):
        await cancelled.wait()
    runner.shutdown()


async def test_another_store_on_the_file_hears_its_enqueues_and_cancels(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Two stores on one file, as a web process and a worker have: the worker's store
    tells its runners of the web process's enqueue, and of a cancel of a job it runs,
    at once (without the bell it never would: its runner polls, and its heartbeat
    reads the cancel flag half a second later)."""
    web, worker = SQLiteJobStore(tmp_path / "jobs.db"), SQLiteJobStore(tmp_path / "jobs.db")
    await nursery.start(web.run)
    await nursery.start(worker.run)
    assert web.hears_enqueues and worker.hears_enqueues
    enqueued, cancels = trio.Event(), Heard()
    worker.on_enqueued(enqueued.set)
    worker.on_cancel_requested(lambda job_id: cancels(job_id.encode()))
    job, _ = await web.enqueue(Job("demo.echo", {}))
    with trio.fail_after(2):
        await enqueued.wait()
    [claimed] = await worker.claim("default", "runner-1", 1, 10.0)
    assert claimed.id == job.id
    await web.cancel(job.id)
    assert await cancels.next() == job.id.encode()


async def test_a_runner_takes_another_stores_job_at_once_without_polling(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    web, worker = SQLiteJobStore(tmp_path / "jobs.db"), SQLiteJobStore(tmp_path / "jobs.db")
    await nursery.start(web.run)
    await nursery.start(worker.run)
    registry = TaskRegistry()
    ran = trio.Event()

    @registry.task("note")
    async def note(args: dict[str, object]) -> None:
        ran.set()

    # Polls half a minute apart: only the bell can explain a prompt start.
    runner = JobRunner(
        worker, registry, poll_interval=30.0, min_poll=30.0, heard_poll_interval=30.0
    )
    await nursery.start(runner.run)
    await trio.sleep(0.1)  # its first claim found the queue empty
    started = trio.current_time()
    await web.enqueue(Job("note", {}))
    with trio.fail_after(2):
        await ran.wait()
    assert trio.current_time() - started < 0.5
    runner.shutdown()


ENQUEUE_ONE = """
import sys, trio
from canopy.nurseries.jobs import Job, SQLiteJobStore

async def main():
    store = SQLiteJobStore(sys.argv[1])
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        job, _ = await store.enqueue(Job("note", {}))
        print(job.id, store.doorbell.rings, flush=True)
        nursery.cancel_scope.cancel()

trio.run(main)
"""


async def test_a_ring_crosses_processes(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.db")
    await nursery.start(store.run)
    enqueued = trio.Event()
    store.on_enqueued(enqueued.set)
    done = await trio.run_process(
        [sys.executable, "-c", ENQUEUE_ONE, str(tmp_path / "jobs.db")],
        capture_stdout=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    job_id, rings = done.stdout.decode().split()
    assert rings == "1"  # to this process, the one listener
    with trio.fail_after(2):
        await enqueued.wait()
    job = await store.get(job_id)
    assert job is not None and job.state is JobState.QUEUED
