"""The jobs HTTP API against a real server, on each store (SQLite, and Redis through
``CANOPY_STORE``): enqueue, idempotency, errors, cancel, dead letters, workers."""

from __future__ import annotations

import json
import random
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from canopy.handlers.topics import TokenIssuer
from canopy.handlers.topics.client import TopicMessage, connect_topics
from tests.processes import running_server, running_worker, write_config
from tests.redis_server import RedisServer

SECRET = "jobs-e2e-secret-".ljust(40, "x")


@pytest.fixture(autouse=True, params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every server and worker a test starts uses this store (they inherit the env)."""
    if request.param == "redis":
        redis = request.getfixturevalue("redis_server")
        monkeypatch.setenv("CANOPY_STORE", redis.url)
        monkeypatch.setenv("CANOPY_REDIS_PREFIX", f"e2e-{uuid.uuid4().hex[:8]}")
    return str(request.param)


async def wait_for(client: httpx.AsyncClient, path: str, state: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            body = (await client.get(path)).json()
            if body.get("state") == state:
                return body
            await trio.sleep(0.05)


async def test_enqueue_runs_and_reports_the_result(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            response = await client.post("/jobs", json={"task": "demo.echo", "args": {"a": 1}})
            assert response.status_code == 202
            location = response.headers["location"]
            assert location == f"/jobs/{response.json()['id']}"
            done = await wait_for(client, location, "succeeded")
            assert done["result"] == {"a": 1} and done["attempts"] == 1
            # idempotency: the same key returns the original; other args, or another
            # way of running it, conflict
            first = await client.post(
                "/jobs", json={"task": "demo.echo"}, headers={"Idempotency-Key": "k-1"}
            )
            again = await client.post(
                "/jobs", json={"task": "demo.echo"}, headers={"Idempotency-Key": "k-1"}
            )
            assert again.json()["id"] == first.json()["id"]
            conflict = await client.post(
                "/jobs",
                json={"task": "demo.echo", "args": {"x": 2}},
                headers={"Idempotency-Key": "k-1"},
            )
            assert conflict.status_code == 409
            assert conflict.json()["error"] == "idempotency_conflict"
            slower = await client.post(
                "/jobs",
                json={"task": "demo.echo", "timeout": 5},
                headers={"Idempotency-Key": "k-1"},
            )
            assert slower.status_code == 409  # run another way: not the same request
        assert await server.stop() == 0


async def test_an_enqueue_may_set_its_own_run_at_timeout_and_attempts(tmp_path: Path) -> None:
    """The task's defaults are defaults: a job's own timeout and attempts are what its
    runner keeps to (demo.sleep past a 0.2 s timeout, once: a dead letter at once)."""
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            body = {"task": "demo.sleep", "args": {"seconds": 5}, "timeout": 0.2}
            response = await client.post("/jobs", json={**body, "max_attempts": 1})
            job = response.json()
            assert (job["timeout"], job["max_attempts"]) == (0.2, 1)
            dead = await wait_for(client, response.headers["location"], "failed")
            assert dead["attempts"] == 1 and "timed out after 0.2 s" in dead["error"]
            later = time.time() + 3600
            scheduled = await client.post("/jobs", json={"task": "demo.echo", "run_at": later})
            assert scheduled.json()["state"] == "scheduled"
            assert scheduled.json()["run_at"] == later
            past = await client.post("/jobs", json={"task": "demo.echo", "run_at": 1.0})
            await wait_for(client, past.headers["location"], "succeeded")
        assert await server.stop() == 0


QUEUED_APP = """
import canopy
from canopy import capabilities

app = canopy.App("queued")
app.include(capabilities.jobs_api)
app.allow_anonymous("jobs:enqueue:*")
app.queue("mail", concurrency=4)


@app.task("mail.send", queue="mail")
async def send(args):
    return args


@app.task("echo")
async def echo(args):
    return args
"""


async def test_queue_depth_for_an_autoscaler(tmp_path: Path) -> None:
    (tmp_path / "queued.py").write_text(QUEUED_APP)
    serve = [sys.executable, "-m", "canopy", "serve", "queued:app", "--bind", "127.0.0.1:0"]
    env = {"CANOPY_RUN_JOBS": "false"}
    async with running_server(tmp_path, argv=serve, env=env, showcase=False) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/jobs/queues")).json() == {"queues": {}}
            for task in ("echo", "echo", "mail.send"):
                assert (await client.post("/jobs", json={"task": task})).status_code == 202
            # A queue no runner takes: the job would wait for ever.
            lost = await client.post("/jobs", json={"task": "echo", "queue": "mial"})
            assert (lost.status_code, lost.json()["field"]) == (422, "queue")
            await trio.sleep(0.2)
            queues = (await client.get("/jobs/queues")).json()["queues"]
            assert {name: q["waiting"] for name, q in queues.items()} == {"default": 2, "mail": 1}
            assert 0.2 <= queues["default"]["oldest_age"] < 5
        assert await server.stop() == 0


async def test_bad_requests_get_clear_4xx(tmp_path: Path) -> None:
    write_config(tmp_path)
    env = {"CANOPY_MAX_QUEUED": "2", "CANOPY_MAX_BODY_SIZE": "2000"}
    async with running_server(tmp_path, env=env) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            cases = [
                ({"task": "no.such.task"}, 422, "unknown_task", "task"),
                ({"task": "demo.echo", "args": [1, 2]}, 422, "invalid_field", "args"),
                ({"task": "demo.echo", "delay": -1}, 422, "invalid_field", "delay"),
                ({"task": "demo.echo", "delay": 1e300}, 422, "invalid_field", "delay"),
                ({"task": "demo.echo", "dealy": 60}, 422, "invalid_field", "dealy"),
                ({"task": "demo.echo", "run_at": "tomorrow"}, 422, "invalid_field", "run_at"),
                ({"task": "demo.echo", "run_at": 1, "delay": 1}, 422, "invalid_field", "run_at"),
                ({"task": "demo.echo", "timeout": 0}, 422, "invalid_field", "timeout"),
                ({"task": "demo.echo", "max_attempts": 0}, 422, "invalid_field", "max_attempts"),
                ({"task": "demo.echo", "max_attempts": 1.5}, 422, "invalid_field", "max_attempts"),
                ({"args": {}}, 422, "invalid_field", "task"),
            ]
            for body, status, code, field in cases:
                response = await client.post("/jobs", json=body)
                answer = response.json()
                assert (response.status_code, answer["error"]) == (status, code), body
                assert answer["field"] == field and answer["message"], answer
            response = await client.post("/jobs", content=b"{not json")
            assert response.status_code == 400 and response.json()["error"] == "invalid_json"
            response = await client.post("/jobs", content=b"x" * 5000)
            assert response.status_code == 413
            delayed = {"task": "demo.echo", "delay": 60}
            for _ in range(2):
                assert (await client.post("/jobs", json=delayed)).status_code == 202
            full = await client.post("/jobs", json=delayed)
            assert full.status_code == 429 and full.headers["retry-after"] == "1"
            assert (await client.get("/jobs/nope")).status_code == 404
            assert (await client.get("/jobs", params={"state": "weird"})).status_code == 422
            assert (await client.get("/jobs", params={"limit": "0"})).status_code == 422
        assert await server.stop() == 0
    assert not any(entry.get("status", 0) >= 500 for entry in server.logs)


async def test_batch_cancel_and_dead_letter_retry(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            batch = {"jobs": [{"task": "demo.echo", "args": {"n": n}} for n in range(200)]}
            response = await client.post("/jobs/batch", json=batch)
            assert response.status_code == 202
            ids = [item["job"]["id"] for item in response.json()["results"]]
            assert len(set(ids)) == 200
            await wait_for(client, f"/jobs/{ids[-1]}", "succeeded")
            too_many = {"jobs": [{"task": "demo.echo"}] * 1001}
            assert (await client.post("/jobs/batch", json=too_many)).status_code == 422

            waiting = (await client.post("/jobs", json={"task": "demo.echo", "delay": 60})).json()
            cancelled = await client.delete(f"/jobs/{waiting['id']}")
            assert cancelled.json()["state"] == "cancelled"

            failing = (await client.post("/jobs", json={"task": "demo.fail"})).json()
            dead = await wait_for(client, f"/jobs/{failing['id']}", "failed")
            assert dead["attempts"] == 3 and "always fails" in dead["error"]
            listed = (await client.get("/jobs", params={"state": "failed"})).json()["jobs"]
            assert failing["id"] in [job["id"] for job in listed]
            # The 200 of the batch, 64 a page, each page from the last one's "next".
            paged: list[str] = []
            params: dict[str, str] = {"state": "succeeded", "limit": "64"}
            while True:
                page = (await client.get("/jobs", params=params)).json()
                paged += [job["id"] for job in page["jobs"]]
                if page["next"] is None:
                    break
                params["before"] = page["next"]
            assert set(ids) <= set(paged) and len(paged) == len(set(paged))
            for bad in ("yesterday", "nan_x", "1.5", "1.5_"):
                refused = await client.get("/jobs", params={"before": bad})
                assert refused.status_code == 422 and refused.json()["field"] == "before"
            retried = await client.post(f"/jobs/{failing['id']}/retry")
            assert retried.status_code == 202 and retried.json()["attempts"] == 0
            done = await client.post(f"/jobs/{ids[0]}/retry")
            assert done.status_code == 409  # only dead letters are retried
        assert await server.stop() == 0


async def test_separate_worker_runs_jobs_and_hears_a_cancel_over_http(tmp_path: Path) -> None:
    write_config(tmp_path)
    web_env = {"CANOPY_RUN_JOBS": "false"}
    async with (
        running_server(tmp_path, env=web_env) as web,
        running_worker(tmp_path) as worker,
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web.port}") as client:
            echo = await client.post("/jobs", json={"task": "demo.echo", "args": {"k": 1}})
            done = await wait_for(client, echo.headers["location"], "succeeded")
            assert done["result"] == {"k": 1}
            long = await client.post("/jobs", json={"task": "demo.sleep", "args": {"seconds": 30}})
            running = await wait_for(client, long.headers["location"], "running")
            assert running["lease_owner"].startswith("runner-")
            asked = trio.current_time()
            await client.delete(long.headers["location"])
            cancelled = await wait_for(client, long.headers["location"], "cancelled")
            assert trio.current_time() - asked < 1.5
            assert cancelled["attempts"] == 1
        assert await worker.stop() == 0
        assert await web.stop() == 0


@pytest.mark.parametrize("broker", ["redis", "memory"])
async def test_a_separate_workers_job_events_reach_the_web_tiers_subscribers(
    tmp_path: Path, broker: str, request: pytest.FixtureRequest
) -> None:
    """A ``canopy worker``'s jobs publish their events where the web tier's
    subscribers hear them live and find them in the topic's history: through a shared
    Redis broker, or on the memory broker through the web tier's relay socket (the
    worker published nothing before: it had no hub)."""
    write_config(tmp_path)
    shared = {"CANOPY_TOPICS_SECRET": SECRET}
    if broker == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        shared["CANOPY_BROKER"] = redis.url
        shared["CANOPY_REDIS_PREFIX"] = f"events-{uuid.uuid4().hex[:8]}"
    token = TokenIssuer(SECRET).issue("watcher", subscribe=["jobs.*"])
    async with (
        running_server(tmp_path, env={**shared, "CANOPY_RUN_JOBS": "false"}) as web,
        running_worker(tmp_path, shared) as worker,
    ):
        url = f"ws://127.0.0.1:{web.port}/ws?token={token}"
        async with (
            open_websocket_url(url) as ws,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{web.port}") as client,
        ):
            await ws.send_message(json.dumps({"op": "subscribe", "topic": "jobs.*"}))
            with trio.fail_after(5):
                assert json.loads(await ws.get_message())["type"] == "subscribed"
            job = (await client.post("/jobs", json={"task": "demo.echo", "args": {"n": 1}})).json()
            heard = []
            with trio.fail_after(10):
                while heard[-1:] != ["succeeded"]:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "message" and frame["topic"] == f"jobs.{job['id']}":
                        heard.append(frame["data"]["state"])
            assert heard == ["running", "succeeded"]
            history = await client.get(
                f"/topics/jobs.{job['id']}/history", headers={"Authorization": f"Bearer {token}"}
            )
            states = [m["data"]["state"] for m in history.json()["messages"]]
            assert states == ["running", "succeeded"]
    assert not [e for e in web.logs + worker.logs if e.get("level") == "error"]
    assert not [e for e in worker.logs if "not published" in e.get("msg", "")]
    if broker == "memory":
        (said,) = [e for e in worker.logs if "relay socket" in e.get("msg", "")]
        assert said["socket"].endswith("events.sock")


ORDER_STATES = ["pending", "reserved", "paid", "confirmed"]
ORDERS = 30


async def test_orders_a_worker_steps_reach_subscribers_in_order_through_a_sigkill(
    tmp_path: Path,
) -> None:
    """The web tier takes orders, a separate worker runs their steps, and is killed
    mid-run; another takes over. A subscriber of ``orders.*`` on the web tier hears
    every order's states in order, each topic's offsets without a gap, to confirmed.
    On the memory broker (this test) the worker's events come through the relay."""
    write_config(tmp_path)
    common = {"CANOPY_TOPICS_SECRET": SECRET, "CANOPY_JOB_LEASE": "1"}
    slow = {**common, "CANOPY_ORDERS_PAYMENT_LATENCY": "0.3"}  # time to be killed in
    token = TokenIssuer(SECRET).issue("watcher", subscribe=["orders.*"])
    heard: dict[str, list[tuple[int, str]]] = {}
    async with running_server(tmp_path, env={**common, "CANOPY_RUN_JOBS": "false"}) as web:
        base = f"http://127.0.0.1:{web.port}"
        async with (
            connect_topics(f"ws://127.0.0.1:{web.port}/ws", token=token) as topics,
            topics.subscribe("orders.*") as subscription,
            httpx.AsyncClient(base_url=base) as client,
            trio.open_nursery() as nursery,
        ):
            some_paid, all_confirmed = trio.Event(), trio.Event()

            async def listen() -> None:
                async for event in subscription:
                    if isinstance(event, TopicMessage):
                        state = event.data["state"]
                        heard.setdefault(event.topic, []).append((event.offset, state))
                        if state == "paid":
                            some_paid.set()
                        confirmed = sum(1 for e in heard.values() if e[-1][1] == "confirmed")
                        if confirmed == ORDERS:
                            all_confirmed.set()

            nursery.start_soon(listen)
            assert (await client.put("/stock/pear", json={"available": 100})).status_code == 200
            item = {"sku": "pear", "quantity": 1, "unit_price": 100}
            ids: list[str] = []
            for n in range(ORDERS):
                body = {"customer": f"c{n}", "currency": "EUR", "items": [item]}
                placed = await client.post(
                    "/orders", json=body, headers={"Idempotency-Key": f"o{n}"}
                )
                assert placed.status_code == 202
                ids.append(placed.json()["id"])
            async with running_worker(tmp_path, slow) as first:
                with trio.fail_after(10):  # some orders charged, not all
                    await some_paid.wait()
                first.signal(signal.SIGKILL)
                assert await first.wait() == -signal.SIGKILL
            async with running_worker(tmp_path, common) as second:
                with trio.fail_after(30):
                    await all_confirmed.wait()
                assert await second.stop() == 0
            nursery.cancel_scope.cancel()
        assert await web.stop() == 0
    assert sorted(heard) == sorted(f"orders.{order_id}" for order_id in ids)
    for topic, events in heard.items():
        offsets = [offset for offset, _ in events]
        assert offsets == list(range(1, len(offsets) + 1)), (topic, events)  # no gap
        states = [ORDER_STATES.index(state) for _, state in events]
        assert states == sorted(states) and events[-1][1] == "confirmed", (topic, events)


