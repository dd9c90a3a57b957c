"""Bad requests get the same answer on every route (docs/API.md): a query argument
422 ``invalid_parameter`` (read by the helpers of handlers/_requests.py), a body field
422 ``invalid_field`` (checked by the model that documents it), each naming the
argument or field in ``field``."""

from __future__ import annotations

import pytest

import canopy
from canopy import capabilities, reference
from canopy.testing import serve_app

SECRET = "query-parameters-test-secret-long-enough"

CASES = [
    ("/demo/sleep?ms=soon", "ms"),
    ("/demo/sleep?ms=100000", "ms"),
    ("/demo/work?ms=51", "ms"),
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
    # Open, so that what is checked here is the request, not the caller.
    app.allow_anonymous("jobs:enqueue:*", "jobs:admin", "orders:admin")
    return app


@pytest.mark.parametrize(("path", "field"), CASES)
async def test_a_bad_query_argument_is_invalid_parameter(path: str, field: str) -> None:
    async with serve_app(every_capability(), topics_secret=SECRET) as served:
        response = await served.http.get(path)
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["error"], body["field"]) == ("invalid_parameter", field)
    assert body["message"].startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("body", "field"),
    [({"key": "k"}, "data"), ({"data": 1, "key": ""}, "key"), ({"data": 1, "kye": "k"}, "kye")],
)
async def test_a_bad_publish_body_names_its_field(body: dict[str, object], field: str) -> None:
    """``POST /topics/{topic}/messages`` is validated by the model that documents it."""
    async with serve_app(every_capability(), topics_secret=SECRET) as served:
        token = canopy.handlers.grants.TokenIssuer(SECRET).issue("p", publish=["q.*"])
        headers = {"Authorization": f"Bearer {token}"}
        response = await served.http.post("/topics/q.a/messages", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert (response.json()["error"], response.json()["field"]) == ("invalid_field", field)


ITEM = {"sku": "pear", "quantity": 1, "unit_price": 250}


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/orders", {"customer": "c 1", "currency": "EUR", "items": [ITEM]}, "customer"),
        ("POST", "/orders", {"customer": "c1", "currency": "XYZ", "items": [ITEM]}, "currency"),
        ("POST", "/orders", {"customer": "c1", "currency": "EUR", "items": []}, "items"),
        (
            "POST",
            "/orders",
            {"customer": "c1", "currency": "EUR", "items": [{**ITEM, "quantity": "5"}]},
            "items[0].quantity",
        ),
        (
            "POST",
            "/orders",
            {"customer": "c1", "currency": "EUR", "items": [ITEM, ITEM]},
            "items[1].sku",
        ),
        ("POST", "/orders", [ITEM], "body"),
        ("PUT", "/stock/pear", {"available": -1}, "available"),
        ("PUT", "/stock/pear", {"available": True}, "available"),
    ],
)
async def test_a_bad_order_or_stock_body_names_its_field(
    method: str, path: str, body: object, field: str
) -> None:
    """The orders bodies are checked by the models the OpenAPI document shows."""
    async with serve_app(every_capability(), topics_secret=SECRET) as served:
        headers = {"Idempotency-Key": "k1"}
        response = await served.http.request(method, path, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert (response.json()["error"], response.json()["field"]) == ("invalid_field", field)


async def test_the_documented_order_is_the_checked_order() -> None:
    """What the OpenAPI document says of an order is what validate_order enforces:
    the currencies, and the customer's characters (the two once differed)."""
    async with serve_app(every_capability(), topics_secret=SECRET) as served:
        document = (await served.http.get("/openapi.json")).json()
    body = document["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]
    order = body["schema"]["properties"]
    assert sorted(order["currency"]["enum"]) == ["CHF", "EUR", "GBP", "JPY", "USD"]
    assert order["customer"]["pattern"] == r"^[A-Za-z0-9_\-:@]{1,100}$"
    item = document["components"]["schemas"]["OrderItem"]["properties"]
    assert item["sku"]["maxLength"] == 64
