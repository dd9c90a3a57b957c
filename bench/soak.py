"""A soak: one ``canopy serve`` under a steady mixed load, watched for what grows.

``python bench/soak.py --minutes 30 --warmup 5``

The load, at about half of what one process serves on this machine (``--scale``
moves all of it): GET /demo/hello, job enqueues (echoes, sleeps, failures that
retry into dead letters, sleeps cancelled while they run), orders, publishes over
HTTP, WebSocket subscribers that come and go (each reconnect resumes with its
``since`` and ``epoch`` and checks for gaps), and slow consumers that stop reading
and are abandoned every minute. Every 10 s it samples the server's RSS, open files,
database files, topics and the window's GET latency.

After the run it settles (every accepted job and order final), sends SIGTERM, and
reports: the slopes after the warm-up (least squares per minute), the worst window,
what was lost, ERROR lines in the server's log, and how long exit took after the
log's "stopped". The baseline in the same run is the first window after the
warm-up: each later window's GET p99 is printed as a ratio to it.

Bounded: the run is ``--warmup`` + ``--minutes``, then at most a minute to settle.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import httpx
import trio
import trio_websocket
from _procs import (
    ROOT,
    canopy_module,
    free_port,
    import_root,
    pinned,
    raise_fd_limit,
    wait_until_up,
)

WINDOW = 10.0
# With --tracemalloc or --garbage the server runs under this: SIGUSR2 writes a
# tracemalloc snapshot, SIGUSR1 the types of what the cyclic collector finds.
TRACED_SERVER = """
import collections, ctypes, gc, json, os, signal, sys, tracemalloc
frames = int(os.environ["SOAK_FRAMES"])
if frames:
    tracemalloc.start(frames)
folder = os.environ["SOAK_SNAPSHOTS"]
def dump(signum, frame):
    tracemalloc.take_snapshot().dump(os.path.join(folder, f"{len(os.listdir(folder))}.snap"))
def garbage(signum, frame):
    gc.unfreeze()  # a cycle frozen by the server's collector pacer counts too
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    def kind(o):
        named = o if callable(o) and hasattr(o, "__qualname__") else type(o)
        return f"{type(o).__name__} {getattr(named, '__module__', '?')}.{named.__qualname__}"
    kinds = collections.Counter(kind(o) for o in gc.garbage)
    gc.garbage.clear()
    gc.set_debug(0)
    alive = gc.get_objects()  # what every full collection walks
    census = collections.Counter(
        f"coroutine {o.__qualname__}" if type(o).__name__ == "coroutine" else type(o).__qualname__
        for o in alive
    )
    found = {
        "objects": sum(kinds.values()),
        "kinds": kinds.most_common(25),
        "tracked": len(alive),
        "census": dict(census),
    }
    del alive
    gc.freeze()
    n = len([n for n in os.listdir(folder) if n.startswith('garbage')])
    # Both allocators' own accounts, written by C to stderr: which of them holds
    # the memory that RSS counts, and how much of it is in use.
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.path.join(folder, f"malloc-{n}.txt"), "w") as out:
        os.dup2(out.fileno(), 2)
        sys._debugmallocstats()
        ctypes.CDLL(None).malloc_stats()
        os.dup2(saved, 2)
    os.close(saved)
    with open(os.path.join(folder, f"garbage-{n}.json"), "w") as out:
        json.dump(found, out)
