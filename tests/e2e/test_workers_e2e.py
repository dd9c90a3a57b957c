"""``canopy serve`` with ``workers = 2`` on Redis: two processes on one socket share
topics and jobs, a worker that dies is replaced, and SIGTERM drains both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import trio

from canopy.handlers.topics.client import TopicMessage, connect_topics
from tests.e2e.test_metrics import samples
from tests.processes import running_server, write_config
from tests.redis_server import RedisServer

FRESH = httpx.Limits(max_keepalive_connections=0)  # a new connection per request


def on_redis(redis_server: RedisServer, prefix: str) -> dict[str, str]:
    """Jobs and topics in this test's own corner of the shared redis-server."""
    return {
        "CANOPY_STORE": redis_server.url,
        "CANOPY_BROKER": redis_server.url,
        "CANOPY_REDIS_PREFIX": f"{prefix}-{uuid.uuid4().hex[:6]}",
        "CANOPY_ACCESS_LOG": "false",
    }


async def pids_answering(base: str, count: int = 40) -> set[int]:
    """Which processes answer, over ``count`` fresh connections."""
    async with httpx.AsyncClient(base_url=base, limits=FRESH) as client:
        return {(await client.get("/readyz")).json()["pid"] for _ in range(count)}


def test_more_than_one_worker_needs_a_shared_broker(tmp_path: Path) -> None:
    write_config(tmp_path, workers=2)
    result = subprocess.run(
        [sys.executable, "-m", "canopy", "serve"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "CANOPY_BROKER=redis://" in result.stderr


async def test_two_workers_share_topics_and_jobs_and_drain_together(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    write_config(tmp_path, workers=2)
    env = on_redis(redis_server, "workers")
    async with running_server(tmp_path, env=env) as server:
        base = f"http://127.0.0.1:{server.port}"
        with trio.fail_after(15):  # both workers up (the parent listens at once)
            while True:
                if len(pids := await pids_answering(base)) == 2:
                    break
                await trio.sleep(0.1)
        assert server.process.pid not in pids

        # Subscribers land on both processes; every message reaches every one of them.
        received: dict[int, list[int]] = {n: [] for n in range(8)}

        async def subscriber(number: int, *, task_status: trio.TaskStatus[None]) -> None:
            async with (
                connect_topics(f"ws://127.0.0.1:{server.port}/ws") as client,
                client.subscribe("demo.workers") as subscription,
            ):
                task_status.started()
                async for event in subscription:
                    assert isinstance(event, TopicMessage)
                    received[number].append(event.data["n"])

        async with (
            trio.open_nursery() as nursery,
            httpx.AsyncClient(base_url=base, limits=FRESH) as client,
        ):
            for number in received:
                await nursery.start(subscriber, number)
            for n in range(30):
                response = await client.post(
                    "/topics/demo.workers/messages", json={"data": {"n": n}}
                )
                assert response.status_code == 202
            with trio.fail_after(10):
                while True:
                    if all(len(got) >= 30 for got in received.values()):
                        break
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        assert all(got == list(range(30)) for got in received.values())

        async with httpx.AsyncClient(base_url=base, limits=FRESH) as client:
            ids = []
            for n in range(40):
                response = await client.post("/jobs", json={"task": "demo.echo", "args": {"n": n}})
                ids.append(response.json()["id"])
            with trio.fail_after(15):
                for job_id in ids:
                    while True:
                        job = (await client.get(f"/jobs/{job_id}")).json()
                        if job["state"] == "succeeded":
                            break
                        await trio.sleep(0.05)

        # A worker that dies is replaced; the other serves meanwhile.
        victim = sorted(pids)[0]
        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(20):
            while True:
                now = await pids_answering(base)
                if len(now) == 2 and victim not in now:
                    break
                await trio.sleep(0.2)

        assert await server.stop() == 0
        assert all(_gone(pid) for pid in now)  # both workers ended with the parent
    with trio.fail_after(5):
        while True:
            try:
                await trio.open_tcp_stream("127.0.0.1", server.port)
            except OSError:
                break  # refused: nobody listens any more
            await trio.sleep(0.1)


async def test_any_worker_answers_metrics_for_all_of_them(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    write_config(tmp_path, workers=2)
    env = on_redis(redis_server, "metrics")
    readyz = (
        "canopy_http_requests_total",
        frozenset({("route", "/readyz"), ("method", "GET"), ("status", "200")}),
    )
    async with (
        running_server(tmp_path, env=env) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", limits=FRESH) as client,
    ):
        answered: list[int] = []  # the pid of every /readyz that got a 200
        with trio.fail_after(15):
            while len(set(answered)) < 2 or len(answered) < 60:
                response = await client.get("/readyz")
                if response.status_code == 200:
                    answered.append(response.json()["pid"])
        pids = set(answered)

        async def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
            return samples((await client.get("/metrics")).text)

        def running_pids(got: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[int]:
            return {
                int(dict(labels)["pid"])
                for (name, labels), value in got.items()
                if name == "canopy_service_state"
                and ("service", "canopy/http") in labels
                and ("state", "running") in labels
                and value == 1
            }

        # Each scrape lands on either worker; each reports both workers' traffic.
        for _ in range(10):
            got = await scrape()
            assert got[readyz] == len(answered)
            assert ("canopy_http_requests_in_flight", frozenset()) in got  # summed: no pid
        with trio.fail_after(5):  # the other worker's tree, as of its last refresh
            while True:
                if running_pids(await scrape()) == pids:
                    break
                await trio.sleep(0.2)

        # A worker killed: its counts stay in the totals, its live series go.
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(20):
            while True:
                got = await scrape()
                live = running_pids(got)
                if len(live) == 2 and victim not in live:
                    break
                await trio.sleep(0.2)
        assert got[readyz] == len(answered)
        assert await server.stop() == 0


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its parent has not reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
