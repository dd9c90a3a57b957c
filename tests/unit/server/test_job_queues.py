"""Queues and concurrency as an app declares them: a runner per queue, so slow or
CPU-heavy jobs hold back only their own queue; a default that suits jobs that wait;
and no enqueue to a queue that nothing runs."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import canopy
from canopy import capabilities
from canopy.testing import serve_app


async def test_a_thousand_jobs_that_wait_run_together_with_the_defaults() -> None:
    """At 64 at a time (the old default) they would take 1000 / 64 x 100 ms = 1.6 s."""
    app = canopy.App("waits")
    started: list[float] = []
    ended: list[float] = []

    @app.task("wait")
    async def wait(args: dict[str, Any]) -> None:
        started.append(trio.current_time())
        await trio.sleep(0.1)
        ended.append(trio.current_time())

    async with serve_app(app):
        # All due at one moment, so that the enqueues' own time does not count.
        run_at = canopy.nurseries.wall_time() + 2.0
        jobs = [await app.jobs.enqueue("wait", {"n": n}, run_at=run_at) for n in range(1000)]
        with trio.fail_after(30):
            for job in jobs:
                assert (await app.jobs.wait(job.id)).state.value == "succeeded"
        assert len(ended) == 1000
    assert max(ended) - min(started) < 0.8


async def test_a_declared_queue_holds_its_jobs_to_its_concurrency_and_no_one_else() -> None:
    app = canopy.App("queues")
    app.queue("gateway", concurrency=2)
    at_once = {"now": 0, "most": 0}
    order: list[str] = []

    @app.task("charge", queue="gateway")
    async def charge(args: dict[str, Any]) -> None:
        at_once["now"] += 1
        at_once["most"] = max(at_once["most"], at_once["now"])
        await trio.sleep(0.2)  # a slow payment gateway
        at_once["now"] -= 1
        order.append("charge")

    @app.task("receipt")
    async def receipt(args: dict[str, Any]) -> None:
        order.append("receipt")

    async with serve_app(app) as served:
        for n in range(6):
            await app.jobs.enqueue("charge", {"n": n})
        for n in range(6):
            await app.jobs.enqueue("receipt", {"n": n})
        with trio.fail_after(30):
            await served.run_jobs()
        runners = [
            child["name"]
            for child in (await served.http.get("/readyz")).json()["tree"]["children"][0][
                "children"
            ]
            if child["name"].startswith("job_runner")
        ]
    assert at_once["most"] == 2
    assert order.index("charge") > max(i for i, name in enumerate(order) if name == "receipt")
    assert sorted(runners) == ["job_runner", "job_runner:gateway"]


async def test_an_enqueue_to_a_queue_nothing_runs_is_refused() -> None:
    app = canopy.App("nowhere")
    app.include(capabilities.jobs_api)
    app.allow_anonymous("jobs:enqueue:*")

    @app.task("mail", queue="mail")
    async def mail(args: dict[str, Any]) -> None: ...

    async with serve_app(app) as served:
        response = await served.http.post("/jobs", json={"task": "mail", "queue": "mial"})
        assert response.status_code == 422
        body = response.json()
        assert (body["error"], body["field"]) == ("invalid_field", "queue")
        assert "'mial'" in body["message"] and "mail" in body["message"]
        with pytest.raises(ValueError, match="mial"):
            await app.jobs.enqueue("mail", {}, queue="mial")
        ok = await served.http.post("/jobs", json={"task": "mail", "queue": "default"})
        assert ok.status_code == 202  # a task may be put on any queue that runs


def test_a_queue_is_declared_once_with_a_positive_concurrency() -> None:
    app = canopy.App("declared")
    app.queue("cpu", concurrency=1)
    with pytest.raises(canopy.AppError, match="twice"):
        app.queue("cpu", concurrency=1)
    with pytest.raises(canopy.AppError, match="at least 1"):
        app.queue("io", concurrency=0)


async def test_a_cpu_heavy_task_says_so_and_runs_one_at_a_time_beside_the_rest() -> None:
    """``concurrency=1`` on the task: a queue and a runner of its own, named after it."""
    app = canopy.App("cpu")
    at_once = {"now": 0, "most": 0}
    done: list[str] = []

    @app.task("resize", concurrency=1)
    async def resize(args: dict[str, Any]) -> None:
        at_once["now"] += 1
        at_once["most"] = max(at_once["most"], at_once["now"])
        await trio.sleep(0.1)  # stands for a burst of CPU, handed to a thread
        at_once["now"] -= 1
        done.append("resize")

    @app.task("notify")
    async def notify(args: dict[str, Any]) -> None:
        await trio.sleep(0.1)
        done.append("notify")

    async with serve_app(app) as served:
        jobs = [await resize.enqueue({"n": n}) for n in range(5)]
        jobs += [await notify.enqueue({"n": n}) for n in range(20)]
        assert {job.queue for job in jobs} == {"resize", "default"}
        with trio.fail_after(30):
            await served.run_jobs()
        tree = (await served.http.get("/readyz")).json()["tree"]["children"][0]["children"]
        runners = sorted(child["name"] for child in tree if child["name"].startswith("job_run"))
    assert at_once["most"] == 1
    resized = [i for i, name in enumerate(done) if name == "resize"]
    notified = [i for i, name in enumerate(done) if name == "notify"]
    assert max(notified) < resized[2]  # the notifies did not wait their turn
    assert done.count("notify") == 20 and done.count("resize") == 5
    assert runners == ["job_runner", "job_runner:resize"]


def test_a_tasks_concurrency_is_positive_and_agrees_with_its_queue() -> None:
    app = canopy.App("declared")
    with pytest.raises(canopy.AppError, match="at least 1"):
        app.task("resize", concurrency=0)
    app.queue("gateway", concurrency=4)
    with pytest.raises(canopy.AppError, match=r"app\.queue"):
        app.task("charge", queue="gateway", concurrency=2)

    @app.task("thumbs", queue="images", concurrency=2)
    async def thumbs(args: dict[str, Any]) -> None: ...

    with pytest.raises(canopy.AppError, match="images"):
        app.queue("images", concurrency=3)
