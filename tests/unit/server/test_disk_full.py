"""A full disk is a fault to survive: enqueues answer 503 ``store_unavailable``,
nothing is acknowledged that was not stored, and the server takes enqueues again by
itself once there is room. The disk fills for real: SQLite's own page limit on the
store's connection makes its writes fail with SQLITE_FULL, as a full filesystem does."""

from __future__ import annotations

from typing import Any

import canopy
from canopy import capabilities
from canopy.testing import serve_app

NO_LIMIT = 1_073_741_823  # SQLite's largest max_page_count


def filling() -> canopy.App:
    app = canopy.App("filling")
    app.allow_anonymous("jobs:enqueue:*")
    app.include(capabilities.jobs_api)

    @app.task("filling.later")
    async def later(args: dict[str, Any]) -> None:
        pass

    return app


async def test_a_full_disk_refuses_enqueues_and_recovers_by_itself() -> None:
    app = filling()
    async with serve_app(app, run_jobs=False) as served:
        connection = app.jobs.service.store.db.connection()
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        connection.execute(f"PRAGMA max_page_count = {pages + 8}")
        accepted: list[str] = []
        refused = 0
        for n in range(100):
            body = {"task": "filling.later", "args": {"n": n, "pad": "x" * 4000}, "delay": 3600}
            response = await served.http.post("/jobs", json=body)
            if response.status_code == 202:
                accepted.append(response.json()["id"])
                continue
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "store_unavailable"
            assert "full" in response.json()["message"]  # the cause, not a rollback's
            assert response.headers["Retry-After"]
            refused += 1
        assert accepted and refused > 50  # it filled, and went on refusing
        for job_id in accepted:  # each acknowledged one is stored
            assert (await served.http.get(f"/jobs/{job_id}")).status_code == 200
        assert (await served.http.get("/healthz")).status_code == 200  # still serving

        connection.execute(f"PRAGMA max_page_count = {NO_LIMIT}")  # room again
        body = {"task": "filling.later", "args": {"pad": "x" * 4000}, "delay": 3600}
        again = await served.http.post("/jobs", json=body)
        assert again.status_code == 202
        assert (await served.http.get(f"/jobs/{again.json()['id']}")).status_code == 200
