"""A small service that shows request handling as structured concurrency.

``quote`` asks three simulated back-ends at once (all-or-nothing: one failure
cancels the other two) and hedges the price lookup across two replicas (first
wins, the loser is cancelled). ``hello``, ``sleep`` and ``work`` are the benchmark
routes.
Back-end latencies are injectable so the behaviour can be shown and tested.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import Any

import trio
from quart import Blueprint, request, websocket

from canopy.nurseries import first_completed, gather

from ._errors import ApiError
from ._requests import bad_parameter, int_arg, json_object
from ._routes import deadline
from .grants import TokenIssuer

__all__ = ["DemoService", "UpstreamError", "create_blueprint"]

MAX_SLEEP_MS = 60_000
# /demo/work holds the loop while it burns CPU: bounded, as one request there delays
# every other request of its process by as much.
MAX_WORK_MS = 50
BACKENDS = ("price", "stock", "tax")


class UpstreamError(Exception):
    """A simulated back-end failed."""

    def __init__(self, backend: str) -> None:
        super().__init__(f"{backend} back-end failed")
        self.backend = backend


@dataclass
class DemoService:
    """Pure Trio: usable from any ``trio.run`` program."""

    latency: float = 0.005
    replica_latencies: tuple[float, float] = (0.02, 0.005)

    async def sleep(self, ms: int) -> dict[str, int]:
        await trio.sleep(ms / 1000)
        return {"slept_ms": ms}

    def work(self, ms: int) -> dict[str, int]:
        """Burn ``ms`` of this thread's CPU time without yielding: what a handler that
        computes costs. Says which process did it (the workers benchmark counts)."""
        until = time.thread_time() + ms / 1000
        while time.thread_time() < until:
            pass
        return {"worked_ms": ms, "pid": os.getpid()}

    async def quote(
        self, sku: str, *, fail: str | None = None, slow: str | None = None
    ) -> dict[str, Any]:
        price, stock, tax = await gather(
            partial(self._hedged_price, sku, fail, slow),
            partial(self._backend, "stock", sku, fail, slow),
            partial(self._backend, "tax", sku, fail, slow),
        )
        return {"sku": sku, "price": price, "in_stock": stock, "tax": tax}

    async def _hedged_price(self, sku: str, fail: str | None, slow: str | None) -> int:
        replicas = [partial(self._replica, i, sku, fail, slow) for i in range(2)]
        return await first_completed(*replicas)

    async def _replica(self, index: int, sku: str, fail: str | None, slow: str | None) -> int:
        await trio.sleep(10.0 if slow == "price" else self.replica_latencies[index])
        if fail == "price":
            raise UpstreamError("price")
        return 1000 + len(sku)

    async def _backend(self, name: str, sku: str, fail: str | None, slow: str | None) -> Any:
        await trio.sleep(10.0 if slow == name else self.latency)
        if fail == name:
            raise UpstreamError(name)
        return True if name == "stock" else 0.2


def create_blueprint(service: DemoService, issuer: TokenIssuer | None = None) -> Blueprint:
    """``/demo/*``; ``issuer`` tells the topics page what a visitor without a token
    may watch and publish to (nothing without the topics capability)."""
    blueprint = Blueprint("demo", __name__, url_prefix="/demo")

    @blueprint.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @blueprint.get("/sleep")
    async def sleep() -> dict[str, int]:
        return await service.sleep(int_arg("ms", 100, 0, MAX_SLEEP_MS))

    @blueprint.get("/work")
    async def work() -> dict[str, int]:
        return service.work(int_arg("ms", 2, 0, MAX_WORK_MS))

    @blueprint.post("/json")
    async def echo_json() -> dict[str, Any]:
        body = await json_object()
        return {"received": body, "bytes": request.content_length or 0}

    @blueprint.websocket("/echo")
    async def echo() -> None:
        while True:
            await websocket.send(await websocket.receive())

    page = (resources.files("canopy.handlers") / "pages" / "topics.html").read_text()

    @blueprint.get("/topics")
    async def topics_page() -> tuple[str, int, dict[str, str]]:
        """A page that watches a topic from the browser (``?topic=``) with canopy.js."""
        grants = {
            "subscribe": list(issuer.anonymous_subscribe) if issuer else [],
            "publish": list(issuer.anonymous_publish) if issuer else [],
        }
        # In a <script> element, "</" would end it: JSON may spell "<" as \u003c.
        embedded = json.dumps(grants).replace("<", "\\u003c")
        html = page.replace("{{grants}}", embedded)
        return html, 200, {"Content-Type": "text/html; charset=utf-8"}

    @blueprint.get("/quote/<sku>")
    @deadline(2.0)
    async def quote(sku: str) -> dict[str, Any]:
        fail, slow = request.args.get("fail"), request.args.get("slow")
        for name, value in (("fail", fail), ("slow", slow)):
            if value is not None and value not in BACKENDS:
                raise bad_parameter(name, f"one of {', '.join(BACKENDS)}")
        try:
            return await service.quote(sku, fail=fail, slow=slow)
        except UpstreamError as exc:
            raise ApiError(502, "upstream_failed", str(exc), backend=exc.backend) from exc

    return blueprint
