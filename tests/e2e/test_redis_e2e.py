"""A real server on a real Redis that goes away mid-load: it says so, refuses rather
than loses, and recovers by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.processes import running_server, write_config
from tests.redis_server import RedisServer, free_port


async def test_a_redis_restart_mid_load_loses_no_accepted_job(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    write_config(tmp_path)
    env = {"CANOPY_STORE": redis.url, "CANOPY_ACCESS_LOG": "false"}
    accepted: list[str] = []
    codes: dict[int, int] = {}
    try:
        async with running_server(tmp_path, env=env) as server:
            base = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                load_done = trio.Event()

                async def load() -> None:
                    n = 0
                    while not load_done.is_set():
                        n += 1
                        body = {"task": "demo.echo", "args": {"n": n}}
                        try:
                            response = await client.post("/jobs", json=body)
                        except httpx.HTTPError:
                            codes[0] = codes.get(0, 0) + 1
                            continue
                        codes[response.status_code] = codes.get(response.status_code, 0) + 1
                        if response.status_code == 202:
                            accepted.append(response.json()["id"])
                        else:
                            assert response.status_code == 503, response.text
                            assert response.json()["error"] == "store_unavailable"
                        await trio.sleep(0.005)

                async def wait_ready(status: int, seconds: float) -> None:
                    with trio.fail_after(seconds):
                        while True:
                            if (await client.get("/readyz")).status_code == status:
                                return
                            await trio.sleep(0.05)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(load)
                    await trio.sleep(0.5)
                    redis.stop()  # SIGTERM: Redis writes its AOF and exits
                    await wait_ready(503, seconds=5)
                    before = codes.get(503, 0)
                    await trio.sleep(1.0)
                    assert codes.get(503, 0) > before  # refused while Redis was away
                    redis.start()
                    await wait_ready(200, seconds=15)
                    served = codes[202]
                    await trio.sleep(0.5)
                    assert codes[202] > served  # accepting again
                    load_done.set()

                assert 0 < len(accepted) < 1000  # all fit in one listing below
                with trio.fail_after(20):
                    while True:
                        response = await client.get(
                            "/jobs", params={"state": "succeeded", "limit": 1000}
                        )
                        done = {job["id"] for job in response.json()["jobs"]}
                        if done >= set(accepted):
                            break
                        await trio.sleep(0.2)
            assert codes.get(0, 0) == 0  # the server itself never stopped answering
            assert await server.stop() == 0
            # The outage in the log: when it started, with its cause, and when it ended,
            # not a line per failed claim.
            claims = [e["msg"] for e in server.logs if e["msg"].startswith("claim failed")]
            assert 2 <= len(claims) <= 3, claims
            assert claims[-1].startswith("claim failed: works again after ")
    finally:
        redis.stop(signal.SIGKILL)


def test_a_redis_that_is_down_at_start_fails_the_start_in_one_line(tmp_path: Path) -> None:
    write_config(tmp_path)
    env = {**os.environ, "CANOPY_STORE": f"redis://127.0.0.1:{free_port()}/0"}
    result = subprocess.run(
        [sys.executable, "-m", "canopy", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("canopy: service canopy/services/redis/connection failed: ")
    assert "Unable to establish a connection" in line
