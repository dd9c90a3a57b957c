"""A query argument that is wrong gets the same answer on every route: 422
``invalid_parameter``, naming it in ``field`` (docs/API.md), read by the helpers of
handlers/_requests.py."""

from __future__ import annotations

import pytest

import canopy
from canopy import capabilities, reference
from canopy.testing import serve_app

SECRET = "query-parameters-test-secret-long-enough"

CASES = [
    ("/demo/sleep?ms=soon", "ms"),
    ("/demo/sleep?ms=100000", "ms"),
    ("/demo/quote/abc?slow=taxes", "slow"),
    ("/jobs?limit=0", "limit"),
    ("/jobs?limit=ten", "limit"),
    ("/jobs?state=weird", "state"),
    ("/jobs?before=nope", "before"),
    ("/orders", "customer"),
    ("/orders?customer=c1&limit=-1", "limit"),
    ("/topics/q.a/history?since=-1", "since"),
    ("/topics/q.a/history?limit=0", "limit"),
    ("/support/conversations/c1/transcript?after=x", "after"),
]


def every_capability() -> canopy.App:
    app = canopy.App("queries")
    for capability in (
        capabilities.jobs_api,
        capabilities.topics_api,
        reference.demo,
        reference.orders,
        reference.support,
    ):
        app.include(capability)
    app.topics("q.*", subscribe="anyone")
    return app


@pytest.mark.parametrize(("path", "field"), CASES)
async def test_a_bad_query_argument_is_invalid_parameter(path: str, field: str) -> None:
    async with serve_app(every_capability(), topics_secret=SECRET) as served:
        response = await served.http.get(path)
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["error"], body["field"]) == ("invalid_parameter", field)
    assert body["message"].startswith(f"{field}: ")
