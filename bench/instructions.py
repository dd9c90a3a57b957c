"""Instructions per request, counted by callgrind: a change's cost without the host's drift.

Usage (from the repository root; needs ``apt-get install valgrind``)::

    python bench/instructions.py [--load c] [--requests 2000] [--rounds 3] [--compare-to DIR]
    python bench/instructions.py --load a --user-app

This machine's throughput drifts by 10-15 % over a minute, and a change worth 1-2 %
of a request is lost in that. Callgrind counts the instructions the whole server
process executes (Python, Trio, Hypercorn, h11, SQLite's thread; the kernel's share
excluded) while exactly ``--requests`` requests are served over 8 keep-alive
connections from a blocking client, after a warm-up that is not counted. The count
is printed per request for the event loop's thread and for all threads, the lowest
of ``--rounds`` runs. A single run can count up to 2 % more than another of the same
code (a run where the group commit's batches came out smaller, say), but the lowest of
three is steady: the same code in two checkouts, three runs each, came out 0.06 %
apart. A change is measured against its base (``--compare-to``: a ``git worktree`` of
the base commit) by the ratio of their counts, with ``--rounds 3``.

Loads as in ``http_requests.py``: (a) ``GET /demo/hello``; (c) ``POST /jobs`` into a
fresh SQLite store (no runner). ``--user-app`` counts, beside the showcase, a user's
app (``bench/user_app.py``) whose own route answers load (a) the same way. The
simulated ticker feed and the job runner are off, so only requests are counted.
Bounded: under callgrind the server runs about 50 times slower; 2,000 requests take
about 30 s a checkout.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from _procs import canopy_module, free_port, import_root, wait_until_up

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 8
REQUESTS = {
    "a": b"GET /demo/hello HTTP/1.1\r\nHost: bench\r\n\r\n",
    "c": (
        b"POST /jobs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: 34\r\n\r\n"
        b'{"task": "demo.echo", "args": {}}\n'
    ),
}


def _client(port: int, request: bytes, count: int, failures: list[str]) -> None:
    """Send ``count`` requests one after another on one connection, reading each answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        reader = sock.makefile("rb")
        for _ in range(count):
            sock.sendall(request)
            status = reader.readline()
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            reader.read(length)
            if not status.split(b" ")[1].startswith(b"2"):
                failures.append(status.decode(errors="replace").strip())


def _send(port: int, request: bytes, total: int) -> int:
    """Send ``total`` requests (rounded down to a multiple of the connections), spread
    over the connections; how many were sent."""
    failures: list[str] = []
    share = total // CONNECTIONS
    threads = [
        threading.Thread(target=_client, args=(port, request, share, failures))
        for _ in range(CONNECTIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, the first: {failures[0]}")
    return share * CONNECTIONS


def count(checkout: Path, load: str, requests: int, app: str | None = None) -> list[float]:
    """Instructions per request of the server run from ``checkout``, one figure per
    thread: the event loop's first, then the store's and any other worker threads'.
    ``app``: a user's app to serve (from bench/), not the showcase."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        # the showcase's ticker feed off; a user's app has no such setting
        which = {"CANOPY_APP": app} if app else {"CANOPY_TICKER_RATE": "0"}
        if app:
            shutil.copy(ROOT / "bench" / f"{app.split(':')[0]}.py", tmp)
        env = {
            **os.environ,
            **which,
            "PYTHONPATH": str(import_root(checkout)),
            "PYTHONHASHSEED": "0",
            "CANOPY_RUN_JOBS": "false",
            "CANOPY_MAX_QUEUED": "10000000",
            "CANOPY_MAX_INFLIGHT": "8192",
            "CANOPY_DATA_DIR": tmp,
        }
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            canopy_module(checkout),
            "serve",
            "--bind",
            f"127.0.0.1:{port}",
        ]
        shutil.copy(ROOT / "hypercorn.toml", tmp)
        process = subprocess.Popen(
            argv, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_until_up(port, process, timeout=120)
            request = REQUESTS[load]
            _send(port, request, 400)  # warm-up: imports, caches, the store's first pages
            _control("-i", "on", process.pid)
            sent = _send(port, request, requests)
            _control("-i", "off", process.pid)
            _control("-d", process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)
        # The dump taken while counting: callgrind.out.1-01 (the main thread), -02, ...
        # The files written at exit count nothing, as counting was off by then.
        per_thread = []
        for part in sorted(Path(tmp).glob("callgrind.out.1-*")):
            found = re.search(r"^totals: (\d+)", part.read_text(), re.M)
            if found is not None and int(found.group(1)):
                per_thread.append(int(found.group(1)) / sent)
        if not per_thread:
            raise RuntimeError("callgrind wrote no counts")
        return per_thread


def _control(*args: object) -> None:
    subprocess.run(["callgrind_control", *map(str, args)], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", choices=sorted(REQUESTS), default="c")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs per checkout (the lowest counts)"
    )
    parser.add_argument("--compare-to", type=Path, help="another checkout, counted the same way")
    parser.add_argument(
        "--user-app",
        action="store_true",
        help="also count bench/user_app.py, a user's app with the same route (load a)",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench/instructions.py needs valgrind: apt-get install valgrind")
    if args.user_app and args.load != "a":
        sys.exit("--user-app has the route of load (a) alone")
    checkouts: dict[str, tuple[Path, str | None]] = {"canopy": (ROOT, None)}
    if args.compare_to is not None:
        checkouts[f"canopy@{args.compare_to.name}"] = (args.compare_to.resolve(), None)
    if args.user_app:
        checkouts["user app"] = (ROOT, "user_app:app")
    counts: dict[str, list[list[float]]] = {name: [] for name in checkouts}
    for _ in range(args.rounds):
        for name, (checkout, app) in checkouts.items():
            counts[name].append(count(checkout, args.load, args.requests, app))
    request = REQUESTS[args.load].split(b" HTTP")[0].decode()
    print(f"({args.load}) {request}, {args.requests} requests over {CONNECTIONS} connections")
    # The event loop's count is the steady one: the store's thread does more or less
    # work per request as the group commit's batches come out larger or smaller.
    loop: dict[str, float] = {}
    total: dict[str, float] = {}
    for name, runs in counts.items():
        loop[name] = min(threads[0] for threads in runs)
        total[name] = min(sum(threads) for threads in runs)
        listed = ", ".join(
            f"{threads[0] / 1000:,.1f}k + {sum(threads[1:]) / 1000:,.1f}k" for threads in runs
        )
        print(
            f"    {name:<28} loop {loop[name] / 1000:>7,.1f}k, all threads"
            f" {total[name] / 1000:>7,.1f}k instructions/request  (runs, loop + others: {listed})"
        )
    if args.compare_to is not None:
        base = f"canopy@{args.compare_to.name}"
        print(
            f"    canopy / {base}: loop {loop['canopy'] / loop[base]:.4f},"
            f" all threads {total['canopy'] / total[base]:.4f}"
        )
    if args.user_app:
        print(
            f"    user app / canopy: loop {loop['user app'] / loop['canopy']:.4f},"
            f" all threads {total['user app'] / total['canopy']:.4f}"
        )


if __name__ == "__main__":
    main()