async def test_sigkilled_workers_lose_no_job(tmp_path: Path) -> None:
    write_config(tmp_path)
    concurrency, kills = 16, 3
    env = {"CANOPY_JOB_LEASE": "1", "CANOPY_JOB_CONCURRENCY": str(concurrency)}
    rng = random.Random(1234)
    async with running_server(tmp_path, env={**env, "CANOPY_RUN_JOBS": "false"}) as web:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web.port}") as client:
            batch = [{"task": "demo.sleep", "args": {"seconds": 0.02}} for _ in range(500)]
            ids = []
            for _ in range(2):
                response = await client.post("/jobs/batch", json={"jobs": batch})
                ids += [item["job"]["id"] for item in response.json()["results"]]
            assert len(ids) == 1000
            for _ in range(kills):
                async with running_worker(tmp_path, env) as worker:
                    await trio.sleep(rng.uniform(0.2, 0.6))
                    worker.signal(signal.SIGKILL)
                    assert await worker.wait() == -signal.SIGKILL
            async with running_worker(tmp_path, env) as worker:
                with trio.fail_after(60):
                    while True:
                        done = (
                            await client.get("/jobs", params={"state": "succeeded", "limit": 1000})
                        ).json()["jobs"]
                        if len(done) == 1000:
                            break
                        await trio.sleep(0.2)
                assert await worker.stop() == 0
            assert {job["id"] for job in done} == set(ids)  # none lost
            repeated = [job for job in done if job["attempts"] > 1]
            assert len(repeated) <= concurrency * kills  # only what was in flight at a kill
            assert repeated, "no kill landed while jobs ran: the recovery path went untested"
        assert await web.stop() == 0


