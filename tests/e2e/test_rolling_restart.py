"""Two Canopy instances on one Redis behind nginx (deploy/nginx.conf), under steady
load, restarted one after the other: no idempotent request fails, no accepted job is
lost, and every WebSocket subscriber reconnects through nginx and resumes with no gap.
"""

from __future__ import annotations

import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import trio

from canopy.handlers.topics.client import TopicMessage, Unrecovered, connect_topics
from tests.nginx_server import running_nginx
from tests.processes import ServerProcess, running_server, write_config
from tests.redis_server import RedisServer, free_port

TOPIC = "demo.rolling"
FAIL_TIMEOUT = 5.0  # deploy/nginx.conf: an instance that failed gets no traffic for 5 s


class Instance:
    """One ``canopy serve`` on a fixed port, restartable in place."""

    def __init__(self, nursery: trio.Nursery, cwd: Path, env: dict[str, str]) -> None:
        self.nursery, self.cwd, self.env = nursery, cwd, env
        self.port = free_port()
        cwd.mkdir()
        write_config(cwd, grace=3.0)
        self.exit_codes: list[int] = []

    async def start(self) -> None:
        self._stop, self._exited = trio.Event(), trio.Event()
        await self.nursery.start(self._run)
        async with httpx.AsyncClient() as client:  # ready: the tree says so
            with trio.fail_after(10):
                while True:
                    ready = await client.get(f"http://127.0.0.1:{self.port}/readyz")
                    if ready.status_code == 200:
                        return
                    await trio.sleep(0.05)

    async def _run(self, task_status: trio.TaskStatus[ServerProcess]) -> None:
        argv = [sys.executable, "-m", "canopy", "serve", "--bind", f"127.0.0.1:{self.port}"]
        async with running_server(self.cwd, env=self.env, argv=argv) as server:
            task_status.started(server)
            await self._stop.wait()
            self.exit_codes.append(await server.stop())
        self._exited.set()

    async def restart(self) -> None:
        self._stop.set()  # SIGTERM: the drain
        await self._exited.wait()
        await self.start()


async def test_a_rolling_restart_behind_nginx_loses_nothing(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    env = {
        "CANOPY_STORE": redis.url,
        "CANOPY_BROKER": redis.url,
        "CANOPY_REDIS_PREFIX": f"roll-{uuid.uuid4().hex[:6]}",
        "CANOPY_ACCESS_LOG": "false",
        "CANOPY_SERVICE_GRACE": "2",
    }
    get_failures: list[str] = []
    gets = 0
    accepted: list[str] = []
    published: list[int] = []
    events: dict[int, list[Any]] = {n: [] for n in range(4)}
    clients: list[Any] = []
    try:
        async with trio.open_nursery() as servers:
            instances = [Instance(servers, tmp_path / name, env) for name in ("a", "b")]
            for instance in instances:
                await instance.start()
            with running_nginx(tmp_path / "nginx", [i.port for i in instances]) as port:
                base = f"http://127.0.0.1:{port}"
                stop_load = trio.Event()

                async def getter(client: httpx.AsyncClient) -> None:
                    nonlocal gets
                    while not stop_load.is_set():
                        try:
                            response = await client.get("/demo/hello")
                            if response.status_code != 200:
                                get_failures.append(f"{response.status_code} {response.text}")
                        except httpx.HTTPError as exc:
                            get_failures.append(repr(exc))
                        gets += 1
                        await trio.sleep(0.005)

                async def enqueuer(client: httpx.AsyncClient) -> None:
                    while not stop_load.is_set():
                        key = uuid.uuid4().hex  # retried with the same key until accepted
                        for _attempt in range(50):
                            try:
                                response = await client.post(
                                    "/jobs",
                                    json={"task": "demo.echo", "args": {"k": key}},
                                    headers={"Idempotency-Key": key},
                                )
                                if response.status_code in (200, 202):
                                    accepted.append(response.json()["id"])
                                    break
                            except httpx.HTTPError:
                                pass
                            await trio.sleep(0.05)
                        else:
                            raise AssertionError(f"enqueue {key} was never accepted")
                        await trio.sleep(0.01)

                async def publisher(client: httpx.AsyncClient) -> None:
                    n = 0
                    while not stop_load.is_set():
                        n += 1
                        try:
                            response = await client.post(
                                f"/topics/{TOPIC}/messages", json={"data": {"n": n}}
                            )
                            if response.status_code == 202:
                                published.append(response.json()["offset"])
                        except httpx.HTTPError:
                            pass
                        await trio.sleep(0.01)

                async def subscriber(number: int, *, task_status: trio.TaskStatus[None]) -> None:
                    async with (
                        connect_topics(f"ws://127.0.0.1:{port}/ws", max_backoff=0.5) as client,
                        client.subscribe(TOPIC) as subscription,
                    ):
                        clients.append(client)
                        task_status.started()
                        async for event in subscription:
                            events[number].append(event)

                async with (
                    httpx.AsyncClient(base_url=base, timeout=10) as http,
                    trio.open_nursery() as listening,
                ):
                    for number in events:
                        await listening.start(subscriber, number)
                    async with trio.open_nursery() as load:  # ends once stop_load is set
                        for _ in range(4):
                            load.start_soon(getter, http)
                        for _ in range(2):
                            load.start_soon(enqueuer, http)
                        load.start_soon(publisher, http)
                        await trio.sleep(1.0)
                        for instance in instances:
                            served = gets
                            await instance.restart()
                            assert gets > served  # traffic went on while it restarted
                            # Until its fail_timeout passes, nginx still avoids the
                            # instance that just came back: wait, as a rolling restart must.
                            await trio.sleep(FAIL_TIMEOUT + 1)
                        stop_load.set()
                    with trio.fail_after(10):  # the last published offsets arrive
                        while True:
                            last = [got[-1].offset if got else 0 for got in events.values()]
                            if min(last) >= published[-1]:
                                break
                            await trio.sleep(0.05)
                    listening.cancel_scope.cancel()

                    states: dict[str, str] = {}

                    async def check(job_ids: list[str]) -> None:
                        for job_id in job_ids:
                            response = await http.get(f"/jobs/{job_id}")
                            states[job_id] = response.json().get("state", response.text)

                    with trio.fail_after(30):
                        while True:
                            async with trio.open_nursery() as checkers:
                                for start in range(8):
                                    checkers.start_soon(check, accepted[start::8])
                            if set(states.values()) == {"succeeded"}:
                                break
                            await trio.sleep(0.5)

            assert all(i.exit_codes == [0] for i in instances)  # both drained cleanly
            for instance in instances:
                instance._stop.set()
    finally:
        redis.stop(signal.SIGKILL)

    assert gets > 500 and get_failures == []
    reconnects = sum(client.connects - 1 for client in clients)
    print(f"{gets} GETs, {len(accepted)} jobs, {len(published)} messages, {reconnects} reconnects")
    assert reconnects >= 2  # each instance's subscribers were closed (1001) and came back
    assert all(code == 1001 for client in clients for code in client.close_codes)
    assert accepted and len(set(accepted)) == len(accepted)
    for got in events.values():
        assert not [e for e in got if isinstance(e, Unrecovered)]
        offsets = [e.offset for e in got if isinstance(e, TopicMessage)]
        assert offsets == list(range(offsets[0], offsets[-1] + 1))  # no gap, no duplicate
        assert offsets[-1] >= published[-1]
