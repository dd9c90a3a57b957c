"""The jobs HTTP API against a real server: enqueue, idempotency, errors, cancel, dead letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from .e2e import running_server, write_config


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
            # idempotency: the same key returns the original; other args conflict
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
        assert await server.stop() == 0


async def test_bad_requests_get_clear_4xx(tmp_path: Path) -> None:
    write_config(tmp_path)
    env = {"CANOPY_MAX_QUEUED": "2", "CANOPY_MAX_BODY_SIZE": "2000"}
    async with running_server(tmp_path, env=env) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            cases = [
                ({"task": "no.such.task"}, 422, "unknown_task"),
                ({"task": "demo.echo", "args": [1, 2]}, 422, "invalid_field"),
                ({"task": "demo.echo", "delay": -1}, 422, "invalid_field"),
                ({"args": {}}, 422, "invalid_field"),
            ]
            for body, status, code in cases:
                response = await client.post("/jobs", json=body)
                assert (response.status_code, response.json()["error"]) == (status, code), body
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
            retried = await client.post(f"/jobs/{failing['id']}/retry")
            assert retried.status_code == 202 and retried.json()["attempts"] == 0
            done = await client.post(f"/jobs/{ids[0]}/retry")
            assert done.status_code == 409  # only dead letters are retried
        assert await server.stop() == 0
