"""Background jobs: Canopy against SAQ and arq, one worker process each, on N no-op jobs.

Usage (from the repository root, after ``pip install -e . -r bench/requirements.txt``
and with ``redis-server`` on the PATH)::

    python bench/jobs.py [--jobs 10000] [--enqueuers 100] [--concurrency 16]

For each system, in one run:

1. enqueue: ``--enqueuers`` concurrent clients enqueue N jobs through the system's
   own client API while no worker runs (Canopy: ``SQLiteJobStore.enqueue``, which
   returns once the job is committed with ``synchronous=FULL``; arq and SAQ: to a
   redis-server the bench starts on a free port, with its default persistence and
   no RDB snapshots);
2. process: one worker process starts (``canopy worker``, ``arq``, ``saq``, each
   running up to ``--concurrency`` jobs at once) and drains those N jobs; the rate
   is taken from its first completed job, so process start-up is not counted;
3. end to end: with that worker running, N more jobs are enqueued and the clock runs
   until the last is done;
4. pickup: with that worker idle, ``PICKUPS`` jobs are enqueued one at a time,
   ``PICKUP_GAP`` apart, and each one's time from enqueue to done is read from the
   system's own record of the job (Canopy: ``created_at`` to the outcome's
   ``updated_at``; SAQ: ``queued`` to ``completed``; arq: ``enqueue_time`` to
   ``finish_time``). The median is printed, and the best peer's over Canopy's.

Every job is checked done by the system's own bookkeeping (arq's queue, SAQ's
incomplete set, Canopy's job table). Workers run on core 0; the bench and Redis on
core 1. Results are printed as jobs/s and as the ratio to the best peer: the median
over the rounds, and with ``--rounds`` over 1 the lowest and highest too.

Then, for Canopy with its default lease (10 s) and sweep (1 s): a worker running a
long job is SIGKILLed and another started; the time until the job runs again is
printed (the peers' figures, minutes or never, are in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    ExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from _procs import free_port, import_root, running

ROOT = Path(__file__).resolve().parent.parent
PHASE_TIMEOUT = 120.0
POLL = 0.01
PICKUPS = 30
PICKUP_GAP = 0.12  # seconds between them: the worker is idle when each comes


@dataclass
class Rates:
    enqueue: float
    process: float
    end_to_end: float
    pickup: float  # seconds, the median of PICKUPS jobs


# Enqueues one job and, once it is done, returns its enqueue-to-done seconds as the
# system recorded them.
Pickup = Callable[[], Awaitable[float]]


@dataclass
class Setup:
    workdir: Path
    jobs: int
    enqueuers: int
    concurrency: int
    redis_port: int
    worker_cores: str
    processes: int = 1

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BENCH_REDIS_PORT": str(self.redis_port),
            "BENCH_CONCURRENCY": str(self.concurrency),
            "CANOPY_DATA_DIR": str(self.workdir / "canopy"),
            "CANOPY_JOB_CONCURRENCY": str(self.concurrency),
            "CANOPY_LOG_LEVEL": "warning",
        }


# -- measuring, whatever the system ------------------------------------------------


class Clock:
    """The phases, over callables the system provides (in its own event loop)."""

    def __init__(
        self,
        setup: Setup,
        pending: Callable[[], Awaitable[int]],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.setup = setup
        self.pending = pending
        self.sleep = sleep

    async def drained(self, started: float) -> float:
        """Wait until nothing is pending; return when that was seen."""
        while await self.pending():
            if time.perf_counter() - started > PHASE_TIMEOUT:
                raise RuntimeError(f"{await self.pending()} jobs still pending")
            await self.sleep(POLL)
        return time.perf_counter()

    async def process_rate(self) -> float:
        """From the first completion seen to the last: jobs/s of a worker that just started."""
        started = time.perf_counter()
        while (remaining := await self.pending()) >= self.setup.jobs:
            if time.perf_counter() - started > PHASE_TIMEOUT:
                raise RuntimeError("the worker completed nothing")
            await self.sleep(POLL / 10)
        first = time.perf_counter()
        return remaining / (await self.drained(first) - first)


def split(jobs: int, enqueuers: int) -> list[int]:
    return [jobs // enqueuers + (i < jobs % enqueuers) for i in range(enqueuers)]


@contextmanager
def worker(setup: Setup, argv: list[str], env: dict[str, str]) -> Iterator[None]:
    """``--processes`` worker processes, all on ``--worker-cores``."""
    with ExitStack() as stack:
        for _ in range(setup.processes):
            stack.enter_context(
                running(argv, None, setup.workdir, {**setup.env, **env}, core=setup.worker_cores)
            )
        yield


async def phases(
    setup: Setup,
    clock: Clock,
    enqueue_all: Callable[[], Awaitable[object]],
    pickup: Pickup,
    argv: list[str],
    env: dict[str, str] | None = None,
) -> Rates:
    """Enqueue with no worker, start the worker (``argv``) to process, then end to end,
    then one job at a time."""
    started = time.perf_counter()
    await enqueue_all()
    enqueue_rate = setup.jobs / (time.perf_counter() - started)
    with worker(setup, argv, env or {}):
        process_rate = await clock.process_rate()
        started = time.perf_counter()
        await enqueue_all()
        end_to_end = setup.jobs / (await clock.drained(started) - started)
        pickups = []
        for _ in range(PICKUPS):
            await clock.sleep(PICKUP_GAP)
            pickups.append(await pickup())
    return Rates(enqueue_rate, process_rate, end_to_end, statistics.median(pickups))


async def until_done(
    check: Callable[[], Awaitable[float | None]], sleep: Callable[[float], Awaitable[None]]
) -> float:
    """Poll ``check`` (the job's enqueue-to-done seconds once done, else None)."""
    started = time.perf_counter()
    while (seconds := await check()) is None:
        if time.perf_counter() - started > 10:
            raise RuntimeError("a job was not done within 10 s")
        await sleep(0.002)
    return seconds


def asyncio_clients(
    setup: Setup, enqueue_one: Callable[[], Awaitable[object]]
) -> Callable[[], Awaitable[object]]:
    """``--enqueuers`` asyncio tasks enqueueing N jobs between them, one at a time each."""

    async def client(count: int) -> None:
        for _ in range(count):
            await enqueue_one()

    return lambda: asyncio.gather(*(client(c) for c in split(setup.jobs, setup.enqueuers)))


# -- arq ---------------------------------------------------------------------------


def measure_arq(setup: Setup) -> Rates:
    from arq import create_pool
    from arq.connections import RedisSettings

    async def main() -> Rates:
        pool = await create_pool(RedisSettings(port=setup.redis_port))
        await pool.flushdb()

        async def pending() -> int:
            return int(await pool.zcard("arq:queue"))  # a job leaves it once finished

        enqueue_all = asyncio_clients(setup, lambda: pool.enqueue_job("noop"))

        async def pickup() -> float:
            job = await pool.enqueue_job("noop")

            async def check() -> float | None:
                info = await job.result_info()
                if info is None:
                    return None
                return (info.finish_time - info.enqueue_time).total_seconds()

            return await until_done(check, asyncio.sleep)

        argv = [sys.executable, "-m", "arq", "jobs_arq.WorkerSettings"]
        clock = Clock(setup, pending, asyncio.sleep)
        rates = await phases(setup, clock, enqueue_all, pickup, argv)
        await pool.aclose()
        return rates

    return asyncio.run(main())


# -- SAQ ---------------------------------------------------------------------------


def measure_saq(setup: Setup) -> Rates:
    from saq import Queue

    async def main() -> Rates:
        queue = Queue.from_url(f"redis://127.0.0.1:{setup.redis_port}")
        await queue.redis.flushdb()

        async def pending() -> int:
            return await queue.count("incomplete")

        enqueue_all = asyncio_clients(setup, lambda: queue.enqueue("noop"))

        async def pickup() -> float:
            job = await queue.enqueue("noop")

            async def check() -> float | None:
                await job.refresh()
                if not job.completed:
                    return None
                return (job.completed - job.queued) / 1000  # both in ms since the epoch

            return await until_done(check, asyncio.sleep)

        argv = [sys.executable, "-m", "saq", "jobs_saq.settings"]
        clock = Clock(setup, pending, asyncio.sleep)
        rates = await phases(setup, clock, enqueue_all, pickup, argv)
        await queue.disconnect()
        return rates

    return asyncio.run(main())


# -- Canopy ------------------------------------------------------------------------


def measure_canopy(setup: Setup) -> Rates:
    """Canopy on its embedded default, SQLite with ``synchronous=FULL``."""
    sys.path.insert(0, str(import_root(ROOT)))
    from canopy.nurseries.jobs import SQLiteJobStore

    database = setup.workdir / "canopy" / "canopy.db"
    shutil.rmtree(database.parent, ignore_errors=True)

    @asynccontextmanager
    async def open_store() -> AsyncIterator[tuple[Any, Callable[[], Awaitable[int]]]]:
        store = SQLiteJobStore(database)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            reader = sqlite3.connect(database, check_same_thread=False)

            def count() -> int:
                query = "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running', 'retrying')"
                return int(reader.execute(query).fetchone()[0])

            async def pending() -> int:
                return await trio.to_thread.run_sync(count)

            yield store, pending
            reader.close()
            nursery.cancel_scope.cancel()

    return trio.run(canopy_phases, setup, open_store, {})


def measure_canopy_redis(setup: Setup) -> Rates:
    """Canopy with ``CANOPY_STORE=redis://...``: the same redis-server as the peers."""
    sys.path.insert(0, str(import_root(ROOT)))
    from canopy.nurseries.redis import RedisConnection, RedisJobStore

    url = f"redis://127.0.0.1:{setup.redis_port}/0"

    @asynccontextmanager
    async def open_store() -> AsyncIterator[tuple[Any, Callable[[], Awaitable[int]]]]:
        connection = RedisConnection(url)
        store = RedisJobStore(connection, prefix="bench")
        async with trio.open_nursery() as nursery:
            await nursery.start(connection.run)
            await connection.client.flushdb()
            await nursery.start(store.run)

            async def pending() -> int:
                # waiting (queued, scheduled, retrying) + running: what the store counts
                waiting = await connection.client.hgetall("{bench}:waiting")
                running = await connection.client.zcard("{bench}:leases")
                return sum(int(n) for n in waiting.values()) + int(running)

            yield store, pending
            nursery.cancel_scope.cancel()

    env = {"CANOPY_STORE": url, "CANOPY_REDIS_PREFIX": "bench"}
    return trio.run(canopy_phases, setup, open_store, env)


async def canopy_phases(
    setup: Setup,
    open_store: Callable[[], AbstractAsyncContextManager[tuple[Any, Callable[[], Awaitable[int]]]]],
    env: dict[str, str],
) -> Rates:
    from canopy.nurseries.jobs import JobState, TaskRegistry

    registry = TaskRegistry()

    @registry.task("demo.echo")  # what `canopy worker` runs: returns its args
    async def echo(args: dict[str, object]) -> dict[str, object]:
        return args

    spec = registry.get("demo.echo")
    async with open_store() as (store, pending):

        async def enqueue(count: int) -> None:
            for _ in range(count):
                await store.enqueue(spec.new_job({}))

        async def enqueue_all() -> None:
            async with trio.open_nursery() as clients:
                for c in split(setup.jobs, setup.enqueuers):
                    clients.start_soon(enqueue, c)

        async def pickup() -> float:
            job, _ = await store.enqueue(spec.new_job({}))

            async def check() -> float | None:
                done = await store.get(job.id)
                if done is None or done.state is not JobState.SUCCEEDED:
                    return None
                return float(done.updated_at - done.created_at)

            return await until_done(check, trio.sleep)

        clock = Clock(setup, pending, trio.sleep)
        argv = [sys.executable, "-m", "canopy", "worker"]
        return await phases(setup, clock, enqueue_all, pickup, argv, env)


def canopy_rerun_after_sigkill(setup: Setup) -> float:
    """Seconds from SIGKILL of the worker running a job to the job running again."""
    sys.path.insert(0, str(import_root(ROOT)))
    from canopy.nurseries.jobs import Job, SQLiteJobStore

    database = setup.workdir / "canopy" / "canopy.db"
    shutil.rmtree(database.parent, ignore_errors=True)

    async def enqueue() -> str:
        store = SQLiteJobStore(database)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            job, _ = await store.enqueue(Job("demo.sleep", {"seconds": 60}, timeout=120))
            nursery.cancel_scope.cancel()
        return job.id

    def attempts(job_id: str) -> int:
        with sqlite3.connect(database) as reader:
            row = reader.execute(
                "SELECT attempts FROM jobs WHERE id = ? AND state = 'running'", (job_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def wait_for_attempt(job_id: str, attempt: int) -> None:
        deadline = time.monotonic() + 60
        while attempts(job_id) < attempt:
            if time.monotonic() > deadline:
                raise RuntimeError(f"attempt {attempt} did not start within 60 s")
            time.sleep(POLL)

    job_id = trio.run(enqueue)
    argv = [sys.executable, "-m", "canopy", "worker"]
    env = {k: v for k, v in setup.env.items() if k != "CANOPY_JOB_CONCURRENCY"}
    with running(argv, None, setup.workdir, env, core=setup.worker_cores) as first:
        wait_for_attempt(job_id, 1)
        first.kill()  # ours, by PID; `running` then finds it gone
        killed = time.perf_counter()
        first.wait()
    with running(argv, None, setup.workdir, env, core=setup.worker_cores):
        wait_for_attempt(job_id, 2)
        return time.perf_counter() - killed


# -- the run -----------------------------------------------------------------------


def redis_server(workdir: Path, port: int) -> AbstractContextManager[subprocess.Popen[bytes]]:
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--dir", str(workdir)]
    return running(argv, port, workdir, dict(os.environ), core=1)


def _span(values: list[float], form: str) -> str:
    return f"{form.format(min(values))}-{form.format(max(values))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--enqueuers", type=int, default=100, help="concurrent clients")
    parser.add_argument("--concurrency", type=int, default=16, help="jobs a worker runs at once")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (median)")
    parser.add_argument("--systems", default="canopy,canopy-redis,saq,arq", help="which to measure")
    parser.add_argument(
        "--processes", type=int, default=1, help="worker processes per system (scaling)"
    )
    parser.add_argument(
        "--worker-cores",
        default="0",
        help="taskset cores of the worker process (the bench and Redis run on core 1)",
    )
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("redis-server is needed for the peers (apt-get install redis-server)")
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # workers get core 0
    everything = {
        "canopy": measure_canopy,
        "canopy-redis": measure_canopy_redis,
        "saq": measure_saq,
        "arq": measure_arq,
    }
    systems = {name: everything[name] for name in args.systems.split(",")}
    results: dict[str, list[Rates]] = {name: [] for name in systems}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in ("jobs_arq.py", "jobs_saq.py"):
            shutil.copy(ROOT / "bench" / name, workdir)
        redis_port = free_port()
        with redis_server(workdir, redis_port):
            setup = Setup(
                workdir,
                args.jobs,
                args.enqueuers,
                args.concurrency,
                redis_port,
                args.worker_cores,
                args.processes,
            )
            for _ in range(args.rounds):
                for name, measure in systems.items():
                    results[name].append(measure(setup))
            rerun = canopy_rerun_after_sigkill(setup) if "canopy" in systems else None
    print(
        f"{args.jobs} no-op jobs, {args.enqueuers} concurrent enqueuers, "
        f"{args.processes} worker process(es) running {args.concurrency} at once each, "
        f"on cores {args.worker_cores}"
    )
    medians = {
        name: Rates(
            *(
                statistics.median(getattr(r, f) for r in rates)
                for f in ("enqueue", "process", "end_to_end", "pickup")
            )
        )
        for name, rates in results.items()
    }
    print(f"    {'':<13} {'enqueue':>12} {'process':>12} {'end to end':>12}  jobs/s   pickup")
    for name, r in medians.items():
        print(
            f"    {name:<13} {r.enqueue:>12,.0f} {r.process:>12,.0f} {r.end_to_end:>12,.0f}"
            f"  {r.pickup * 1000:>14.1f} ms"
        )
    fields = ("enqueue", "process", "end_to_end")
    if args.rounds > 1:
        print("    lowest-highest over the rounds:")
        for name, rates in results.items():
            spans = [_span([getattr(r, field) for r in rates], "{:,.0f}") for field in fields]
            print(f"    {name:<13} " + " ".join(f"{span:>23}" for span in spans))
    peers = [name for name in ("saq", "arq") if name in medians]
    ours = [name for name in ("canopy", "canopy-redis") if name in medians]
    for name in ours if peers else ():
        for field in fields:
            best = max(peers, key=lambda n: getattr(medians[n], field))
            ratio = getattr(medians[name], field) / getattr(medians[best], field)
            label = field.replace("_", " ")
            # The rounds are interleaved: each round's ratio compares runs minutes apart.
            rounds = [
                getattr(a, field) / getattr(b, field)
                for a, b in zip(results[name], results[best], strict=True)
            ]
            print(
                f"    {name} / best peer ({best}), {label}: {ratio:.1f}x"
                f" (rounds {_span(rounds, '{:.1f}')}x)"
            )
        best = min(peers, key=lambda n: medians[n].pickup)
        ratio = medians[best].pickup / medians[name].pickup
        label = f"(over 1: {name} quicker)"
        print(f"    best peer ({best}) / {name}, pickup time: {ratio:.2f}x {label}")
    if rerun is not None:
        print(f"canopy: a job runs again {rerun:.1f} s after its worker was SIGKILLed")


if __name__ == "__main__":
    main()