async def test_sigterm_releases_a_long_jobs_lease_to_the_next_worker(tmp_path: Path) -> None:
    write_config(tmp_path)
    env = {"CANOPY_SERVICE_GRACE": "0.5", "CANOPY_JOB_LEASE": "10"}
    async with running_server(tmp_path, env={**env, "CANOPY_RUN_JOBS": "false"}) as web:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web.port}") as client:
            long = await client.post("/jobs", json={"task": "demo.sleep", "args": {"seconds": 30}})
            where = long.headers["location"]
            async with running_worker(tmp_path, env) as first:
                before = await wait_for(client, where, "running")
                assert await first.stop() == 0
            released = (await client.get(where)).json()
            assert released["state"] == "queued" and released["lease_owner"] is None
            async with running_worker(tmp_path, env) as second:
                started = trio.current_time()
                again = await wait_for(client, where, "running")
                assert trio.current_time() - started < 2.0  # not the 10 s lease
                assert again["lease_owner"] != before["lease_owner"]
                assert again["attempts"] == 1  # the cut-off attempt did not count
                await client.delete(where)
                await wait_for(client, where, "cancelled")
                assert await second.stop() == 0
        assert await web.stop() == 0


async def test_the_server_follows_its_schedules(tmp_path: Path) -> None:
    write_config(tmp_path)
    env = {"CANOPY_SCHEDULES": "beat=demo.echo@every:0.2", "CANOPY_ACCESS_LOG": "false"}
    async with running_server(tmp_path, env=env) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            with trio.fail_after(10):
                while True:
                    done = (await client.get("/jobs?state=succeeded&limit=100")).json()
                    if len(done["jobs"]) >= 3:
                        break
                    await trio.sleep(0.1)
            keys = {job["idempotency_key"] for job in done["jobs"]}
            assert len(keys) == len(done["jobs"]) and all(
                k.startswith("periodic:beat:") for k in keys
            )
            ready = (await client.get("/readyz")).json()
            assert "scheduler" in str(ready["tree"])
        assert await server.stop() == 0


