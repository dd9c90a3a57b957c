"""Fan-out throughput: Canopy against ``websockets``' ``broadcast()``, Starlette + Uvicorn
and a bare trio-websocket server.

Usage (from the repository root, after ``pip install -e . -r bench/requirements.txt``)::

    python bench/fanout.py [--subscribers 1000] [--broadcasts 200] [--rounds 3] [--idle 10000]

N subscribers connect over WebSocket and wait until the server has registered them;
then one publisher sends B broadcasts of about 100 bytes, and the clock runs until
every subscriber has received every broadcast (each count is checked: none missing,
none extra). Result: delivered messages per second, the median of interleaved
rounds, and its ratio to each baseline. Then ``--idle`` subscribers connect to
Canopy and sit idle, and the server's RSS is read from /proc; then as many again
offering permessage-deflate as browsers do, each sent 5 messages, with
``CANOPY_WS_COMPRESSION`` off and on: memory per connection in each case.

The subscribers are raw sockets that only count frames, so that the load generator
(pinned to the other core) stays cheaper than any server it measures.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import select
import shutil
import socket
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import trio
from _poster import KeepAlive
from _procs import cpu_seconds, free_port, raise_fd_limit, running

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "demo.bench"
PAYLOAD = "x" * 100


@dataclass
class Server:
    name: str
    argv: list[str]
    subscribe: bool  # Canopy needs a subscribe frame; the baselines register on connect
    instances: int = 1  # subscribers spread over them; the publisher uses the first
    env: dict[str, str] = field(default_factory=dict)

    def command(self, port: int) -> list[str]:
        return [arg.replace("{port}", str(port)) for arg in self.argv]


def servers(workdir: Path, redis_url: str | None) -> list[Server]:
    python = sys.executable
    uvicorn = [python, "-m", "uvicorn", "fanout_starlette:app", "--port", "{port}"]
    canopy = [python, "-m", "canopy", "serve", "--bind", "127.0.0.1:{port}"]
    found = [
        Server("canopy", canopy, True),
        Server("starlette+uvicorn[standard]", [*uvicorn, "--log-level", "warning"], False),
        Server("bare trio-websocket", [python, "fanout_trio_ws.py", "{port}"], False),
        Server("websockets broadcast()", [python, "fanout_websockets.py", "{port}"], False),
    ]
    if redis_url is not None:
        broker = {"CANOPY_BROKER": redis_url, "CANOPY_REDIS_PREFIX": "bench"}
        found += [
            Server("canopy, redis broker", canopy, True, 1, broker),
            Server("canopy, redis, 2 instances", canopy, True, 2, broker),
        ]
    return found


# What Chrome and Firefox offer on every WebSocket they open.
BROWSER_DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def handshake(path: str, deflate: bool = False) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    offer = BROWSER_DEFLATE if deflate else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{offer}\r\n"
    ).encode()


def client_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    size = len(payload)
    header = bytes([0x81, 0x80 | size]) if size < 126 else bytes([0x81, 0xFE]) + size.to_bytes(2)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return header + mask + masked


@dataclass
class FrameCounter:
    """Counts the text frames in a server's byte stream without decoding them."""

    buffer: bytearray = field(default_factory=bytearray)
    texts: int = 0
    closed: bool = False
    arrivals: list[float] | None = None  # when each text frame was read, if kept

    def feed(self, data: bytes, now: float = 0.0) -> None:
        buffer = self.buffer
        buffer += data
        i, end = 0, len(buffer)
        while end - i >= 2:
            size, head = buffer[i + 1] & 0x7F, 2
            if size == 126:
                if end - i < 4:
                    break
                size, head = int.from_bytes(buffer[i + 2 : i + 4]), 4
            elif size == 127:
                if end - i < 10:
                    break
                size, head = int.from_bytes(buffer[i + 2 : i + 10]), 10
            if end - i < head + size:
                break
            opcode = buffer[i] & 0x0F
            self.texts += opcode == 1
            self.closed |= opcode == 8
            if opcode == 1 and self.arrivals is not None:
                self.arrivals.append(now)
            i += head + size
        del buffer[:i]


@dataclass
class Run:
    expected: int
    total: int
    deflate: bool = False  # subscribers offer permessage-deflate, as browsers do
    ready: int = 0
    done: int = 0
    counts: list[int] = field(default_factory=list)
    all_ready: trio.Event = field(default_factory=trio.Event)
    all_done: trio.Event = field(default_factory=trio.Event)
    finish: trio.Event = field(default_factory=trio.Event)
    finished_at: float = 0.0