signal.signal(signal.SIGUSR2, dump)
signal.signal(signal.SIGUSR1, garbage)
sys.argv[0] = "canopy"
from canopy.server.runtime._cli import main
main()
"""
TOPICS = 50  # public.soak.N, each with its subscribers
HOT = "public.soak.hot"  # the slow consumers' topic
SKU = "soak-sku"
FINAL_JOB_STATES = {"succeeded", "failed", "cancelled"}


@dataclass
class Window:
    """What one sampling window saw."""

    at: float  # minutes since the load started
    rss_kib: int = 0
    fds: int = 0
    db_kib: dict[str, int] = field(default_factory=dict)
    topics: int = 0
    get_ms: list[float] = field(default_factory=list)
    get_errors: int = 0
    gc_long: int = 0  # the server's collections in the window that paused over 25 ms
    gc_worst: str = "-"  # the bucket of its longest collection ("0.1": up to 100 ms)
    own_gc_ms: float = 0.0  # the load generator's longest collection in the window

    def p(self, q: float) -> float:
        ordered = sorted(self.get_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@dataclass
class Tally:
    windows: list[Window] = field(default_factory=list)
    current: Window = field(default_factory=lambda: Window(0.0))
    errors: dict[str, int] = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)
    cancelled: int = 0
    orders: list[str] = field(default_factory=list)
    published: int = 0
    connects: int = 0
    resumes: int = 0
    recovered: int = 0
    gaps: int = 0
    received: int = 0
    slow_closed: int = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class Behind(Exception):
    """The load generator could not send on time: its queue is full (counted, not sent)."""


class _Exchange:
    __slots__ = ("body", "done", "head", "outcome")

    def __init__(self, head: h11.Request, body: bytes) -> None:
        self.head, self.body = head, body
        self.done = trio.Event()
        self.outcome: tuple[int, bytes] | Exception = Behind()


class Http:
    """Keep-alive HTTP/1.1 connections over h11, each a task taking requests from one
    queue. A tenth of httpx's CPU per request, so that the load is what the plan says
    and not what one core of Python can generate; a request that finds the queue full
    is not sent, and counts (``Behind``)."""

    def __init__(self, port: int, connections: int = 32, backlog: int = 1000) -> None:
        self.port = port
        self.connections = connections
        self._send, self._receive = trio.open_memory_channel[_Exchange](backlog)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.connections):
                nursery.start_soon(self._connection)
            task_status.started()

    async def request(
        self, method: str, path: str, body: Any = None, headers: tuple[tuple[str, str], ...] = ()
    ) -> tuple[int, Any]:
        data = b"" if body is None else json.dumps(body).encode()
        head = [("Host", "127.0.0.1"), ("Content-Length", str(len(data)))]
        if body is not None:
            head.append(("Content-Type", "application/json"))
        exchange = _Exchange(
            h11.Request(method=method, target=path, headers=[*head, *headers]), data
        )
        try:
            self._send.send_nowait(exchange)
        except trio.WouldBlock:
            raise Behind() from None
        with trio.fail_after(30):
            await exchange.done.wait()
        if isinstance(exchange.outcome, Exception):
            raise exchange.outcome
        status, raw = exchange.outcome
        return status, json.loads(raw) if raw else None

    async def _connection(self) -> None:
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            except OSError:
                await trio.sleep(0.5)
                continue
            async with stream:
                conn = h11.Connection(h11.CLIENT)
                async for exchange in self._receive:
                    try:
                        exchange.outcome = await self._exchange(stream, conn, exchange)
                    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
                        exchange.outcome = exc
                        exchange.done.set()
                        break  # a new connection for the next one
                    exchange.done.set()
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        break
                    conn.start_next_cycle()

    @staticmethod
    async def _exchange(
        stream: trio.SocketStream, conn: h11.Connection, exchange: _Exchange
    ) -> tuple[int, bytes]:
        out = conn.send(exchange.head) or b""
        if exchange.body:
            out += conn.send(h11.Data(data=exchange.body)) or b""
        await stream.send_all(out + (conn.send(h11.EndOfMessage()) or b""))
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    raise trio.BrokenResourceError("the server closed the connection")
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("the server closed the connection")


async def paced(rate: float, stop: trio.Event, action: Any, nursery: trio.Nursery) -> None:
    """Start ``action()`` ``rate`` times a second (open loop: late answers do not slow
    the sends), until ``stop``."""
    interval, due = 1.0 / rate, trio.current_time()
    while not stop.is_set():
        due += interval
        nursery.start_soon(action)
        await trio.sleep_until(due)


async def get_hello(http: Http, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        status, _ = await http.request("GET", "/demo/hello")
        ok = status == 200
    except (Behind, trio.TooSlowError, OSError, trio.BrokenResourceError, h11.ProtocolError):
        ok = False
    window = tally.current
    if ok:
        window.get_ms.append((time.perf_counter() - started) * 1000)
    else:
        window.get_errors += 1
        tally.error("get")


async def enqueue(http: Http, tally: Tally) -> None:
    roll = random.random()
    if roll < 0.55:
        body: dict[str, Any] = {"task": "demo.echo", "args": {"n": roll}}
    elif roll < 0.75:
        body = {"task": "demo.sleep", "args": {"seconds": 0.5}}
    elif roll < 0.85:
        body = {"task": "demo.fail", "args": {"message": "soak"}}
    else:
        body = {"task": "demo.sleep", "args": {"seconds": 10}}
    try:
        status, reply = await http.request("POST", "/jobs", body)
        if status != 202:
            tally.error(f"enqueue {status}")
            return
        job = reply["id"]
        tally.jobs.append(job)
        if roll >= 0.85:  # cancel it while it runs
            await trio.sleep(1.0)
            status, _ = await http.request("DELETE", f"/jobs/{job}")
            if status == 200:
                tally.cancelled += 1
            else:
                tally.error(f"cancel {status}")
    except (Behind, trio.TooSlowError, OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        tally.error(f"jobs {type(exc).__name__}")


async def place_order(http: Http, tally: Tally) -> None:
    body = {
        "customer": f"soak-{random.randrange(200)}",
        "currency": "EUR",
        "items": [{"sku": SKU, "quantity": 1, "unit_price": 250}],
    }
    try:
        status, reply = await http.request(
            "POST", "/orders", body, (("Idempotency-Key", uuid.uuid4().hex),)
        )
    except (Behind, trio.TooSlowError, OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        tally.error(f"orders {type(exc).__name__}")
        return
    if status == 202:
        tally.orders.append(reply["id"])
    else:
        tally.error(f"orders {status}")


async def publish(http: Http, tally: Tally, n: int) -> None:
    topic = HOT if n % 9 == 0 else f"public.soak.{n % TOPICS}"
    data = {"n": n, "pad": "x" * (1500 if topic == HOT else 100)}
    try:
        status, _ = await http.request("POST", f"/topics/{topic}/messages", {"data": data})
    except (Behind, trio.TooSlowError, OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        tally.error(f"publish {type(exc).__name__}")
        return
    if status in (200, 201, 202):
        tally.published += 1
    else:
        tally.error(f"publish {status}")


async def open_ws(port: int, nursery: trio.Nursery, rcvbuf: int | None = None) -> Any:
    """A WebSocket to /ws over a socket we hold, so that we can drop it abruptly."""
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    ws = await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", "/ws")
    return ws, stream


async def subscriber(port: int, n: int, stop: trio.Event, tally: Tally) -> None:
    """Subscribe, read for a while, vanish (half of the time without a close frame),
    come back and resume; a message with an unexpected offset is a gap."""
    topic = f"public.soak.{n % TOPICS}"
    epoch, offset = None, None
    await trio.sleep(random.uniform(0, 15))
    while not stop.is_set():
        lifetime = random.expovariate(1 / 15)
        try:
            async with trio.open_nursery() as nursery:
                ws, stream = await open_ws(port, nursery)
                tally.connects += 1
                frame: dict[str, Any] = {"op": "subscribe", "topic": topic}
                if epoch is not None:
                    frame.update(since=offset, epoch=epoch)
                await ws.send_message(json.dumps(frame))
                with trio.move_on_after(lifetime):
                    while True:
                        reply = json.loads(await ws.get_message())
                        if reply["type"] == "subscribed":
                            # A recovered resume replays what came after ``since``
                            # first; otherwise delivery goes on from the reply's offset.
                            if epoch is not None:
                                tally.resumes += 1
                                tally.recovered += reply["recovered"]
                            if epoch is None or not reply["recovered"]:
                                epoch, offset = reply["epoch"], reply["offset"]
                        elif reply["type"] == "message":
                            tally.received += 1
                            if reply["epoch"] == epoch and reply["offset"] != offset + 1:
                                tally.gaps += 1
                            epoch, offset = reply["epoch"], reply["offset"]
                if random.random() < 0.5:
                    await stream.aclose()  # gone without a word
                else:
                    await ws.aclose()
                nursery.cancel_scope.cancel()
        except (OSError, trio.BrokenResourceError, trio_websocket.ConnectionClosed) as exc:
            tally.error(f"ws {type(exc).__name__}")
            await trio.sleep(1)


async def slow_consumers(port: int, stop: trio.Event, tally: Tally) -> None:
    """Every minute, three subscribers of the hot topic that never read, abandoned
    after 50 s (the server may have closed them as slow by then)."""
    while not stop.is_set():
        async with trio.open_nursery() as nursery:
            held = []
            for _ in range(3):
                ws, stream = await open_ws(port, nursery, rcvbuf=4096)
                await ws.send_message(json.dumps({"op": "subscribe", "topic": HOT}))
                held.append(stream)
            with trio.move_on_after(50):
                await stop.wait()
            for stream in held:
                await stream.aclose()
            tally.slow_closed += len(held)
            nursery.cancel_scope.cancel()
        with trio.move_on_after(10):
            await stop.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def database_sizes(data: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size // 1024 for path in sorted(data.glob("*.db*"))}


def gc_buckets(metrics: str) -> dict[str, float]:
    """The garbage collector's pause histogram, summed over its generations."""
    found: dict[str, float] = {}
    for bound, count in re.findall(
        r'^canopy_gc_pause_seconds_bucket\{generation="\d",le="([^"]+)"\} (\S+)$', metrics, re.M
    ):
        found[bound] = found.get(bound, 0.0) + float(count)
    return found


