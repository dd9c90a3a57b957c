"""The baseline: the same routes as Canopy's demo and jobs API, on FastAPI.

``POST /jobs`` enqueues with arq (the best-known asyncio job queue) on the Redis at
``BENCH_REDIS_PORT``; it is only mounted when that is set (bench/http_requests.py,
load c).
"""

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

REDIS_PORT = os.environ.get("BENCH_REDIS_PORT")
state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if REDIS_PORT:
        from arq import create_pool
        from arq.connections import RedisSettings

        state["arq"] = await create_pool(RedisSettings(port=int(REDIS_PORT)))
    yield
    if "arq" in state:
        await state["arq"].aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/demo/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/demo/sleep")
async def sleep(ms: int = 100) -> dict[str, int]:
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


class JobRequest(BaseModel):
    task: str
    args: dict[str, Any] = {}


@app.post("/jobs", status_code=202)
async def enqueue(request: JobRequest) -> dict[str, Any]:
    job = await state["arq"].enqueue_job(request.task, **request.args)
    return {"id": job.job_id, "task": request.task, "state": "queued"}
