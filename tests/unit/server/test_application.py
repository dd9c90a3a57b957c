"""A user's app on Canopy: what it declares, assembled and served through canopy.testing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import trio

import canopy
from canopy import capabilities, reference
from canopy.handlers.orders import OrdersService
from canopy.server.app._jobs import job_version
from canopy.testing import serve_app
from tests.fanout_sinks import RecordingSink, settle


@dataclass(frozen=True)
class ShopSettings:
    greeting: str = canopy.setting("hello", str, "what the shop says")


def shop() -> canopy.App:
    """A small app, as a user would write it; a new one for each test."""
    app = canopy.App("shop", settings=ShopSettings)
    app.include(capabilities.topics_api)
    app.topics("shop.orders.*", policy="drop_oldest", history=500, subscribe="anyone")
    started = trio.Event()

    @app.get("/hello/<name>")
    async def hello(name: str) -> dict[str, str]:
        return {"said": f"{app.settings.greeting} {name}"}

    @app.task("shop.email", retry=canopy.Retry(max_attempts=3, base=0.01, cap=0.01), timeout=5)
    async def email(args: dict[str, Any], ctx: canopy.JobContext) -> dict[str, Any]:
        if args.get("fail_first") and ctx.job.attempts == 1:
            raise RuntimeError("the mail server hung up")
        await ctx.progress({"sent": 1})
        return {"to": args["to"], "attempt": ctx.job.attempts}

    @app.post("/emails")
    async def send() -> tuple[dict[str, str], int]:
        job = await email.enqueue({"to": "ann@example.com"}, idempotency_key="welcome-ann")
        return {"job": job.id}, 202

    @app.post("/orders/<int:number>")
    async def order(number: int) -> dict[str, int]:
        message = await app.topics.publish(f"shop.orders.{number}", {"number": number})
        return {"offset": message.offset}

    @app.service("price-feed", restart="transient", grace=1)
    async def feed(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        started.set()
        await trio.sleep_forever()

    app.extensions["started"] = started
    return app


async def test_routes_tasks_services_and_settings_of_a_users_app() -> None:
    app = shop()
    async with serve_app(app, sections={"shop": ShopSettings("hi")}) as served:
        response = await served.http.get("/hello/ann")
        assert response.json() == {"said": "hi ann"}
        assert response.headers["X-Request-ID"]
        # what the app did not include is not there
        assert (await served.http.get("/demo/quote/x")).status_code == 404
        assert (await served.http.post("/jobs", json={"task": "shop.email"})).status_code == 404
        ready = (await served.http.get("/readyz")).json()
        services = ready["tree"]["children"][0]["children"]
        names = [child["name"] for child in services]
        assert names == [
            "access_log",
            "hub",
            "event_relay",
            "job_store",
            "price-feed",
            "job_runner",
        ]
        assert app.extensions["started"].is_set()

        response = await served.http.post("/emails")
        assert response.status_code == 202
        job_id = response.json()["job"]
        again = await served.http.post("/emails")  # the same idempotency key
        assert again.json()["job"] == job_id
        with trio.fail_after(10):
            await served.run_jobs()
            job = await app.jobs.wait(job_id)
        assert job.state is canopy.JobState.SUCCEEDED
        assert job.result == {"to": "ann@example.com", "attempt": 1}


async def test_a_task_retries_and_its_outcome_can_be_awaited() -> None:
    app = shop()
    async with serve_app(app):
        job = await app.jobs.enqueue("shop.email", {"to": "bo@example.com", "fail_first": True})
        with trio.fail_after(10):
            done = await app.jobs.wait(job.id)
        assert (done.state, done.attempts) == (canopy.JobState.SUCCEEDED, 2)
        assert done.result == {"to": "bo@example.com", "attempt": 2}
        with pytest.raises(canopy.UnknownTask):
            await app.jobs.enqueue("shop.nope", {})
        with pytest.raises(ValueError, match="delay: must be"):
            await app.jobs.enqueue("shop.email", {}, delay=-1)


async def test_the_apps_topic_rule_applies() -> None:
    app = shop()
    async with serve_app(app) as served:
        async with served.topics() as client, client.subscribe("shop.orders.*") as subscription:
            response = await served.http.post("/orders/7")
            assert response.json() == {"offset": 1}
            with trio.fail_after(5):
                item = await subscription.receive()
            assert (item.topic, item.data) == ("shop.orders.7", {"number": 7})
        # anyone may subscribe, as declared; publishing takes a token
        response = await served.http.post("/topics/shop.orders.8/messages", json={"data": 1})
        assert response.status_code == 403
        history = await served.http.get("/topics/shop.orders.7/history")
        assert history.status_code == 200


async def test_periodic_jobs_tick() -> None:
    app = canopy.App("ticks")
    ticks: list[float] = []
    two = trio.Event()

    @app.periodic("ticks.beat", every=0.2)
    async def beat(args: dict[str, Any]) -> None:
        ticks.append(trio.current_time())
        if len(ticks) == 2:
            two.set()

    async with serve_app(app):
        with trio.fail_after(10):
            await two.wait()
    assert 0.1 < ticks[1] - ticks[0] < 0.5


async def test_a_reference_service_is_a_capability_like_any_other() -> None:
    app = canopy.App("shop")
    app.include(reference.orders)
    app.allow_anonymous("orders:admin")  # setting stock, in this test
    async with serve_app(app, sections={"orders": reference.orders.settings()}) as served:
        assert (await served.http.put("/stock/apple", json={"available": 3})).status_code == 200
        item = {"sku": "apple", "quantity": 1, "unit_price": 250}
        body = {"customer": "c", "currency": "EUR", "items": [item]}
        response = await served.http.post("/orders", json=body, headers={"Idempotency-Key": "k"})
        assert response.status_code == 202, response.text
        with trio.fail_after(10):
            await served.run_jobs()
        order = (await served.http.get(f"/orders/{response.json()['id']}")).json()
        assert order["state"] == "confirmed"
        # Nobody watched it: its topic was kept nowhere, and a subscriber who opens it
        # hears the order as it is now, then nothing older.
        hub = app._runtime().topics.hub
        assert (await hub.history(f"orders.{order['id']}")).messages == []
        sink = RecordingSink()
        await hub.subscribe(f"orders.{order['id']}", sink, since=0)
        await settle()
        assert [m.data for m in sink.messages] == [order]


def test_an_orders_events_are_ordered_by_how_far_it_has_come() -> None:
    version = OrdersService.topic_version
    ranks = [version({"state": state}) for state in ("pending", "reserved", "paid")]
    assert ranks == sorted(ranks) and len(set(ranks)) == 3
    assert version({"state": "confirmed"}) == version({"state": "failed"}) > ranks[-1]
    assert version({"state": "new?"}) > version({"state": "confirmed"})  # never dropped
    assert version([1]) > version({"state": "confirmed"})


def test_a_jobs_events_are_ordered_by_attempt_then_how_far_into_it() -> None:
    events = [
        {"state": "queued", "attempts": 0},
        {"state": "running", "attempts": 1},
        {"state": "running", "attempts": 1, "progress": 50},
        {"state": "retrying", "attempts": 1},
        {"state": "running", "attempts": 2},
        {"state": "queued", "attempts": 2},  # released by a worker that stopped
        {"state": "running", "attempts": 3},
        {"state": "succeeded", "attempts": 3},
    ]
    versions = [job_version(event) for event in events]
    assert versions == sorted(versions)
    assert job_version({"state": "running"}) > versions[-1]  # says no attempt: never dropped


def test_two_declarations_of_one_name_are_refused_naming_both() -> None:
    app = canopy.App("dup")

    @app.task("dup.task")
    async def first(args: dict[str, Any]) -> None: ...

    with pytest.raises(canopy.AppError, match=r"'dup.task' is declared twice: .*first.*second"):

        @app.task("dup.task")
        async def second(args: dict[str, Any]) -> None: ...

    @app.service("svc")
    async def one() -> None: ...

    with pytest.raises(canopy.AppError, match=r"service 'svc' is declared twice: .*one.*two"):

        @app.service("svc")
        async def two() -> None: ...


def test_a_route_declared_twice_is_a_start_up_error(tmp_path: Any) -> None:
    app = canopy.App("routes")

    @app.get("/x/<a>")
    async def one(a: str) -> dict[str, str]:
        return {}

    @app.get("/x/<b>")
    async def two(b: str) -> dict[str, str]:
        return {}

    with pytest.raises(canopy.AppError, match=r"route GET /x/<b> is declared twice: by 'one'"):
        app.boot(canopy.Settings(data_dir=str(tmp_path)))


def test_a_task_that_clashes_with_a_capabilitys_is_refused(tmp_path: Any) -> None:
    app = canopy.App("clash")
    app.include(reference.demo)

    @app.task("demo.echo")
    async def echo(args: dict[str, Any]) -> None: ...

    with pytest.raises(canopy.AppError, match=r"'demo.echo' is declared twice: .*echo.*demo"):
        app.boot(canopy.Settings(data_dir=str(tmp_path)))


def test_what_an_app_offers_before_it_is_served() -> None:
    app = shop()
    with pytest.raises(canopy.AppError, match="not assembled yet"):
        _ = app.jobs.service
    with pytest.raises(canopy.AppError, match="name 'my app'"):
        canopy.App("my app")
    with pytest.raises(canopy.AppError, match="restart must be"):
        app.service("x", restart="sometimes")
    with pytest.raises(canopy.AppError, match="give cron= or every="):
        app.periodic("p")
    with pytest.raises(canopy.AppError, match=r"cron '61 \* \* \* \*'"):
        app.periodic("p", cron="61 * * * *")
    with pytest.raises(canopy.AppError, match="must be an async def"):
        app.task("sync")(lambda args: None)


async def test_one_app_is_served_again_once_stopped() -> None:
    """A module's app serves test after test: each assembly starts from what the app
    declared, on its own store, and a running app is not assembled again."""
    app = shop()
    for greeting in ("hi", "hey"):
        async with serve_app(app, sections={"shop": ShopSettings(greeting)}) as served:
            assert (await served.http.get("/hello/ann")).json() == {"said": f"{greeting} ann"}
            assert (await served.http.get("/metrics")).status_code == 200
            with pytest.raises(canopy.AppError, match="is running: stop it"):
                app.boot(canopy.Settings())
            job = await app.jobs.enqueue("shop.email", {"to": greeting})
            assert [j.id for j in await app.jobs.service.store.list_jobs()] == [job.id]


async def test_a_bug_in_a_websocket_ends_it_with_1011_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from quart import websocket
    from trio_websocket import ConnectionClosed, wrap_client_stream

    app = canopy.App("ws")

    @app.websocket("/boom")
    async def boom() -> None:
        await websocket.accept()
        await websocket.receive()
        raise RuntimeError("a bug in a socket")

    async with serve_app(app) as served:
        # The stream is ours to close: trio-websocket's own client leaves its socket
        # unclosed when the server ends the session.
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        async with stream, trio.open_nursery() as nursery:
            headers = [("X-Request-ID", "ws-1")]
            ws = await wrap_client_stream(
                nursery, stream, "127.0.0.1", "/boom", extra_headers=headers
            )
            await ws.send_message("go")
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            nursery.cancel_scope.cancel()
        assert closed.value.reason.code == 1011
        assert (await served.http.get("/healthz")).status_code == 200
    record = next(r for r in caplog.records if r.name == "canopy.error")
    assert record.getMessage() == "unhandled error in WebSocket /boom"
    assert record.request_id == "ws-1"  # type: ignore[attr-defined]
    assert record.exc_info is not None and "a bug in a socket" in str(record.exc_info[1])


async def test_a_jobs_topic_is_opened_on_demand_with_its_state_then_kept_for_its_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One topic per job: nothing is kept of a job nobody subscribes to; a subscriber
    opens its log with the job's state, and the log keeps its window for
    CANOPY_JOB_EVENTS_TTL, not the default five minutes."""
    app = canopy.App("events")

    @app.task("work")
    async def work(args: dict[str, Any]) -> None: ...

    @app.task("quiet", events=False)
    async def quiet(args: dict[str, Any]) -> None: ...

    async with serve_app(app) as served:
        hub = app._runtime().topics.hub
        assert hub.rules.for_topic("jobs.0123").history_ttl == 60.0
        assert hub.rules.for_topic("other.0123").history_ttl == 300.0
        job = await work.enqueue()
        await served.run_jobs()
        assert (await hub.history(f"jobs.{job.id}")).messages == []
        assert hub.stats()["unheard"] == 2 and hub.stats()["topics"] == 0  # running, outcome

        sink = RecordingSink()
        sub = await hub.subscribe(f"jobs.{job.id}", sink, since=0)
        await settle()
        assert [m.data for m in sink.messages] == [
            {"task": "work", "state": "succeeded", "attempts": 1, "result": None}
        ]
        hub.unsubscribe(sub)
        kept = await hub.history(f"jobs.{job.id}")
        await trio.sleep(59)
        assert (await hub.history(f"jobs.{job.id}")).messages == kept.messages
        await trio.sleep(2)
        assert (await hub.history(f"jobs.{job.id}")).messages == []  # gone after the TTL

        silent = await quiet.enqueue()
        await served.run_jobs()
        sub = await hub.subscribe(f"jobs.{silent.id}", RecordingSink(), since=0)
        assert sub.backlog == []  # a task that publishes no events: nothing to start from
    async with serve_app(app, job_events_ttl=5.0):
        assert app._runtime().topics.hub.rules.for_topic("jobs.1").history_ttl == 5.0
    ruled = canopy.App("ruled")
    ruled.topics("jobs.*", history_ttl=600.0)
    async with serve_app(ruled, job_events_ttl=5.0):
        assert ruled._runtime().topics.hub.rules.for_topic("jobs.1").history_ttl == 600.0


async def test_an_apps_own_topics_may_be_opened_on_demand(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A topic per invoice, each message the invoice's state: nothing is kept until a
    subscriber opens one, and it starts from the state the app reads."""
    invoices = {"7": {"id": "7", "status": "sent", "revision": 2}}

    async def invoice_state(topic: str) -> dict[str, Any] | None:
        return invoices.get(topic.removeprefix("invoices."))

    app = canopy.App("billing")
    app.topics("invoices.*", state=invoice_state, version=lambda data: data["revision"])
    with pytest.raises(canopy.AppError, match="state and version go together"):
        app.topics("other.*", state=invoice_state)
    async with serve_app(app):
        hub = app._runtime().topics.hub
        await app.topics.publish("invoices.7", {"id": "7", "status": "sent", "revision": 2})
        assert hub.stats()["unheard"] == 1 and hub.stats()["topics"] == 0
        sink = RecordingSink()
        await hub.subscribe("invoices.7", sink, since=0)
        await app.topics.publish("invoices.7", {"id": "7", "status": "paid", "revision": 3})
        await settle()
        assert [m.data["status"] for m in sink.messages] == ["sent", "paid"]
