"""GET /metrics against a real server: what it counts, in the Prometheus text format."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from tests.processes import running_server, write_config


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_requests_sheds_deadlines_services_topics_and_queues(
    tmp_path: Path,
) -> None:
    write_config(tmp_path)
    env = {
        "CANOPY_RUN_JOBS": "false",
        "CANOPY_MAX_INFLIGHT": "1",
        "CANOPY_ACCESS_LOG": "false",
        "CANOPY_TICKER_RATE": "0",  # known traffic only: no market feed
    }
    async with running_server(tmp_path, env=env) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/demo/hello")).status_code == 200
            assert (await client.get("/no/such/route")).status_code == 404
            assert (await client.get("/jobs/nope")).status_code == 404
            for _ in range(3):
                await client.post("/jobs", json={"task": "demo.echo"})
            await client.post("/topics/demo.m/messages", json={"data": 1})
            assert (await client.get("/demo/quote/a?slow=price")).status_code == 504
            statuses: list[int] = []

            async def slow() -> None:
                statuses.append((await client.get("/demo/sleep?ms=300")).status_code)

            async with trio.open_nursery() as nursery:  # one slot: the second is shed
                nursery.start_soon(slow)
                nursery.start_soon(slow)
            assert sorted(statuses) == [200, 503]
            response = await client.get("/metrics")
        assert await server.stop() == 0

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    got = samples(response.text)

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    requests = "canopy_http_requests_total"
    assert value(requests, route="/demo/hello", method="GET", status="200") == 1
    assert value(requests, route="unmatched", method="GET", status="404") == 1
    assert value(requests, route="/jobs/<job_id>", method="GET", status="404") == 1  # not the path
    assert value(requests, route="/jobs", method="POST", status="202") == 3
    assert value(requests, route="unmatched", method="GET", status="503") == 1  # shed unrouted
    assert value("canopy_http_request_duration_seconds_count", route="/jobs") == 3
    assert value("canopy_http_shed_total") == 1
    assert value("canopy_http_deadline_exceeded_total") == 1
    assert value("canopy_http_requests_in_flight") == 0  # scrapes are exempt, like health
    assert value("canopy_service_state", service="canopy/services/job_store", state="running") == 1
    assert value("canopy_service_state", service="canopy/services/hub", state="failed") == 0
    assert value("canopy_fanout_published_total") == 1
    assert value("canopy_jobs_queued", queue="default") == 3
    assert 0 <= value("canopy_jobs_oldest_queued_seconds", queue="default") < 60


async def test_metrics_count_job_outcomes_by_task_and_open_websockets(tmp_path: Path) -> None:
    write_config(tmp_path)
    async with running_server(tmp_path, env={"CANOPY_ACCESS_LOG": "false"}) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/ws") as ws:
                await ws.send_message('{"op": "subscribe", "topic": "demo.m", "id": 1}')
                await ws.get_message()  # subscribed
                await client.post("/topics/demo.m/messages", json={"data": 1})
                await ws.get_message()  # the message
                for task in ("demo.echo", "demo.echo", "demo.fail"):
                    await client.post("/jobs", json={"task": task})
                with trio.fail_after(10):  # demo.fail: three attempts, 0.2 s apart
                    while True:
                        if (await client.get("/jobs?state=failed")).json()["jobs"]:
                            break
                        await trio.sleep(0.1)
                got = samples((await client.get("/metrics")).text)
        assert await server.stop() == 0

    def value(name: str, **labels: str) -> float:
        return got.get((name, frozenset(labels.items())), 0.0)

    jobs = "canopy_jobs_total"
    assert value(jobs, task="demo.echo", event="enqueued") == 2
    assert value(jobs, task="demo.echo", event="started") == 2
    assert value(jobs, task="demo.echo", event="succeeded") == 2
    assert value(jobs, task="demo.fail", event="started") == 3
    assert value(jobs, task="demo.fail", event="retried") == 2
    assert value(jobs, task="demo.fail", event="dead") == 1
    assert value("canopy_job_runtime_seconds_count", task="demo.echo") == 2
    assert value("canopy_websockets") == 1
    assert value("canopy_fanout_subscriptions", namespace="demo") == 1
    assert value("canopy_fanout_delivered_total") == 1  # the one message ("subscribed" is not)


def test_a_total_kept_elsewhere_feeds_a_counter_by_its_increase() -> None:
    from prometheus_client import CollectorRegistry, Counter

    from canopy.server.observe._metrics_live import _Increase

    registry = CollectorRegistry()
    increase = _Increase(Counter("things", "things", ["kind"], registry=registry))
    for total in (5, 8, 8, 2, 3):  # 2: the owner restarted and counts from 0 again
        increase.update(total, "a")
    assert registry.get_sample_value("things_total", {"kind": "a"}) == 5 + 3 + 0 + 2 + 1


def test_an_operators_metrics_directory_is_emptied_of_an_earlier_runs_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from canopy.server.runtime._pool import metrics_directory

    (tmp_path / "counter_123.db").write_bytes(b"old")
    (tmp_path / "README").write_text("kept")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with metrics_directory() as directory:
        assert directory == str(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["README"]
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    with metrics_directory() as directory:
        assert Path(directory).is_dir()
    assert not Path(directory).exists()  # a directory of our own is removed