async def test_past_its_topic_limit_a_server_still_publishes_new_jobs_events(
    tmp_path: Path,
) -> None:
    """Every job has a topic of its own (jobs.{id}), which a subscriber of ``jobs.*``
    hears: past CANOPY_MAX_TOPICS the least recently used ones are forgotten, so new
    topics, later jobs' events among them, are still published (they were refused
    until the old ones idled out, an hour)."""
    write_config(tmp_path)
    env = {"CANOPY_MAX_TOPICS": "20", "CANOPY_TOPICS_SECRET": SECRET}
    token = TokenIssuer(SECRET).issue("watcher", subscribe=["jobs.*"], publish=["demo.*"])
    async with running_server(tmp_path, env=env) as server:
        base = f"http://127.0.0.1:{server.port}"
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            connect_topics(f"ws://127.0.0.1:{server.port}/ws", token=token) as topics,
            topics.subscribe("jobs.*"),
            httpx.AsyncClient(base_url=base, headers=headers) as client,
        ):
            jobs = [{"task": "demo.echo", "args": {"n": n}} for n in range(60)]
            batch = await client.post("/jobs/batch", json={"jobs": jobs})
            for result in batch.json()["results"]:
                await wait_for(client, f"/jobs/{result['job']['id']}", "succeeded")
            last = (await client.post("/jobs", json={"task": "demo.echo"})).json()["id"]
            await wait_for(client, f"/jobs/{last}", "succeeded")
            with trio.fail_after(5):  # the outcome's event follows the outcome's write
                while True:
                    history = (await client.get(f"/topics/jobs.{last}/history")).json()
                    states = [m["data"]["state"] for m in history["messages"]]
                    if states == ["running", "succeeded"]:
                        break
                    await trio.sleep(0.05)
            fresh = await client.post("/topics/demo.fresh/messages", json={"data": 1})
            assert fresh.status_code == 202
            metrics = (await client.get("/metrics")).text
            assert "canopy_fanout_topics 20.0" in metrics.splitlines()
            (evicted,) = [
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith("canopy_fanout_topics_evicted_total ")
            ]
            assert evicted >= 40  # 60 + 1 job topics, and one for demo.fresh, in 20 places
    refused = [e for e in server.logs if "publish" in e.get("msg", "")]
    assert refused == []


