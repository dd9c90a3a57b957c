"""The live dashboard in a real (headless) Chromium: it needs a token, its numbers move
while load runs, and its retry button re-runs a dead job.

``SAVE_DASHBOARD_SCREENSHOT=docs/dashboard.png`` also saves what the browser showed
(docs/OPERATIONS.md uses that picture)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import trio

from canopy.handlers.topics import TokenIssuer
from tests.browser import chromium
from tests.processes import running_server, write_config

SECRET = "dashboard-test-secret-long-enough-for-hs256"


async def test_the_dashboard_updates_live_and_retries_a_dead_job(tmp_path: Path) -> None:
    write_config(tmp_path)
    env = {"CANOPY_TOPICS_SECRET": SECRET, "CANOPY_ACCESS_LOG": "false"}
    issuer = TokenIssuer(SECRET)
    token = issuer.issue("ops", subscribe=["canopy.dashboard"])
    async with running_server(tmp_path, env=env) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/dashboard")).status_code == 401
            other = issuer.issue("someone", subscribe=["orders.1"])
            forbidden = await http.get("/dashboard", params={"token": other})
            assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"

            dead = (await http.post("/jobs", json={"task": "demo.fail"})).json()
            with trio.fail_after(15):
                while True:
                    job = (await http.get(f"/jobs/{dead['id']}")).json()
                    if job["state"] == "failed":
                        break
                    await trio.sleep(0.1)
            failed_at = job["updated_at"]

            async with (
                chromium(tmp_path / "profile") as open_page,
                open_page(f"{base}/dashboard?token={token}") as page,
            ):
                status = "document.getElementById('status')?.textContent"
                assert await page.wait_for(f"{status}.startsWith('live')")
                async with trio.open_nursery() as load:

                    async def requests() -> None:
                        while True:
                            await http.get("/demo/hello")

                    button = f"document.querySelector('button[data-job=\"{dead['id']}\"]')"
                    load.start_soon(requests)
                    if os.environ.get("SAVE_DASHBOARD_SCREENSHOT"):  # a picture with history
                        for _ in range(20):
                            body = {
                                "jobs": [{"task": "demo.sleep", "args": {"seconds": 0.05}}] * 200
                            }
                            await http.post("/jobs/batch", json=body)
                            await trio.sleep(1)
                        await page.wait_for(f"!!{button}")  # the dead letter is listed
                    rate = "Number(document.getElementById('k-rate').textContent.replace(/,/g, ''))"
                    assert await page.wait_for(f"{rate} > 0")
                    points = "series.rate.all.length"
                    seen = await page.evaluate(points)
                    await page.wait_for(f"{points} >= {seen + 2}")  # one snapshot a second
                    latency = "document.getElementById('k-mean').textContent"
                    assert await page.wait_for(f"{latency} !== '-' && {latency}")
                    tree = "document.querySelector('ul.tree .state')?.textContent"
                    assert await page.evaluate(tree) == "running"
                    if target := os.environ.get("SAVE_DASHBOARD_SCREENSHOT"):
                        await trio.Path(target).write_bytes(await page.screenshot())
                    load.cancel_scope.cancel()

                assert await page.wait_for(f"!!{button}")
                await page.evaluate(f"{button}.click()")
                assert await page.wait_for(f"retries.get('{dead['id']}')") == 202

            with trio.fail_after(15):  # it runs again: a new attempt, after the retry
                while True:
                    job = (await http.get(f"/jobs/{dead['id']}")).json()
                    if job["updated_at"] > failed_at and job["attempts"] >= 1:
                        break
                    await trio.sleep(0.1)
        assert await server.stop() == 0