def gc_since(before: dict[str, float], now: dict[str, float]) -> tuple[int, str]:
    """How many collections paused over 25 ms between two scrapes, and the bucket of
    the longest."""
    grew = [b for b in now if now[b] - before.get(b, 0.0) > 0]
    bounds = sorted(grew, key=lambda b: float(b))
    over = now.get("+Inf", 0.0) - before.get("+Inf", 0.0)
    over -= now.get("0.025", 0.0) - before.get("0.025", 0.0)
    worst = "-"
    for bound in bounds:  # the smallest bound that holds every new pause
        if now[bound] - before.get(bound, 0.0) == now["+Inf"] - before.get("+Inf", 0.0):
            worst = bound
            break
    return int(over), worst


async def sampler(
    pid: int, data: Path, http: httpx.AsyncClient, start: float, stop: trio.Event, tally: Tally
) -> None:
    seen_pauses: dict[str, float] = {}
    while not stop.is_set():
        await trio.sleep(WINDOW)
        window, tally.current = tally.current, Window((trio.current_time() - start) / 60)
        window.at = tally.current.at
        window.rss_kib = rss_kib(pid)
        window.fds = len(os.listdir(f"/proc/{pid}/fd"))
        window.db_kib = await trio.to_thread.run_sync(database_sizes, data)
        try:
            metrics = (await http.get("/metrics")).text
            found = re.search(r"^canopy_fanout_topics (\S+)$", metrics, re.M)
            window.topics = int(float(found.group(1))) if found else -1
            pauses = gc_buckets(metrics)
            window.gc_long, window.gc_worst = gc_since(seen_pauses, pauses)
            seen_pauses = pauses
        except httpx.HTTPError:
            window.topics = -1
        tally.windows.append(window)
        print(
            f"{window.at:6.1f} min  rss {window.rss_kib / 1024:7.1f} MiB  fds {window.fds:5d}"
            f"  db {sum(window.db_kib.values()) / 1024:7.1f} MiB  topics {window.topics:6d}"
            f"  GET p50 {window.p(0.5):5.1f} p99 {window.p(0.99):6.1f} ms"
            f"  ({len(window.get_ms)} ok, {window.get_errors} errors)"
            f"  gc>25ms {window.gc_long} (longest <= {window.gc_worst} s)"
            f"  load's own gc {window.own_gc_ms:.0f} ms",
            flush=True,
        )