async def test_a_job_nobody_watches_keeps_no_topic_and_a_subscriber_starts_from_its_state(
    tmp_path: Path,
) -> None:
    """Issue 37: a job's topic costs nothing until someone subscribes to it; the one
    who does hears the job's state first, read from the store, then its changes."""
    write_config(tmp_path)
    token = TokenIssuer(SECRET).issue("watcher", subscribe=["jobs.*"])
    async with running_server(tmp_path, env={"CANOPY_TOPICS_SECRET": SECRET}) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            done = (await client.post("/jobs", json={"task": "demo.echo", "args": {"n": 1}})).json()
            await wait_for(client, f"/jobs/{done['id']}", "succeeded")
            metrics = (await client.get("/metrics")).text.splitlines()
            assert "canopy_fanout_unheard_total 2.0" in metrics  # running, succeeded
            assert "canopy_fanout_topics 0.0" in metrics
            sleeper = {"task": "demo.sleep", "args": {"seconds": 0.5}}
            running = (await client.post("/jobs", json=sleeper)).json()
            await wait_for(client, f"/jobs/{running['id']}", "running")
            async with connect_topics(f"ws://127.0.0.1:{server.port}/ws", token=token) as topics:
                heard = []
                with trio.fail_after(10):
                    async with topics.subscribe(f"jobs.{done['id']}", since=0) as sub:
                        event = await sub.receive()
                        assert isinstance(event, TopicMessage) and event.offset == 1
                        heard.append(event.data)
                    async with topics.subscribe(f"jobs.{running['id']}", since=0) as sub:
                        while len(heard) == 1 or heard[-1]["state"] != "succeeded":
                            event = await sub.receive()
                            assert isinstance(event, TopicMessage)
                            heard.append(event.data)
        assert heard == [
            {"task": "demo.echo", "state": "succeeded", "attempts": 1, "result": {"n": 1}},
            {"task": "demo.sleep", "state": "running", "attempts": 1},
            {
                "task": "demo.sleep",
                "state": "succeeded",
                "attempts": 1,
                "runtime": heard[-1]["runtime"],
                "result": {"slept": 0.5},
            },
        ]


async def test_canopy_serve_releases_its_running_jobs_when_it_drains(tmp_path: Path) -> None:
    """As a worker does: the grace, then the lease released, so the job runs again at
    once wherever jobs run next, not after its lease expires."""
    write_config(tmp_path)
    env = {"CANOPY_SERVICE_GRACE": "0.5", "CANOPY_JOB_LEASE": "30"}
    async with running_server(tmp_path, env=env) as web:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web.port}") as client:
            long = await client.post("/jobs", json={"task": "demo.sleep", "args": {"seconds": 30}})
            await wait_for(client, long.headers["location"], "running")
        assert await web.stop() == 0
    shown = await trio.run_process(
        [sys.executable, "-m", "canopy", "jobs", "show", long.json()["id"]],
        cwd=tmp_path,
        capture_stdout=True,
    )
    released = json.loads(shown.stdout)
    assert (released["state"], released["lease_owner"]) == ("queued", None)
