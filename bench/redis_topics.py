"""Redis memory as topics pile up: the fan-out broker's keys with one topic per job.

Usage (from the repository root, with ``redis-server`` on the PATH)::

    python bench/redis_topics.py [--topics 300000] [--max-topics 100000]

Every job and order publishes to a topic of its own (``jobs.{id}``), so a busy
deployment makes new topics at its job rate. This publishes ``--topics`` such
topics, two messages each (running, then succeeded), 64 topics to a script as the
runner's batches do, through :class:`canopy.nurseries.redis.RedisBroker` into a
redis-server it starts on a free port in a temp dir (no persistence, stopped by its
PID). It prints, at every third of the way, the keys Redis holds, its memory above
the empty server's, the topics forgotten to make room, and the publish rate.

The baseline in the same run is the broker without a bound (``max_topics`` past the
topic count), as Canopy kept topics before: each topic's keys stayed an hour.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio
from _procs import free_port, import_root, running

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(import_root(ROOT)))

from canopy.nurseries.fanout import TopicRule  # noqa: E402
from canopy.nurseries.redis import RedisBroker, RedisConnection  # noqa: E402

BATCH = 64


async def fill(url: str, topics: int, max_topics: int, label: str) -> list[float]:
    """Publish; return Redis's memory (MiB above empty) at each checkpoint."""
    connection = RedisConnection(url)
    broker = RedisBroker(connection, prefix=f"bench-{label}", max_topics=max_topics)
    rule = TopicRule()
    marks = {topics * k // 3 for k in (1, 2, 3)}
    found: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run)
        client = connection.client
        await client.flushall()
        empty = (await client.info("memory"))["used_memory"]
        started = time.perf_counter()
        done = 0
        while done < topics:
            ids = range(done, min(done + BATCH, topics))
            await broker.publish_many(
                [
                    (f"jobs.{n:024d}", {"state": state, "attempts": 1}, None, rule)
                    for n in ids
                    for state in ("running", "succeeded")
                ]
            )
            before, done = done, ids[-1] + 1
            if any(before < mark <= done for mark in marks):
                used = ((await client.info("memory"))["used_memory"] - empty) / 2**20
                found.append(used)
                elapsed = time.perf_counter() - started
                print(
                    f"  {label:9} {done:>8,} topics: {await client.dbsize():>8,} keys, "
                    f"{used:7.1f} MiB, {broker.evicted:>8,} forgotten, "
                    f"{2 * done / elapsed:>7,.0f} messages/s",
                    flush=True,
                )
        nursery.cancel_scope.cancel()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topics", type=int, default=300_000)
    parser.add_argument("--max-topics", type=int, default=100_000, help="CANOPY_MAX_TOPICS")
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("redis-server is needed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="canopy-bench-") as workdir:
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--dir", workdir]
        with running(argv, port, Path(workdir), {}, core=1):
            url = f"redis://127.0.0.1:{port}/0"
            print(f"{args.topics:,} job topics, 2 messages each, {BATCH} topics a script")
            unbounded = trio.run(fill, url, args.topics, args.topics + 1, "unbounded")
            bounded = trio.run(fill, url, args.topics, args.max_topics, "bounded")
    print(f"Redis memory, bounded to {args.max_topics:,} topics / unbounded:")
    for third, (ours, theirs) in enumerate(zip(bounded, unbounded, strict=True), 1):
        print(f"  after {third}/3 of the topics: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
