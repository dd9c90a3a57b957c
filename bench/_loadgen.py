"""The load generator behind ``bench/load.py``: scenarios that drive a running Canopy,
and what they measured.

Every scenario runs ``operations`` in a nursery of workers until the run's deadline
(``duration``) or its budget of operations (``requests``) is used up, whichever comes
first: a run is always bounded. Operations under way at the deadline finish (within
the request timeout) and count, so the totals match what the server did.

The pace is either a number of workers each sending as fast as answers come
(``concurrency``, a closed loop) or a fixed arrival rate (``rate`` per second, an open
loop: sends are due on a schedule; the workers only bound how many may be
outstanding, and a send that could not leave on time counts as ``late``).

Scenarios (an operation, and what its latency is):

    http-get PATH       one GET; answered
    http-post PATH      one POST of ``body``; answered
    jobs                POST /jobs of ``demo.echo``, then GET /jobs/{id} every 10 ms
                        until it ends: enqueue to seen succeeded
    orders              POST /orders (one item of ``bench-sku``, stocked by the run),
                        then GET /orders/{id} every 10 ms until it is confirmed: the
                        whole pipeline (reserve, charge, confirm); a failed order is
                        an error named by its reason
    ws                  ``subscribers`` WebSockets on one topic and a publisher over
                        HTTP; an operation is one delivery: publish to received

Only loopback addresses are driven unless ``allow_remote`` is set (the bench is a
load and stress tool: it should not be pointed at someone else by accident).
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from canopy.handlers.topics.client import TopicMessage, connect_topics

__all__ = ["SCENARIOS", "LoadError", "Plan", "Result", "check_target", "run"]

SCENARIOS = ("http-get", "http-post", "jobs", "orders", "ws")
ORDER_SKU = "bench-sku"
JOB_POLL = 0.01
TOPIC = "demo.bench"


class LoadError(Exception):
    """The run cannot start (a bad target or plan); nothing was sent."""


@dataclass(frozen=True)
class Plan:
    scenario: str
    url: str
    path: str = "/demo/hello"
    body: Any = None
    duration: float = 10.0
    requests: int = 1_000_000
    concurrency: int = 16
    rate: float | None = None
    subscribers: int = 100
    timeout: float = 10.0
    allow_remote: bool = False


@dataclass
class Result:
    """Everything measured; ``per_second`` holds (operations, errors, latencies) per
    whole second since the start, for the progress display and the plot."""

    scenario: str
    started: float = field(default_factory=time.monotonic)
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    late: int = 0
    per_second: list[tuple[int, int, list[float]]] = field(default_factory=list)

    @property
    def operations(self) -> int:
        return len(self.latencies)

    def ok(self, latency: float) -> None:
        self.latencies.append(latency)
        self._second()[2].append(latency)

    def error(self, kind: str) -> None:
        self.errors[kind] += 1
        second = self._second()
        self.per_second[-1] = (second[0], second[1] + 1, second[2])

    def _second(self) -> tuple[int, int, list[float]]:
        index = int(time.monotonic() - self.started)
        while len(self.per_second) <= index:
            self.per_second.append((len(self.per_second), 0, []))
        return self.per_second[index]

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "scenario": self.scenario,
            "operations": self.operations,
            "seconds": round(self.elapsed, 3),
            "throughput": round(self.operations / self.elapsed, 1) if self.elapsed else 0.0,
            "latency_ms": {
                name: round(1000 * _percentile(ordered, q), 3) if ordered else None
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            },
            "errors": dict(self.errors),
            "late": self.late,
        }


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of them at or below it."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def check_target(url: str, allow_remote: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadError(f"expected an http:// or https:// URL (got {url!r})")
    if allow_remote:
        return
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(parts.hostname, None)}
    except OSError as exc:
        raise LoadError(f"cannot resolve {parts.hostname}: {exc}") from None
    remote = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if remote:
        raise LoadError(
            f"{parts.hostname} is not a loopback address ({', '.join(sorted(remote))}); "
            "pass --allow-remote to load a machine that is not this one"
        )


async def run(plan: Plan, result: Result) -> Result:
    """Run ``plan``, recording into ``result`` (read it while this runs for progress)."""
    check_target(plan.url, plan.allow_remote)
    if plan.scenario not in SCENARIOS:
        raise LoadError(f"unknown scenario {plan.scenario!r} (one of {', '.join(SCENARIOS)})")
    limits = httpx.Limits(
        max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency
    )
    timeout = httpx.Timeout(plan.timeout)
    async with httpx.AsyncClient(base_url=plan.url, limits=limits, timeout=timeout) as client:
        result.started = time.monotonic()
        if plan.scenario == "ws":
            await _ws(plan, client, result)
        else:
            if plan.scenario == "orders":
                stocked = await client.put(f"/stock/{ORDER_SKU}", json={"available": 10**9})
                if stocked.status_code != 200:
                    raise LoadError(f"could not stock {ORDER_SKU}: HTTP {stocked.status_code}")
            operation = {
                "http-get": _http_get,
                "http-post": _http_post,
                "jobs": _job,
                "orders": _order,
            }[plan.scenario]
            await _drive(plan, result, lambda: operation(plan, client, result))
        result.elapsed = time.monotonic() - result.started
    return result


async def _drive(plan: Plan, result: Result, operation: Callable[[], Awaitable[None]]) -> None:
    """Workers taking operations from the budget until the deadline."""
    budget = plan.requests
    deadline = trio.current_time() + plan.duration
    interval = 1.0 / plan.rate if plan.rate else 0.0
    next_due = trio.current_time()

    async def worker() -> None:
        nonlocal budget, next_due
        while budget > 0 and trio.current_time() < deadline:
            if interval:
                due, next_due = next_due, next_due + interval
                if due >= deadline:
                    return
                if trio.current_time() > due + interval:
                    result.late += 1  # the workers are all busy: the system fell behind
                await trio.sleep_until(due)
            budget -= 1
            await operation()

    # No new operation starts after the deadline; those under way finish (and count),
    # within the request timeout: what the server did is what the run reports.
    with trio.move_on_at(deadline + plan.timeout):
        async with trio.open_nursery() as nursery:
            for _ in range(plan.concurrency):
                nursery.start_soon(worker)


async def _timed(
    result: Result, request: Callable[[], Awaitable[httpx.Response]], expect: tuple[int, ...]
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await request()
    except httpx.TimeoutException:
        result.error("timeout")
        return None
    except httpx.HTTPError as exc:
        result.error(type(exc).__name__)
        return None
    if response.status_code not in expect:
        result.error(f"http {response.status_code}")
        return None
    result.ok(time.perf_counter() - started)
    return response


async def _http_get(plan: Plan, client: httpx.AsyncClient, result: Result) -> None:
    await _timed(result, lambda: client.get(plan.path), (200,))


async def _http_post(plan: Plan, client: httpx.AsyncClient, result: Result) -> None:
    await _timed(result, lambda: client.post(plan.path, json=plan.body), (200, 201, 202))


async def _job(plan: Plan, client: httpx.AsyncClient, result: Result) -> None:
    await _until_done(
        result,
        client,
        lambda: client.post("/jobs", json={"task": "demo.echo", "args": {}}),
        done="succeeded",
        failed=lambda job: (
            f"job {job['state']}" if job["state"] in ("failed", "cancelled") else None
        ),
    )


async def _order(plan: Plan, client: httpx.AsyncClient, result: Result) -> None:
    body = {
        "customer": "bench",
        "currency": "EUR",
        "items": [{"sku": ORDER_SKU, "quantity": 1, "unit_price": 100}],
    }
    await _until_done(
        result,
        client,
        lambda: client.post("/orders", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}),
        done="confirmed",
        failed=lambda order: (
            f"order failed: {order['reason']}" if order["state"] == "failed" else None
        ),
    )


async def _until_done(
    result: Result,
    client: httpx.AsyncClient,
    create: Callable[[], Awaitable[httpx.Response]],
    *,
    done: str,
    failed: Callable[[dict[str, Any]], str | None],
) -> None:
    """Create something (202 and a Location), then read it every JOB_POLL seconds until
    its state is ``done`` (one operation, timed from the create) or ``failed`` names
    why it will not be (an error of that kind)."""
    started = time.perf_counter()
    try:
        response = await create()
        if response.status_code != 202:
            result.error(f"{response.request.url.path} http {response.status_code}")
            return
        where = response.headers["location"]
        while True:
            state = (await client.get(where)).json()
            if state["state"] == done:
                break
            if (why := failed(state)) is not None:
                result.error(why)
                return
            await trio.sleep(JOB_POLL)
    except httpx.HTTPError as exc:
        result.error(type(exc).__name__)
        return
    result.ok(time.perf_counter() - started)


async def _ws(plan: Plan, client: httpx.AsyncClient, result: Result) -> None:
    """Subscribers on one topic; a publisher at ``rate`` (or as fast as its
    ``concurrency`` allows) puts its send time in each message."""
    url = plan.url.replace("http", "ws", 1).rstrip("/") + "/ws"
    deadline = trio.current_time() + plan.duration
    published = 0

    async def subscriber(*, task_status: trio.TaskStatus[None]) -> None:
        async with connect_topics(url) as topics, topics.subscribe(TOPIC) as subscription:
            task_status.started()
            async for event in subscription:
                if isinstance(event, TopicMessage) and isinstance(event.data, dict):
                    result.ok(time.time() - event.data["sent"])
                else:
                    result.error("gap")

    async def publish() -> None:
        nonlocal published
        body = {"data": {"sent": time.time()}}
        try:
            response = await client.post(f"/topics/{TOPIC}/messages", json=body)
        except httpx.HTTPError as exc:
            result.error(f"publish {type(exc).__name__}")
            return
        if response.status_code != 202:
            result.error(f"publish http {response.status_code}")
        published += 1

    async with trio.open_nursery() as nursery:
        for _ in range(plan.subscribers):
            await nursery.start(subscriber)
        publishing = replace(
            plan,
            duration=max(0.0, deadline - trio.current_time()),
            requests=max(1, plan.requests // max(plan.subscribers, 1)),
        )
        await _drive(publishing, Result("publish"), publish)
        with trio.move_on_after(plan.timeout):  # the last deliveries
            while True:
                if result.operations + sum(result.errors.values()) >= published * plan.subscribers:
                    break
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()


def to_json(result: Result) -> str:
    return json.dumps(result.summary(), indent=2)