async def open_ws(
    port: int, path: str, deflate: bool = False
) -> tuple[trio.SocketStream, FrameCounter]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(handshake(path, deflate))
    data = b""
    while b"\r\n\r\n" not in data:
        data += _handshake_chunk(await stream.receive_some(65536))
    return stream, _upgraded(data)


def _handshake_chunk(chunk: bytes) -> bytes:
    if not chunk:
        raise ConnectionError("closed during the handshake")
    return chunk


def _upgraded(data: bytes) -> FrameCounter:
    """The frames that came with a 101 answer, counted; the status line if not 101."""
    head, _, rest = data.partition(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise ConnectionError(head.split(b"\r\n")[0].decode())
    counter = FrameCounter()
    counter.feed(rest)
    return counter


async def until(stream: trio.SocketStream, counter: FrameCounter, texts: int) -> None:
    while counter.texts < texts and not counter.closed:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        counter.feed(chunk)


async def subscriber(port: int, server: Server, run: Run, limiter: trio.CapacityLimiter) -> None:
    async with limiter:
        stream, counter = await open_ws(port, "/ws", run.deflate)
        if server.subscribe:
            await stream.send_all(client_frame(json.dumps({"op": "subscribe", "topic": TOPIC})))
        await until(stream, counter, 1)  # "subscribed" / "ready"
    async with stream:
        run.ready += 1
        if run.ready == run.total:
            run.all_ready.set()
        await until(stream, counter, 1 + run.expected)
        run.counts.append(counter.texts - 1)
        run.done += 1
        if run.done == run.total:
            run.finished_at = trio.current_time()
            run.all_done.set()
        await run.finish.wait()


async def publish(port: int, server: Server, broadcasts: int) -> None:
    path = "/ws" if server.subscribe else "/ws?role=publisher"
    stream, counter = await open_ws(port, path)
    async with stream:
        await until(stream, counter, 0 if server.subscribe else 1)
        if server.subscribe:
            frames = [{"op": "publish", "topic": TOPIC, "data": PAYLOAD} for _ in range(broadcasts)]
        else:
            frames = [
                {"type": "message", "topic": TOPIC, "offset": n + 1, "epoch": "0", "data": PAYLOAD}
                for n in range(broadcasts)
            ]
        await stream.send_all(b"".join(client_frame(json.dumps(f)) for f in frames))
        await until(stream, counter, broadcasts if server.subscribe else 1)  # the acks


@dataclass
class Paced:
    p50: float
    p99: float
    cpu: float  # the server's CPU seconds over the run


def open_blocking_ws(port: int, path: str) -> tuple[socket.socket, FrameCounter]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(handshake(path))
    data = b""
    while b"\r\n\r\n" not in data:
        data += _handshake_chunk(sock.recv(65536))
    return sock, _upgraded(data)


def paced(port: int, server: Server, pid: int, args: argparse.Namespace) -> Paced:
    """Each subscriber's read time of each message, against the time it was sent.

    Not on Trio: a Trio client reading 1000 sockets spends about 15 ms of its own per
    message, which every server's latency would then show. One thread on epoll reads
    each socket as it becomes readable and notes the time of each frame."""
    subscribers: list[tuple[socket.socket, FrameCounter]] = []
    for _ in range(args.subscribers):
        sock, counter = open_blocking_ws(port, "/ws")
        if server.subscribe:
            sock.sendall(client_frame(json.dumps({"op": "subscribe", "topic": TOPIC})))
        while counter.texts < 1:  # "subscribed" / "ready"
            counter.feed(sock.recv(65536))
        counter.arrivals = []
        sock.setblocking(False)
        subscribers.append((sock, counter))
    path = "/ws" if server.subscribe else "/ws?role=publisher"
    publisher, acks = open_blocking_ws(port, path)
    while not server.subscribe and acks.texts < 1:
        acks.feed(publisher.recv(65536))
    publisher.setblocking(False)
    poll = select.epoll()
    by_fd = {sock.fileno(): (sock, counter) for sock, counter in subscribers}
    by_fd[publisher.fileno()] = (publisher, acks)
    for fd in by_fd:
        poll.register(fd, select.EPOLLIN)
    sent: list[float] = []
    waiting = {sock.fileno() for sock, _ in subscribers}
    cpu = cpu_seconds(pid)
    first = time.monotonic() + args.interval
    deadline = first + args.paced * args.interval + 30
    try:
        while waiting and time.monotonic() < deadline:
            if len(sent) < args.paced:
                due = first + len(sent) * args.interval
                if time.monotonic() >= due:
                    n = len(sent)
                    if server.subscribe:
                        frame = {"op": "publish", "topic": TOPIC, "data": PAYLOAD}
                    else:
                        frame = {"type": "message", "topic": TOPIC, "offset": n + 1}
                        frame.update(epoch="0", data=PAYLOAD)
                    sent.append(time.monotonic())
                    publisher.sendall(client_frame(json.dumps(frame)))
                    continue
                timeout = max(0.0, due - time.monotonic())
            else:
                timeout = 0.1
            for fd, _ in poll.poll(timeout):
                sock, counter = by_fd[fd]
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                counter.feed(data, time.monotonic())
                if counter.arrivals is not None and len(counter.arrivals) >= args.paced:
                    waiting.discard(fd)
        cpu = cpu_seconds(pid) - cpu
    finally:
        poll.close()
        for sock, _ in (*subscribers, (publisher, acks)):
            sock.close()
    if waiting:
        received = collections.Counter(len(c.arrivals or []) for _, c in subscribers)
        raise RuntimeError(
            f"{server.name}: {len(waiting)} of {len(subscribers)} subscribers missed messages; "
            f"{len(sent)} sent; (messages received, subscribers): {sorted(received.items())}"
        )
    latencies = sorted(
        arrived - sent[n]
        for _, counter in subscribers
        for n, arrived in enumerate(counter.arrivals or [])
    )
    return Paced(latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)], cpu)


