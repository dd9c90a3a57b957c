"""A user's app, as the tutorial builds one: it sits beside its own ``server.py`` and
``handlers/`` package, names many a project has, which Canopy must leave to it."""

from dataclasses import dataclass
from typing import Any

import trio

import canopy
import handlers
import server
from canopy import capabilities


@dataclass(frozen=True)
class ShopSettings:
    greeting: str = canopy.setting("hello", str, "what the shop says")


app = canopy.App("shop", settings=ShopSettings)
app.include(capabilities.topics_api)
app.topics("shop.orders.*", policy="drop_oldest", history=500, publish="anyone")


@app.get("/hello/<name>")
async def hello(name: str) -> dict[str, str]:
    return {"said": handlers.greet(app.settings.greeting, name), "server": server.NAME}


@app.get("/boom")
async def boom() -> dict[str, str]:
    raise RuntimeError("a bug in the shop")


@app.task("shop.email", retry=canopy.Retry(max_attempts=3), timeout=30)
async def email(args: dict[str, Any]) -> dict[str, Any]:
    return {"sent_to": args["to"]}


@app.post("/emails")
async def send() -> tuple[dict[str, str], int]:
    job = await email.enqueue({"to": "ann@example.com"})
    return {"job": job.id}, 202


@app.get("/emails/<job_id>")
async def sent(job_id: str) -> dict[str, Any]:
    job = await app.jobs.get(job_id)
    return {"state": job.state.value if job else None, "result": job.result if job else None}


@app.periodic("shop.tick", every=0.3)
async def tick(args: dict[str, Any]) -> None:
    async with await trio.Path("ticks.log").open("a") as log:
        await log.write("tick\n")


@app.service("price-feed")
async def feed(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await trio.sleep_forever()
