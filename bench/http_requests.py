"""HTTP throughput: Canopy against FastAPI + Uvicorn, one worker process each, measured by wrk.

Usage (from the repository root, after ``pip install -e . -r bench/requirements.txt``
and ``apt-get install wrk``)::

    python bench/http_requests.py [--seconds 5] [--rounds 3]

Three loads: (a) GET of a small JSON body at 64 connections; (b) 1000 connections on
a route that awaits 100 ms; (c) ``POST /jobs`` at 64 connections: Canopy enqueues into
its SQLite store (committed, ``synchronous=FULL``, before the 202; no runner, as
``CANOPY_RUN_JOBS=false``), FastAPI does an arq enqueue to a redis-server the bench
starts (no arq worker either). Servers are measured in interleaved rounds (this
machine's throughput drifts by 10-15 % over a minute) and each figure is the median of
the rounds; each ratio is printed as the ratio of the medians and as the median of the
rounds' own ratios (the servers of one round ran within seconds of each other).
Baselines: Uvicorn as ``pip install uvicorn[standard]`` gives it (uvloop and
httptools: the headline), and Uvicorn's pure-Python setup (asyncio + h11). The run
is bounded: rounds x loads x servers x seconds, plus start-up.

Each server's CPU per request (user and system time from ``/proc/<pid>/stat`` over the
measured run, divided by its requests) is printed too: steadier than req/s when the
host drifts. ``--compare-to DIR`` adds Canopy from another checkout (a ``git
worktree`` of an older commit, say), run the same way from that checkout's files, so
a change is measured against its base in the same minutes.
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
from dataclasses import dataclass, field
from pathlib import Path

from _procs import (
    canopy_module,
    cpu_seconds,
    free_port,
    import_root,
    pinned,
    raise_fd_limit,
    running,
)

ROOT = Path(__file__).resolve().parent.parent
LOADS = {
    "a": ("small JSON, 64 connections", "/demo/hello", 64),
    "b": ("awaits 100 ms, 1000 connections", "/demo/sleep?ms=100", 1000),
    "c": ("POST /jobs (enqueue), 64 connections", "/jobs", 64),
}
POST_JOB = """\
wrk.method = "POST"
wrk.body = '{"task": "demo.echo", "args": {}}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Server:
    name: str
    argv: list[str]  # "{port}" is replaced by the port of each run
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def command(self, port: int) -> list[str]:
        return [arg.replace("{port}", str(port)) for arg in self.argv]


def servers(workdir: Path, compare_to: Path | None = None) -> list[Server]:
    python = sys.executable
    uvicorn = [python, "-m", "uvicorn", "fastapi_app:app", "--port", "{port}", "--workers", "1"]
    canopy = [python, "-m", "canopy", "serve", "--bind", "127.0.0.1:{port}"]
    other = []
    if compare_to is not None:
        env = {"PYTHONPATH": str(import_root(compare_to))}
        argv = [python, "-m", canopy_module(compare_to), *canopy[3:]]
        other = [Server(f"canopy@{compare_to.name}", argv, workdir, env)]
    # Uvicorn's defaults otherwise (backlog 2048, access log on), as Canopy runs with its own,
    # in every load: until 2026-12-02 load (c) ran Canopy without its log, Uvicorn with its.
    return [
        Server("canopy", canopy, workdir),
        *other,
        Server(
            "uvicorn[standard]",
            [*uvicorn, "--loop", "uvloop", "--http", "httptools"],
            workdir,
        ),
        Server(
            "uvicorn (asyncio+h11)",
            [*uvicorn, "--loop", "asyncio", "--http", "h11"],
            workdir,
        ),
    ]


def run_wrk(
    port: int, path: str, connections: int, seconds: int, script: Path | None = None
) -> tuple[float, int]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        *(["-s", str(script)] if script else []),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(pinned(1, command), capture_output=True, text=True, timeout=seconds + 30)
    out = out.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    failures = re.findall(r"(?:Non-2xx or 3xx responses:|timeout|read|write|connect) (\d+)", out)
    errors = sum(int(n) for n in failures)
    return rps, errors


def measure(
    server: Server, load: str, seconds: int, redis_port: int | None
) -> tuple[float, int, float]:
    """req/s, errors, and CPU µs per request."""
    port = free_port()
    env = {**os.environ, "CANOPY_MAX_INFLIGHT": "8192", **server.env}
    script = None
    with tempfile.TemporaryDirectory() as data:
        if load == "c":
            assert redis_port is not None
            script = server.cwd / "post_job.lua"
            script.write_text(POST_JOB)
            env.update(
                CANOPY_RUN_JOBS="false",
                CANOPY_DATA_DIR=data,  # a fresh job store per run
                CANOPY_MAX_QUEUED="10000000",
                BENCH_REDIS_PORT=str(redis_port),
            )
            subprocess.run(["redis-cli", "-p", str(redis_port), "flushall"], capture_output=True)
        with running(server.command(port), port, server.cwd, env) as process:
            _, path, connections = LOADS[load]
            run_wrk(port, path, connections, 1, script)  # warm-up
            cpu = cpu_seconds(process.pid)
            rps, errors = run_wrk(port, path, connections, seconds, script)
            cpu = cpu_seconds(process.pid) - cpu
            return rps, errors, cpu / (rps * seconds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--loads", default="ab", help="which loads to run: any of a, b, c")
    parser.add_argument("--compare-to", type=Path, help="also run Canopy from this checkout")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/http_requests.py needs wrk: apt-get install wrk")
    if "c" in args.loads and shutil.which("redis-server") is None:
        sys.exit("load c needs redis-server for the arq baseline: apt-get install redis-server")
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        # Everything runs from a scratch directory, with copies of what the servers need.
        shutil.copy(ROOT / "hypercorn.toml", workdir)
        shutil.copy(ROOT / "bench" / "fastapi_app.py", workdir)
        redis_port = None
        if "c" in args.loads:
            redis_port = free_port()
            redis = ["redis-server", "--port", str(redis_port), "--save", "", "--dir", tmp]
            stack.enter_context(running(redis, redis_port, workdir, dict(os.environ), core=1))
        candidates = servers(workdir, args.compare_to and args.compare_to.resolve())
        for load in args.loads:
            title = LOADS[load][0]
            results: dict[str, list[float]] = {s.name: [] for s in candidates}
            errors: dict[str, int] = {s.name: 0 for s in candidates}
            cpu: dict[str, list[float]] = {s.name: [] for s in candidates}
            for _ in range(args.rounds):
                for server in candidates:
                    rps, errs, per_request = measure(server, load, args.seconds, redis_port)
                    results[server.name].append(rps)
                    errors[server.name] += errs
                    cpu[server.name].append(per_request)
            medians = {name: statistics.median(v) for name, v in results.items()}
            print(f"({load}) {title}")
            for name, median in medians.items():
                runs = ", ".join(f"{v:,.0f}" for v in results[name])
                print(
                    f"    {name:<24} {median:>9,.0f} req/s  {statistics.median(cpu[name]):>5.0f} µs"
                    f" CPU/request  (runs: {runs}; errors: {errors[name]})"
                )
            for base in list(medians)[1:]:
                # Also each round's own ratio: the two ran within seconds of each
                # other, so the host's drift over the run cancels out of it.
                paired = [c / b for c, b in zip(results["canopy"], results[base], strict=True)]
                print(
                    f"    canopy / {base:<22} {medians['canopy'] / medians[base]:.2f}x"
                    f"  (round by round: median {statistics.median(paired):.2f}x,"
                    f" {min(paired):.2f}-{max(paired):.2f}x)"
                )


if __name__ == "__main__":
    main()