class OwnPauses:
    """The load generator's own collections, longest per window: a pause here delays
    the answers it times, and would pass for the server's."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            took = (time.perf_counter() - self._started) * 1000
            window = self.tally.current
            window.own_gc_ms = max(window.own_gc_ms, took)


async def drive(port: int, pid: int, data: Path, args: argparse.Namespace, tally: Tally) -> None:
    scale = args.scale
    # The generator's heap holds thousands of tasks and connections: its collections
    # are kept rare and short (what was made so far is frozen), and timed.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    gc.callbacks.append(OwnPauses(tally))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        (await client.put(f"/stock/{SKU}", json={"available": 10**9})).raise_for_status()
        stop = trio.Event()
        start = trio.current_time()
        counter = iter(range(10**9))
        async with trio.open_nursery() as nursery:
            http = Http(port)
            await nursery.start(http.run)
            async with trio.open_nursery() as load:
                load.start_soon(sampler, pid, data, client, start, stop, tally)
                load.start_soon(paced, 180 * scale, stop, lambda: get_hello(http, tally), load)
                load.start_soon(paced, 66 * scale, stop, lambda: enqueue(http, tally), load)
                load.start_soon(paced, 12 * scale, stop, lambda: place_order(http, tally), load)
                load.start_soon(
                    paced, 180 * scale, stop, lambda: publish(http, tally, next(counter)), load
                )
                for n in range(int(300 * scale)):
                    load.start_soon(subscriber, port, n, stop, tally)
                load.start_soon(slow_consumers, port, stop, tally)
                await trio.sleep(args.warmup * 60)
                if args.tracemalloc:
                    os.kill(pid, signal.SIGUSR2)
                if args.garbage:
                    os.kill(pid, signal.SIGUSR1)
                await trio.sleep(args.minutes * 60)
                if args.tracemalloc:
                    os.kill(pid, signal.SIGUSR2)
                if args.garbage:
                    os.kill(pid, signal.SIGUSR1)
                stop.set()
            nursery.cancel_scope.cancel()
        await settle(client, tally)


async def settle(http: httpx.AsyncClient, tally: Tally) -> None:
    """Until nothing waits or runs (at most a minute), then check the newest jobs and
    orders one by one: each must be there and final."""
    with trio.move_on_after(60):
        while True:
            queues = (await http.get("/jobs/queues")).json()["queues"]
            running = (await http.get("/jobs", params={"state": "running", "limit": 1})).json()
            if not any(q["waiting"] for q in queues.values()) and not running["jobs"]:
                break
            await trio.sleep(1)
    for job in tally.jobs[-500:]:
        found = await http.get(f"/jobs/{job}")
        if found.status_code != 200 or found.json()["state"] not in FINAL_JOB_STATES:
            tally.error("job not final")
    for order in tally.orders[-200:]:
        found = await http.get(f"/orders/{order}")
        if found.status_code != 200 or found.json()["state"] not in ("confirmed", "failed"):
            tally.error("order not final")


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares change per minute."""
    if len(points) < 2:
        return 0.0
    xs, ys = [x for x, _ in points], [y for _, y in points]
    return statistics.linear_regression(xs, ys).slope


