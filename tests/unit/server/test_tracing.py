"""Tracing in-process, with the OpenTelemetry SDK's in-memory exporter: one trace
follows a request, the job it enqueued, and the job's run; with tracing off nothing
is traced and nothing of OpenTelemetry is imported."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from canopy.server import Settings
from canopy.showcase import create_app

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    """The process's one TracerProvider (OpenTelemetry allows setting it once)."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tracer_provider)


async def test_a_request_its_job_and_the_run_are_one_trace(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    EXPORTER.clear()
    app = create_app().boot(Settings(access_log=False, data_dir=str(tmp_path), tracing="on"))
    app.runtime.lifespan_owns_tree = False
    await nursery.start(app.runtime.tree.run)
    client = app.test_client()
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await client.post(
        "/jobs", json={"task": "demo.echo", "args": {"n": 1}}, headers={"traceparent": caller}
    )
    assert response.status_code == 202
    job_id = (await response.get_json())["id"]
    with trio.fail_after(10):
        while True:
            job = await (await client.get(f"/jobs/{job_id}")).get_json()
            if job["state"] == "succeeded":
                break
            await trio.sleep(0.02)
    app.runtime.tree.shutdown()

    spans = {span.name: span for span in EXPORTER.get_finished_spans()}
    request, enqueue, run = spans["POST /jobs"], spans["enqueue demo.echo"], spans["run demo.echo"]
    trace_id = int("0af7651916cd43dd8448eb211c80319c", 16)
    assert {request.context.trace_id, enqueue.context.trace_id, run.context.trace_id} == {trace_id}
    assert request.parent.span_id == int("b7ad6b7169203331", 16)  # the caller's span
    assert enqueue.parent.span_id == request.context.span_id
    assert run.parent.span_id == enqueue.context.span_id  # across the store, by headers
    assert request.kind is trace.SpanKind.SERVER and run.kind is trace.SpanKind.CONSUMER
    assert request.attributes["http.response.status_code"] == 202
    assert run.attributes["canopy.job.id"] == job_id
    assert spans["GET /jobs/<job_id>"].attributes["http.route"] == "/jobs/<job_id>"


async def test_a_failing_job_marks_its_span_as_an_error(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    EXPORTER.clear()
    app = create_app().boot(Settings(access_log=False, data_dir=str(tmp_path), tracing="on"))
    app.runtime.lifespan_owns_tree = False
    await nursery.start(app.runtime.tree.run)
    client = app.test_client()
    await client.post("/jobs", json={"task": "demo.fail"})
    with trio.fail_after(10):
        while True:
            if [s for s in EXPORTER.get_finished_spans() if s.name == "run demo.fail"]:
                break
            await trio.sleep(0.02)
    app.runtime.tree.shutdown()
    run: Any = next(s for s in EXPORTER.get_finished_spans() if s.name == "run demo.fail")
    assert run.status.status_code is trace.StatusCode.ERROR
    assert run.events[0].name == "exception"


async def test_with_tracing_off_nothing_is_traced_and_nothing_imported(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    EXPORTER.clear()
    app = create_app().boot(Settings(access_log=False, data_dir=str(tmp_path)))
    assert app.runtime.tracing is None
    app.runtime.lifespan_owns_tree = False
    await nursery.start(app.runtime.tree.run)
    response = await app.test_client().post("/jobs", json={"task": "demo.echo"})
    assert response.status_code == 202
    assert (await response.get_json())["headers"] is None
    app.runtime.tree.shutdown()
    assert EXPORTER.get_finished_spans() == ()
    code = (
        "import canopy.showcase, sys;"
        " print(any(m.startswith('opentelemetry') for m in sys.modules))"
    )
    out = await trio.run_process([sys.executable, "-c", code], capture_stdout=True)
    assert out.stdout.strip() == b"False"
