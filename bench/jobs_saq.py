"""Peer for bench/jobs.py: a SAQ worker with one no-op task (``saq jobs_saq.settings``)."""

import os
from typing import Any

from saq import Queue


async def noop(ctx: dict[str, Any]) -> None:
    return None


settings = {
    "queue": Queue.from_url(f"redis://127.0.0.1:{os.environ['BENCH_REDIS_PORT']}"),
    "functions": [noop],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "16")),
}
