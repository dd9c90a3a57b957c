"""What changes state on an operator's behalf takes a grant (issue 36): enqueuing a
task ``jobs:enqueue:<task>``, cancelling or retrying a job ``jobs:admin``, setting
stock ``orders:admin``. Without a token 401, with one that does not grant it 403. A
user's app is closed by default; the showcase is open, and says so first."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import canopy
from canopy import capabilities, reference
from canopy.handlers.grants import Grants, TokenIssuer, allows
from canopy.testing import serve_app

SECRET = "operations-test-secret-long-enough-for-hs256"
ISSUER = TokenIssuer(SECRET)


def shop(*anonymous: str) -> canopy.App:
    app = canopy.App("shop")
    app.include(capabilities.jobs_api)
    app.include(capabilities.topics_api)
    app.include(reference.orders)
    if anonymous:
        app.allow_anonymous(*anonymous)

    @app.task("shop.email")
    async def email(args: dict[str, Any]) -> None:
        return None

    @app.task("other.report")
    async def report(args: dict[str, Any]) -> None:
        return None

    return app


def bearer(*operations: str) -> dict[str, str]:
    token = ISSUER.issue("ops", operations=operations, subscribe=["x.*"] if not operations else ())
    return {"Authorization": f"Bearer {token}"}


async def test_a_users_app_is_closed_by_default() -> None:
    async with serve_app(shop(), topics_secret=SECRET) as served:
        http = served.http
        refused = await http.post("/jobs", json={"task": "shop.email"})
        assert (refused.status_code, refused.json()["error"]) == (401, "invalid_token")
        assert "jobs:enqueue:shop.email" in refused.json()["message"]
        assert (await http.put("/stock/pear", json={"available": 5})).status_code == 401
        # Reading stays open.
        assert (await http.get("/jobs")).status_code == 200


async def test_each_operation_takes_its_grant() -> None:
    async with serve_app(shop(), topics_secret=SECRET) as served:
        http = served.http
        none = bearer()
        shop_only = bearer("jobs:enqueue:shop.*")
        admin = bearer("jobs:admin", "orders:admin")
        forbidden = await http.post("/jobs", json={"task": "shop.email"}, headers=none)
        assert (forbidden.status_code, forbidden.json()["error"]) == (403, "forbidden")
        made = await http.post("/jobs", json={"task": "shop.email"}, headers=shop_only)
        assert made.status_code == 202
        other = await http.post("/jobs", json={"task": "other.report"}, headers=shop_only)
        assert other.status_code == 403
        batch = {"jobs": [{"task": "shop.email"}, {"task": "other.report"}]}
        assert (await http.post("/jobs/batch", json=batch, headers=shop_only)).status_code == 403
        job_id = made.json()["id"]
        assert (await http.delete(f"/jobs/{job_id}", headers=shop_only)).status_code == 403
        assert (await http.delete(f"/jobs/{job_id}")).status_code == 401
        cancelled = await http.delete(f"/jobs/{job_id}", headers=admin)
        assert cancelled.status_code == 200
        assert (await http.post(f"/jobs/{job_id}/retry", headers=shop_only)).status_code == 403
        assert (await http.post(f"/jobs/{job_id}/retry", headers=admin)).status_code == 409
        stock = await http.put("/stock/pear", json={"available": 5}, headers=shop_only)
        assert stock.status_code == 403
        stock = await http.put("/stock/pear", json={"available": 5}, headers=admin)
        assert stock.status_code == 200
        bad = await http.post(
            "/jobs", json={"task": "shop.email"}, headers={"Authorization": "Bearer nope"}
        )
        assert (bad.status_code, bad.json()["error"]) == (401, "invalid_token")


async def test_what_the_app_opens_and_what_the_setting_replaces() -> None:
    async with serve_app(shop("jobs:enqueue:shop.*"), topics_secret=SECRET) as served:
        assert (await served.http.post("/jobs", json={"task": "shop.email"})).status_code == 202
        assert (await served.http.post("/jobs", json={"task": "other.report"})).status_code == 401
        # What anyone may do, a token's holder may do too.
        held = await served.http.post("/jobs", json={"task": "shop.email"}, headers=bearer())
        assert held.status_code == 202
    closed = shop("jobs:enqueue:*")
    async with serve_app(closed, topics_secret=SECRET, anonymous_operations=()) as served:
        assert (await served.http.post("/jobs", json={"task": "shop.email"})).status_code == 401
    opened = shop()
    async with serve_app(opened, anonymous_operations=("orders:admin",)) as served:
        assert (await served.http.put("/stock/pear", json={"available": 1})).status_code == 200


async def test_the_showcase_is_open_and_its_first_line_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from canopy.server.app import Mode
    from canopy.server.config import Settings
    from canopy.server.runtime._startup import SHOWCASE, boot_or_exit
    from canopy.showcase import create_app

    app = create_app()
    with caplog.at_level(logging.INFO, logger="canopy"):
        boot_or_exit(app, SHOWCASE, Settings(access_log=False, data_dir="unused"), Mode.SERVE)
    first = caplog.records[0]
    assert first.levelno == logging.WARNING
    assert "anyone may, without a token: jobs:enqueue:*, jobs:admin, orders:admin" in (
        first.getMessage()
    )
    async with serve_app(create_app()) as served:
        response = await served.http.post("/jobs", json={"task": "demo.echo"})
        assert response.status_code == 202


def test_grants_cover_what_they_name_and_nothing_beside_it() -> None:
    assert allows("jobs:enqueue:*", "jobs:enqueue:shop.email")
    assert allows("jobs:enqueue:shop.*", "jobs:enqueue:shop.email")
    assert not allows("jobs:enqueue:shop.*", "jobs:enqueue:shopping.email")
    assert not allows("jobs:enqueue:shop.*", "jobs:enqueue:shop")
    assert allows("jobs:*", "jobs:admin") and not allows("jobs:*", "orders:admin")
    assert not allows("jobs:adm*", "jobs:admin")  # a * only after : or .
    assert allows("*", "orders:admin")
    assert not Grants().may("jobs:admin")
    with pytest.raises(ValueError, match="not an operation grant"):
        ISSUER.issue("ops", operations=["admin"])
    token = ISSUER.issue("ops", operations=["jobs:admin"])
    assert ISSUER.verify(token).may("jobs:admin")
    assert not ISSUER.verify(token).may("orders:admin")
