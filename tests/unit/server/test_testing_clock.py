"""canopy.testing on pytest-trio's autojump_clock: minutes of backoff, schedules and
deadlines pass at once, and no deadline fires that should not."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
import trio
import trio.testing

import canopy
from canopy import capabilities
from canopy.testing import serve_app

MINUTE = 60.0


def clocked() -> canopy.App:
    app = canopy.App("clocked")
    app.include(capabilities.topics_api)
    app.topics("clocked.*", subscribe="anyone", publish="anyone")
    attempts: list[float] = []
    ticks: list[float] = []

    # A minute, then two, then four of backoff: seven minutes before it succeeds.
    @app.task("clocked.flaky", retry=canopy.Retry(max_attempts=4, base=MINUTE, jitter=False))
    async def flaky(args: dict[str, Any]) -> dict[str, int]:
        attempts.append(trio.current_time())
        if len(attempts) < 4:
            raise RuntimeError("not yet")
        return {"attempts": len(attempts)}

    @app.periodic("clocked.hourly", every=3600)
    async def hourly(args: dict[str, Any]) -> None:
        ticks.append(trio.current_time())

    @app.post("/flaky")
    async def start() -> tuple[dict[str, str], int]:
        job = await flaky.enqueue({})
        return {"job": job.id}, 202

    @app.post("/later")
    async def later() -> tuple[dict[str, str], int]:
        job = await flaky.enqueue({}, delay=3 * MINUTE)
        return {"job": job.id}, 202

    @app.get("/slow/<int:seconds>")
    async def slow(seconds: int) -> dict[str, int]:
        await trio.sleep(seconds)
        return {"slept": seconds}

    app.extensions["attempts"] = attempts
    app.extensions["ticks"] = ticks
    return app


async def test_a_retry_backoff_of_minutes_passes_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = clocked()
    started = time.monotonic()
    async with serve_app(app) as served:
        assert served.port is None and served.socket_path is not None
        response = await served.http.post("/flaky")
        assert response.status_code == 202
        with trio.fail_after(10 * MINUTE):
            await served.run_jobs()
        job = await app.jobs.get(response.json()["job"])
        assert job is not None and job.state is canopy.JobState.SUCCEEDED
        assert job.result == {"attempts": 4}
        attempts = app.extensions["attempts"]
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        # Each retry waits its backoff on the jumping clock, give or take a runner's poll.
        assert [round(gap / MINUTE) for gap in gaps] == [1, 2, 4]
    assert time.monotonic() - started < 20  # seven minutes of backoff took no real time


async def test_a_delayed_job_and_a_schedule_come_due_as_the_clock_jumps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = clocked()
    async with serve_app(app) as served:
        asked = trio.current_time()
        job_id = (await served.http.post("/later")).json()["job"]
        await trio.sleep(MINUTE)
        job = await app.jobs.get(job_id)
        assert job is not None and job.state is canopy.JobState.SCHEDULED
        with trio.fail_after(20 * MINUTE):
            assert (await app.jobs.wait(job_id)).state is canopy.JobState.SUCCEEDED
        first = app.extensions["attempts"][0]
        assert 3 * MINUTE <= first - asked < 3 * MINUTE + 5
        await trio.sleep(3 * 3600)
        ticks = app.extensions["ticks"]
        assert 3 <= len(ticks) <= 4
        # One job per tick, an hour apart on the same clock as the test's.
        assert [round((b - a) / 3600) for a, b in itertools.pairwise(ticks)] == [1] * (
            len(ticks) - 1
        )


async def test_deadlines_fire_on_the_jumping_clock_and_only_when_due(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = clocked()
    async with serve_app(app, request_timeout=30.0) as served:
        assert (await served.http.get("/slow/20")).json() == {"slept": 20}
        response = await served.http.get("/slow/40")
        assert response.status_code == 504
        assert response.json()["error"] == "deadline_exceeded"
        # Two hundred requests, each a write to SQLite: a thread hop the clock could
        # not see would let it jump to the next deadline (a request's) and fire it.
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(_enqueue_many, served.http, 50)
        with trio.fail_after(10 * MINUTE):
            await served.run_jobs()


async def _enqueue_many(http: Any, count: int) -> None:
    for _ in range(count):
        response = await http.post("/flaky")
        assert response.status_code == 202, response.text


async def test_topics_on_the_jumping_clock(autojump_clock: trio.testing.MockClock) -> None:
    app = clocked()
    async with serve_app(app) as served, served.topics() as client:
        async with client.subscribe("clocked.news") as sub:
            await trio.sleep(MINUTE)  # idle past the keep-alive: the socket stays up
            await client.publish("clocked.news", {"n": 1})
            with trio.fail_after(5):
                event = await sub.receive()
        assert event.data == {"n": 1}


async def test_a_socket_for_other_clients_on_the_real_clock() -> None:
    async with serve_app(clocked()) as served:
        assert served.socket_path is None and served.port is not None
        stream = await served.connect()
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some():
                    reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")


async def test_base_url_says_why_there_is_none_on_a_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serve_app(clocked()) as served:
        with pytest.raises(RuntimeError, match="Unix socket"):
            _ = served.base_url


async def test_the_wall_clock_follows_trios_only_inside_the_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = canopy.nurseries.wall_time()
    assert abs(before - time.time()) < 1 and not canopy.nurseries.runs_inline()
    with canopy.nurseries.follow_trio_clock():
        assert canopy.nurseries.runs_inline()
        start = canopy.nurseries.wall_time()
        await trio.sleep(3600)
        assert canopy.nurseries.wall_time() - start == pytest.approx(3600)
    assert abs(canopy.nurseries.wall_time() - time.time()) < 1
    assert not canopy.nurseries.runs_inline()


def test_outside_a_run_the_wall_clock_is_unix_time() -> None:
    assert abs(canopy.nurseries.wall_time() - time.time()) < 1
    assert not canopy.nurseries.runs_inline()
