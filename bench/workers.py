"""Several processes: ``canopy serve`` with ``workers = 2`` against ``workers = 1``.

Usage (from the repository root, after ``pip install -e . -r bench/requirements.txt``
and ``apt-get install wrk redis-server``)::

    python bench/workers.py [--seconds 5] [--rounds 3] [--ms 2]

The route, ``GET /demo/work?ms=2``, burns 2 ms of CPU per request, so that the
server's work dominates and wrk's own (one thread) stays small: on two cores, one
worker can use one and two workers both. ``workers > 1`` needs a shared broker, so
both configurations run on a redis-server the bench starts (``CANOPY_BROKER``).
The route answers with its process's pid; wrk counts the answers per pid, which
gives how evenly the kernel spread the connections' requests over the workers.
Interleaved rounds; each prints its own ratio, and the summary the median and the
range. Bounded: rounds x 2 x (seconds + start-up).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _procs import canopy_module, free_port, raise_fd_limit, running

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 64
# Counts the answers per pid (the route's body says which process served it).
COUNT_PIDS = """\
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body)
  local pid = body:match('"pid":%s*(%d+)')
  if pid then counts[pid] = (counts[pid] or 0) + 1 end
end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for pid, n in pairs(thread:get("counts")) do io.write(string.format("pid %s %d\\n", pid, n)) end
  end
end
"""
CONFIG = """\
bind = ["127.0.0.1:{port}"]
worker_class = "trio"
workers = {workers}
"""


def measure(
    workdir: Path, workers: int, ms: int, seconds: int, redis_url: str
) -> tuple[float, int, dict[str, int]]:
    """req/s, errors, and the answers per pid."""
    port = free_port()
    config = workdir / f"workers-{workers}.toml"
    config.write_text(CONFIG.format(port=port, workers=workers))
    env = {
        **os.environ,
        "CANOPY_BROKER": redis_url,
        "CANOPY_ACCESS_LOG": "false",
        "CANOPY_TICKER_RATE": "0",  # the showcase's market feed: background load
        "CANOPY_DATA_DIR": str(workdir / f"var-{workers}"),
    }
    argv = [sys.executable, "-m", canopy_module(ROOT), "serve", "--config", str(config)]
    script = workdir / "count_pids.lua"
    script.write_text(COUNT_PIDS)
    url = f"http://127.0.0.1:{port}/demo/work?ms={ms}"
    with running(argv, port, workdir, env, core="0,1"):
        wrk(url, 1, script)  # warm-up: every worker up and answering
        out = wrk(url, seconds, script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    failures = re.findall(r"(?:Non-2xx or 3xx responses:|timeout|read|write|connect) (\d+)", out)
    per_pid = {pid: int(n) for pid, n in re.findall(r"^pid (\d+) (\d+)$", out, flags=re.MULTILINE)}
    return rps, sum(int(n) for n in failures), per_pid


def wrk(url: str, seconds: int, script: Path) -> str:
    command = [
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30).stdout


def unevenness(per_pid: dict[str, int], workers: int) -> float:
    """How far the busiest or idlest worker is from an even share (0.1: 10 %)."""
    counts = list(per_pid.values()) + [0] * (workers - len(per_pid))
    even = sum(counts) / workers
    return max(abs(n - even) for n in counts) / even if even else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--ms", type=int, default=2, help="CPU milliseconds per request")
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"bench/workers.py needs {tool}: apt-get install {tool}")
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        redis_port = free_port()
        redis = ["redis-server", "--port", str(redis_port), "--save", "", "--dir", tmp]
        stack.enter_context(running(redis, redis_port, workdir, dict(os.environ), core="0,1"))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        results: dict[int, list[float]] = {1: [], 2: []}
        spread: list[float] = []
        for round_ in range(1, args.rounds + 1):
            for workers in (1, 2):
                rps, errors, per_pid = measure(workdir, workers, args.ms, args.seconds, redis_url)
                results[workers].append(rps)
                shares = ", ".join(f"{n:,}" for n in sorted(per_pid.values(), reverse=True))
                line = f"round {round_}: workers = {workers}: {rps:,.0f} req/s, errors {errors}"
                if workers == 2:
                    spread.append(unevenness(per_pid, workers))
                    line += f"; answers per worker {shares} ({spread[-1]:.0%} off even)"
                print(line, flush=True)
        paired = [two / one for one, two in zip(results[1], results[2], strict=True)]
        shape = f"{CONNECTIONS} connections, {args.seconds} s x {args.rounds} rounds"
        print(f"GET /demo/work?ms={args.ms}, {shape}")
        for workers, runs in results.items():
            listed = ", ".join(f"{v:,.0f}" for v in runs)
            print(
                f"    workers = {workers}: median {statistics.median(runs):,.0f} req/s ({listed})"
            )
        print(
            f"    workers = 2 / workers = 1: median {statistics.median(paired):.2f}x"
            f" ({min(paired):.2f}-{max(paired):.2f}x round by round)"
        )
        print(f"    spread over the 2 workers: {max(spread):.0%} off even at worst")


if __name__ == "__main__":
    main()