def report(tally: Tally, args: argparse.Namespace, log: str, exit_lag: float | None) -> None:
    steady = [w for w in tally.windows if w.at > args.warmup]
    if not steady:
        print("no window after the warm-up")
        return
    base = steady[0].p(0.99) or 1.0
    worst = max(steady, key=lambda w: w.p(0.99))
    rss = slope([(w.at, w.rss_kib) for w in steady])
    late = slope([(w.at, w.rss_kib) for w in steady[len(steady) // 2 :]])
    db = slope([(w.at, sum(w.db_kib.values())) for w in steady])
    errors = [line for line in log.splitlines() if level_of(line) in ("error", "critical")]
    print()
    print(f"after a {args.warmup:g}-minute warm-up, {len(steady)} windows of {WINDOW:g} s:")
    print(
        f"  RSS      {steady[0].rss_kib / 1024:.1f} -> {steady[-1].rss_kib / 1024:.1f} MiB,"
        f" slope {rss:+.0f} KiB/min (target < 100), {late:+.0f} over the second half"
    )
    print(
        f"  database {sum(steady[0].db_kib.values()) / 1024:.1f} -> "
        f"{sum(steady[-1].db_kib.values()) / 1024:.1f} MiB, slope {db:+.0f} KiB/min"
        f"  {steady[-1].db_kib}"
    )
    print(
        f"  fds      {steady[0].fds} -> {steady[-1].fds}; topics {steady[0].topics} -> "
        f"{steady[-1].topics}"
    )
    print(
        f"  GET p99  worst window {worst.p(0.99):.1f} ms at {worst.at:.1f} min (target < 25),"
        f" {worst.p(0.99) / base:.2f}x the first window's {base:.1f} ms;"
        f" p50 {min(w.p(0.5) for w in steady):.1f}-{max(w.p(0.5) for w in steady):.1f} ms"
    )
    print(
        f"  load     {len(tally.jobs)} jobs accepted ({tally.cancelled} cancelled while"
        f" running), {len(tally.orders)} orders, {tally.published} publishes,"
        f" {tally.connects} WebSocket connects, {tally.resumes} resumes"
        f" ({tally.recovered} recovered), {tally.received} messages received,"
        f" {tally.gaps} gaps, {tally.slow_closed} slow consumers abandoned"
    )
    print(
        f"  errors   client side: {tally.errors or 'none'}; server log ERROR lines: {len(errors)}"
    )
    for line in errors[:5]:
        print(f"           {line[:200]}")
    if exit_lag is not None:
        print(f"  exit     {exit_lag:.2f} s after the log's 'stopped' (target < 1)")


def report_growth(snapshots: Path) -> None:
    import tracemalloc

    taken = sorted(snapshots.glob("*.snap"), key=lambda path: int(path.stem))
    if len(taken) < 2:
        print("  tracemalloc: fewer than two snapshots were written")
        return
    first, last = (tracemalloc.Snapshot.load(str(path)) for path in (taken[0], taken[-1]))
    grown = last.compare_to(first, "traceback")
    total = sum(stat.size_diff for stat in grown)
    print(f"  tracemalloc: {total / 1024:+.0f} KiB traced between the two snapshots; the most:")
    for stat in grown[:20]:
        # Allocated where, then called from where (a Traceback runs oldest first).
        frames = reversed(stat.traceback)
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames)
        print(f"    {stat.size_diff / 1024:+9.0f} KiB {stat.count_diff:+8d}  {where}")


def level_of(line: str) -> str:
    try:
        return str(json.loads(line).get("level", ""))
    except (ValueError, AttributeError):
        return "error" if "Traceback" in line else ""


def stop_server(process: subprocess.Popen[bytes], log_path: Path) -> float | None:
    """SIGTERM, then how long after the log said "stopped" (its own time stamp) the
    process was gone."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None
    exited_at = time.time()
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("msg") == "stopped":
            return exited_at - float(record["ts"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every rate")
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace the server's allocations (FRAMES deep; slows it) and print what grew "
        "between the end of the warm-up and the end of the run",
    )
    parser.add_argument(
        "--garbage",
        action="store_true",
        help="print the reference cycles the server left for its collector at the end, "
        "and which kinds of live object it tracks grew in number after the warm-up (a "
        "full collection at each look: not for a run whose latency counts)",
    )
    parser.add_argument(
        "--retention",
        type=float,
        default=300.0,
        help="seconds finished jobs and ended orders are kept (CANOPY_JOB_RESULT_TTL, "
        "CANOPY_ORDERS_RETENTION): short, so that the run reaches the steady state",
    )
    args = parser.parse_args()
    if args.minutes + args.warmup > 240:
        parser.error("at most four hours in all")
    with tempfile.TemporaryDirectory(prefix="canopy-soak-") as tmp:
        workdir = Path(tmp)
        data, log_path, port = workdir / "var", workdir / "server.log", free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(import_root(ROOT)),
            "CANOPY_DATA_DIR": str(data),
            "CANOPY_ACCESS_LOG": "false",
            "CANOPY_ANONYMOUS_PUBLISH": "public.*",
            "CANOPY_JOB_RESULT_TTL": str(args.retention),
            "CANOPY_ORDERS_RETENTION": str(args.retention),
        }
        argv = [sys.executable, "-m", canopy_module(ROOT), "serve", "--bind", f"127.0.0.1:{port}"]
        snapshots = workdir / "snapshots"
        if args.tracemalloc or args.garbage:
            snapshots.mkdir()
            argv[1:3] = ["-c", TRACED_SERVER]
            env.update(SOAK_FRAMES=str(args.tracemalloc), SOAK_SNAPSHOTS=str(snapshots))
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                pinned(0, argv),
                cwd=workdir,
                env=env,
                stdout=log_file,
                stderr=log_file,
                preexec_fn=raise_fd_limit,
            )
        try:
            wait_until_up(port, process)
            if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
                os.sched_setaffinity(0, {1})  # the load on the other core
            tally = Tally()
            print(
                f"soak: {args.warmup:g} + {args.minutes:g} minutes at scale {args.scale:g},"
                f" server pid {process.pid}",
                flush=True,
            )
            trio.run(drive, port, process.pid, data, args, tally)
        finally:
            exit_lag = stop_server(process, log_path)
        report(tally, args, log_path.read_text(errors="replace"), exit_lag)
        if args.tracemalloc:
            report_growth(snapshots)
        if args.garbage:
            report_census(snapshots)


def report_census(snapshots: Path) -> None:
    """The cycles left at the end, and which kinds of tracked object grew in number
    between the end of the warm-up and the end of the run."""
    found = [json.loads((snapshots / f"garbage-{n}.json").read_text()) for n in (0, 1)]
    first, last = found
    print(f"  garbage: {last['objects']} objects in reference cycles; the most:")
    for kind, count in last["kinds"]:
        print(f"    {count:8d}  {kind}")
    print(f"  tracked: {first['tracked']} -> {last['tracked']} objects; the most grown:")
    grown = {k: n - first["census"].get(k, 0) for k, n in last["census"].items()}
    for kind, more in sorted(grown.items(), key=lambda item: -item[1])[:20]:
        print(f"    {more:+8d}  {kind} ({last['census'][kind]})")
    accounts = [malloc_account((snapshots / f"malloc-{n}.txt").read_text()) for n in (0, 1)]
    print("  allocators, end of warm-up -> end of run:")
    for key, before in accounts[0].items():
        after = accounts[1].get(key, 0)
        print(f"    {key:44s} {before:>14,d} -> {after:>14,d} ({after - before:+,d})")


def malloc_account(text: str) -> dict[str, int]:
    """The totals in pymalloc's ``sys._debugmallocstats()`` and glibc's
    ``malloc_stats()``: what each allocator holds from the system and what of it is
    in use."""
    account: dict[str, int] = {}
    pymalloc = (
        "# arenas allocated current",
        "# arenas highwater mark",
        "# bytes in allocated blocks",
        "# bytes in available blocks",
        "unused pools",
        "# bytes lost to quantization",
    )
    arena = "glibc"
    for line in text.splitlines():
        label, _, value = (part.strip() for part in line.rpartition("="))
        number = value.replace(",", "")
        if not number.isdigit():
            if line.startswith("Arena "):
                arena = "glibc " + line.strip(": ").lower()
            elif line.startswith("Total (incl. mmap)"):
                arena = "glibc total"
            continue
        if label in ("system bytes", "in use bytes"):
            account[f"{arena} {label}"] = int(number)
        for name in pymalloc:
            if name in label:
                account["pymalloc " + name.lstrip("# ")] = int(number)
    return account


if __name__ == "__main__":
    main()