def measure_paced(server: Server, workdir: Path, args: argparse.Namespace) -> Paced:
    port = free_port()
    env = {**os.environ, "CANOPY_ACCESS_LOG": "false", **server.env}
    with running(server.command(port), port, workdir, env) as process:
        trio.run(fan_out, [port], server, 50, 20)  # warm-up
        return paced(port, server, process.pid, args)


async def connect_all(nursery: trio.Nursery, ports: list[int], server: Server, run: Run) -> None:
    """Connect ``run.total`` subscribers (200 handshakes at a time), spread over
    ``ports``, and wait until all are registered; they stay connected until
    ``run.finish``."""
    limiter = trio.CapacityLimiter(200)
    for n in range(run.total):
        nursery.start_soon(subscriber, ports[n % len(ports)], server, run, limiter)
    await run.all_ready.wait()


async def fan_out(ports: list[int], server: Server, subscribers: int, broadcasts: int) -> float:
    run = Run(broadcasts, subscribers)
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await connect_all(nursery, ports, server, run)
            started = trio.current_time()
            nursery.start_soon(publish, ports[0], server, broadcasts)
            await run.all_done.wait()
            run.finish.set()
    wrong = [n for n in run.counts if n != broadcasts]
    if wrong:
        raise RuntimeError(
            f"{server.name}: {len(wrong)} subscribers got the wrong count {wrong[:5]}"
        )
    return subscribers * broadcasts / (run.finished_at - started)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(server: Server, workdir: Path, subscribers: int, broadcasts: int) -> float:
    """Every instance of ``server`` shares core 0: two instances are not given more CPU
    than one, so the ratio between them is what crossing processes costs."""
    ports = [free_port() for _ in range(server.instances)]
    env = {**os.environ, "CANOPY_ACCESS_LOG": "false", **server.env}
    with ExitStack() as stack:
        for port in ports:
            stack.enter_context(running(server.command(port), port, workdir, env))
        trio.run(fan_out, ports, server, 50, 20)  # warm-up
        return trio.run(fan_out, ports, server, subscribers, broadcasts)


