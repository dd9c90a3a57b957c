"""The baseline: the same two routes as Canopy's demo, on FastAPI."""

import asyncio

from fastapi import FastAPI

app = FastAPI()


@app.get("/demo/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/demo/sleep")
async def sleep(ms: int = 100) -> dict[str, int]:
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}
