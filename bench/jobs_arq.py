"""Peer for bench/jobs.py: an arq worker with one no-op task (``arq jobs_arq.WorkerSettings``)."""

import os
from typing import Any

from arq.connections import RedisSettings


async def noop(ctx: dict[str, Any]) -> None:
    return None


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings(port=int(os.environ["BENCH_REDIS_PORT"]))
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "16"))
