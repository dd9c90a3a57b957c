"""The app in-process (Quart's test client): route cache, deadlines, errors, request ids."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.routing import Map, Rule

from canopy.server import Settings
from canopy.server.pipeline._quart import RouteCache
from canopy.showcase import create_app


def test_route_cache_remembers_matches_not_failures() -> None:
    url_map = Map([Rule("/items/<int:item>", endpoint="item", methods=["GET"])])
    cache = RouteCache(size=2)
    adapter = url_map.bind("example.org", path_info="/items/7", default_method="GET")
    rule, args = cache.match(adapter, "GET", "/items/7", False)
    assert rule.endpoint == "item" and args == {"item": 7}
    args["item"] = 99  # callers may mutate what they get
    rule, args = cache.match(adapter, "GET", "/items/7", False)
    assert args == {"item": 7}
    missing = url_map.bind("example.org", path_info="/nope")
    for _ in range(2):
        with pytest.raises(Exception, match="404"):
            cache.match(missing, "GET", "/nope", False)
    for n in range(5):  # bounded: clears when full
        adapter = url_map.bind("example.org", path_info=f"/items/{n}")
        assert cache.match(adapter, "GET", f"/items/{n}", False)[1] == {"item": n}
    assert len(cache._entries) <= 2


@pytest.fixture
def app() -> Any:
    application = create_app().boot(Settings(access_log=False))
    application.runtime.lifespan_owns_tree = False
    return application


async def test_routes_with_arguments_resolve_per_path(app: Any) -> None:
    client = app.test_client()
    for sku in ("a", "bb", "a"):
        response = await client.get(f"/demo/quote/{sku}")
        assert response.status_code == 200
        assert (await response.get_json())["sku"] == sku
    response = await client.post("/demo/quote/a")
    assert response.status_code == 405
    assert (await response.get_json())["error"] == "method_not_allowed"


async def test_url_for_and_options_still_work_with_the_lazy_adapter(app: Any) -> None:
    from quart import url_for

    @app.get("/where")
    async def where() -> dict[str, str]:
        return {"quote": url_for("demo.quote", sku="x9", _external=True)}

    client = app.test_client()
    response = await client.get("/where")
    assert (await response.get_json()) == {"quote": "http://localhost/demo/quote/x9"}
    response = await client.options("/demo/hello")
    assert response.status_code == 200
    assert "GET" in response.headers["Allow"]


async def test_a_bug_in_a_view_is_a_json_500_and_logged(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/broken")
    async def broken() -> dict[str, str]:
        raise RuntimeError("a bug")

    response = await app.test_client().get("/broken", headers={"X-Request-ID": "r-1"})
    assert response.status_code == 500
    assert (await response.get_json()) == {
        "error": "internal_error",
        "message": "the server failed; its log has this request's id",
        "request_id": "r-1",
    }
    assert response.headers["X-Request-ID"] == "r-1"
    record = next(r for r in caplog.records if r.name == "canopy.error")
    assert record.request_id == "r-1"  # type: ignore[attr-defined]


async def test_sessions_work_with_a_secret_key_and_refuse_writes_without(app: Any) -> None:
    from quart import session

    @app.get("/count")
    async def count() -> dict[str, int]:
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    client = app.test_client()
    assert (await client.get("/count")).status_code == 500  # no key: no session to write
    app.secret_key = "test-only"
    client = app.test_client()
    assert (await (await client.get("/count")).get_json()) == {"n": 1}
    assert (await (await client.get("/count")).get_json()) == {"n": 2}


async def test_without_hooks_a_request_skips_quarts_steps_but_keeps_their_effects(
    app: Any,
) -> None:
    from quart import after_this_request, g, request

    @app.before_request
    async def remember() -> None:
        g.seen = "before"

    @app.get("/plain")
    async def plain() -> dict[str, Any]:
        @after_this_request
        async def stamp(response: Any) -> Any:
            response.headers["X-After-This"] = "yes"
            return response

        return {"g": g.seen, "hooks": app._has_request_hooks(request._get_current_object())}

    @app.get("/refused")
    async def refused() -> None:
        from canopy.handlers import ApiError

        raise ApiError(409, "conflict", "no")

    response = await app.test_client().get("/plain")
    assert (await response.get_json()) == {"g": "before", "hooks": False}  # the plain path
    assert response.headers["X-After-This"] == "yes"
    response = await app.test_client().get("/refused")
    assert response.status_code == 409
    assert (await response.get_json())["error"] == "conflict"


async def test_with_hooks_a_request_takes_quarts_own_steps(app: Any) -> None:
    from quart.signals import request_finished

    ran: list[str] = []

    @app.after_request
    async def after(response: Any) -> Any:
        ran.append("after_request")
        return response

    @app.teardown_request
    async def teardown(exc: BaseException | None) -> None:
        ran.append("teardown_request")

    def finished(sender: Any, response: Any) -> None:
        ran.append(f"request_finished {response.status_code}")

    response = await app.test_client().get("/demo/hello")
    assert response.status_code == 200
    assert ran == ["after_request", "teardown_request"]
    ran.clear()
    app.after_request_funcs.clear()
    app.teardown_request_funcs.clear()
    with request_finished.connected_to(finished, app):
        await app.test_client().get("/demo/hello")
    assert ran == ["request_finished 200"]
