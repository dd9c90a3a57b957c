"""The tutorial's app (docs/TUTORIAL.md): sign-ups that get a welcome email."""

import time
from dataclasses import dataclass
from typing import Any

import trio
from quart import request

import canopy
from canopy import capabilities


@dataclass(frozen=True)
class ShopSettings:
    outbox: str = canopy.setting("outbox.txt", str, "the file welcome emails go to")


app = canopy.App("shop", settings=ShopSettings)
app.include(capabilities.topics_api)  # /ws, for the page that watches sign-ups
app.topics("shop.signups", policy="drop_oldest", history=50, subscribe="anyone")
app.topics("shop.clock", policy="latest", subscribe="anyone")


@app.get("/")
async def page() -> tuple[str, int, dict[str, str]]:
    html = await trio.Path(__file__).with_name("page.html").read_text()
    return html, 200, {"Content-Type": "text/html; charset=utf-8"}


@app.post("/signups")
async def sign_up() -> tuple[dict[str, str], int]:
    body = await request.get_json(force=True)
    email = body.get("email") if isinstance(body, dict) else None
    if not isinstance(email, str) or "@" not in email:
        raise canopy.ApiError(422, "invalid_email", "email: must be an address with an @")
    job = await welcome.enqueue({"email": email}, idempotency_key=f"welcome:{email}")
    await app.topics.publish("shop.signups", {"email": email})
    return {"job": job.id}, 202


@app.task("shop.welcome", retry=canopy.Retry(max_attempts=5), timeout=30)
async def welcome(args: dict[str, Any]) -> dict[str, str]:
    """Send the welcome email; a failure is retried with backoff, five times at most."""
    async with await trio.Path(app.settings.outbox).open("a") as outbox:
        await outbox.write(f"to {args['email']}: welcome!\n")
    return {"sent_to": args["email"]}


@app.service("clock", restart="permanent", grace=1)
async def clock(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """A supervised service: restarted if it fails, stopped before the hub it uses."""
    task_status.started()
    while True:
        await app.topics.publish("shop.clock", {"at": time.time()})
        await trio.sleep(1)