def measure_idle(
    server: Server,
    workdir: Path,
    subscribers: int,
    *,
    deflate: bool = False,
    compression: bool = False,
    messages: int = 0,
) -> tuple[float, float]:
    """The server's RSS before and with ``subscribers`` connected (offering
    permessage-deflate if ``deflate``), each sent ``messages`` broadcasts first."""
    port = free_port()
    env = {
        **os.environ,
        "CANOPY_ACCESS_LOG": "false",
        "CANOPY_WS_COMPRESSION": "true" if compression else "false",
    }
    with running(server.command(port), port, workdir, env) as process:
        before = rss_mib(process.pid)  # taskset execs the server: same PID

        async def sample() -> float:
            run = Run(messages, subscribers, deflate)
            with trio.fail_after(300):
                async with trio.open_nursery() as nursery:
                    await connect_all(nursery, [port], server, run)
                    if messages:
                        nursery.start_soon(publish, port, server, messages)
                        await run.all_done.wait()
                    await trio.sleep(2)
                    rss = rss_mib(process.pid)
                    run.finish.set()
            return rss

        return before, trio.run(sample)


def per_connection_kib(before: float, after: float, subscribers: int) -> float:
    return (after - before) * 1024 / subscribers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=200)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of bursts (0: skip)"
    )
    parser.add_argument("--idle", type=int, default=10_000, help="idle subscribers (0: skip)")
    parser.add_argument("--no-redis", action="store_true", help="skip Canopy on the Redis broker")
    parser.add_argument(
        "--paced",
        type=int,
        default=0,
        metavar="MESSAGES",
        help="instead: --subscribers subscribers, one message every --interval, MESSAGES of "
        "them; each message's latency to each subscriber, p50 and p99, and server CPU",
    )
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between paced sends")
    parser.add_argument(
        "--hold", type=int, default=0, help="subscribed connections to hold (0: skip)"
    )
    parser.add_argument("--hold-seconds", type=float, default=60.0, help="how long to hold them")
    args = parser.parse_args()
    raise_fd_limit()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the servers get core 0
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        for name in ("fanout_starlette.py", "fanout_trio_ws.py", "fanout_websockets.py"):
            shutil.copy(ROOT / "bench" / name, workdir)
        shutil.copy(ROOT / "hypercorn.toml", workdir)
        redis_url = None
        if not args.no_redis and shutil.which("redis-server"):
            redis_port = free_port()
            argv = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"]
            argv += ["--save", "", "--dir", str(workdir)]
            stack.enter_context(running(argv, redis_port, workdir, dict(os.environ), core=1))
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
        candidates = servers(workdir, redis_url)
        if args.paced:
            report_paced([s for s in candidates if s.instances == 1 and not s.env], workdir, args)
            return
        if args.rounds:
            report_bursts(candidates, workdir, args)
        if args.idle:
            report_idle(candidates, workdir, args.idle)
        if args.hold:
            report_hold(candidates[0], workdir, args.hold, args.hold_seconds)


def report_bursts(candidates: list[Server], workdir: Path, args: argparse.Namespace) -> None:
    results: dict[str, list[float]] = {s.name: [] for s in candidates}
    for _ in range(args.rounds):
        for server in candidates:
            results[server.name].append(measure(server, workdir, args.subscribers, args.broadcasts))
    medians = {name: statistics.median(v) for name, v in results.items()}
    print(f"{args.subscribers} subscribers x {args.broadcasts} broadcasts of {len(PAYLOAD)} B")
    for name, median in medians.items():
        runs = ", ".join(f"{v:,.0f}" for v in results[name])
        print(f"    {name:<28} {median:>9,.0f} deliveries/s  (runs: {runs})")
    peers = ("websockets broadcast()", "starlette+uvicorn[standard]", "bare trio-websocket")
    for base in peers:
        print(f"    canopy / {base:<27} {medians['canopy'] / medians[base]:.2f}x")
    for name in ("canopy, redis broker", "canopy, redis, 2 instances"):
        if name in medians:
            ratio = medians[name] / medians["canopy"]
            print(f"    {name} / canopy (memory broker): {ratio:.2f}x")


def report_idle(candidates: list[Server], workdir: Path, count: int) -> None:
    """Memory per connection, Canopy against ``websockets``: idle subscribers whose
    client offers no extension, then ones that offer permessage-deflate as browsers
    do, each sent 5 messages (Canopy with compression off, its default, and on;
    ``websockets`` with its default, compression on)."""
    canopy = candidates[0]
    plain = next(s for s in candidates if s.name == "websockets broadcast()")
    deflating = Server("websockets", [*plain.argv, "deflate"], False)
    offered = "deflate offered, 5 messages"
    cases = [
        ("no extension offered", "canopy", canopy, False, False),
        ("no extension offered", "websockets", plain, False, False),
        (offered, "canopy (compression off)", canopy, True, False),
        (offered, "canopy (CANOPY_WS_COMPRESSION=true)", canopy, True, True),
        (offered, "websockets (its default: deflate)", deflating, True, False),
    ]
    found: dict[str, float] = {}
    print(f"{count} idle subscribers: RSS per connection (server RSS at start -> connected)")
    for case, name, server, deflate, compression in cases:
        before, after = measure_idle(
            server,
            workdir,
            count,
            deflate=deflate,
            compression=compression,
            messages=5 if deflate else 0,
        )
        each = found[f"{case}: {name}"] = per_connection_kib(before, after, count)
        print(f"    {case}: {name:<38} {each:5.1f} KiB  ({before:.0f} -> {after:.0f} MiB)")
    plain_ratio = found["no extension offered: canopy"] / found["no extension offered: websockets"]
    browser_ratio = (
        found[f"{offered}: canopy (compression off)"]
        / found[f"{offered}: websockets (its default: deflate)"]
    )
    print(f"    canopy / websockets, no extension offered: {plain_ratio:.2f}x")
    print(f"    canopy (default) / websockets (default), deflate offered: {browser_ratio:.2f}x")


async def _healthz_latencies(port: int, seconds: float, interval: float) -> list[float]:
    """GET /healthz every ``interval`` on one keep-alive connection: each answer's time."""
    connection = KeepAlive(await trio.open_tcp_stream("127.0.0.1", port))
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    times: list[float] = []
    async with connection.stream:
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            started = time.perf_counter()
            status, _ = await connection.request(request)
            if status != 200:
                raise RuntimeError(f"/healthz answered {status}")
            times.append(time.perf_counter() - started)
            await trio.sleep(interval)
    return times


def report_hold(server: Server, workdir: Path, count: int, seconds: float) -> None:
    """``count`` subscribed connections held for ``seconds`` while /healthz is asked
    every 100 ms: its latency, and the server's RSS."""
    port = free_port()
    env = {**os.environ, "CANOPY_ACCESS_LOG": "false"}
    with running(server.command(port), port, workdir, env) as process:

        async def hold() -> tuple[list[float], float, float]:
            run = Run(0, count)
            with trio.fail_after(seconds + 300):
                async with trio.open_nursery() as nursery:
                    started = trio.current_time()
                    await connect_all(nursery, [port], server, run)
                    connected = trio.current_time() - started
                    latencies = await _healthz_latencies(port, seconds, 0.1)
                    rss = rss_mib(process.pid)
                    run.finish.set()
            return latencies, connected, rss

        latencies, connected, rss = trio.run(hold)
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(
        f"{count} subscribed connections (connected in {connected:.1f} s), held {seconds:.0f} s:"
        f" /healthz p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
        f" max {latencies[-1] * 1000:.1f} ms over {len(latencies)} requests; RSS {rss:.0f} MiB"
    )


def report_paced(candidates: list[Server], workdir: Path, args: argparse.Namespace) -> None:
    runs: dict[str, list[Paced]] = {s.name: [] for s in candidates}
    for _ in range(args.rounds):
        for server in candidates:
            runs[server.name].append(measure_paced(server, workdir, args))
    print(
        f"{args.subscribers} subscribers, one message every {args.interval * 1000:.0f} ms, "
        f"{args.paced} messages, {args.rounds} rounds (each round's figure; latency from "
        "the publisher's send to each subscriber's read)"
    )
    for name, found in runs.items():
        p50 = ", ".join(f"{r.p50 * 1000:.1f}" for r in found)
        p99 = ", ".join(f"{r.p99 * 1000:.1f}" for r in found)
        cpu = ", ".join(f"{r.cpu:.2f}" for r in found)
        print(f"    {name:<28} p50 {p50} ms; p99 {p99} ms; server CPU {cpu} s")
    ours = runs["canopy"]
    for base in ("websockets broadcast()", "starlette+uvicorn[standard]", "bare trio-websocket"):
        theirs = runs[base]
        for label, pick in (("p50", lambda r: r.p50), ("p99", lambda r: r.p99)):
            ratios = [pick(a) / pick(b) for a, b in zip(ours, theirs, strict=True)]
            print(
                f"    canopy / {base:<27} {label} {statistics.median(ratios):.2f}x "
                f"({min(ratios):.2f}-{max(ratios):.2f}x)"
            )


if __name__ == "__main__":
    main()
