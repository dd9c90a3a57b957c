"""Optional OpenTelemetry tracing (``CANOPY_TRACING``): one trace follows a request, the
jobs it enqueues, and their runs.

    POST /jobs                    SERVER span, a child of the caller's ``traceparent``
      enqueue demo.echo           PRODUCER span; its context goes into the job's headers
        run demo.echo             CONSUMER span, in the worker that ran it (any process)

Only ``opentelemetry-api`` is used here; where the spans go is the process's
TracerProvider. ``CANOPY_TRACING=on`` leaves that to whoever set it up (an embedding
app, or ``opentelemetry-instrument canopy serve`` with the OTEL_* variables);
``console`` installs the SDK's console exporter (spans as JSON on stderr), which needs
``opentelemetry-sdk``. ``off`` (the default) imports nothing and wraps nothing: the
request path is what it is without this module.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from canopy.nurseries.jobs import Job

__all__ = ["Tracing", "tracing_for"]


class Tracing:
    def __init__(self) -> None:
        from opentelemetry import propagate, trace

        self._trace = trace
        self._propagate = propagate
        self.tracer = trace.get_tracer("canopy")
        self.error = trace.Status(trace.StatusCode.ERROR)

    @contextmanager
    def request(self, method: str, route: str, headers: Any) -> Iterator[Any]:
        """The span of one HTTP request, continuing the caller's trace if it sent one."""
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in headers
            if key in (b"traceparent", b"tracestate")
        }
        context = self._propagate.extract(carrier) if carrier else None
        with self.tracer.start_as_current_span(
            f"{method} {route}",  # renamed by the caller to the route's pattern
            context=context,
            kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route},
        ) as span:
            yield span

    def stamp(self, task: str) -> dict[str, str] | None:
        """A PRODUCER span for enqueuing ``task``; its context, for the job's headers."""
        with self.tracer.start_as_current_span(
            f"enqueue {task}",
            kind=self._trace.SpanKind.PRODUCER,
            attributes={"canopy.job.task": task},
        ):
            carrier: dict[str, str] = {}
            self._propagate.inject(carrier)
        return carrier or None

    def job(self, job: Job) -> AbstractContextManager[Any]:
        """The CONSUMER span of one run of ``job``, in the trace that enqueued it."""
        context = self._propagate.extract(job.headers) if job.headers else None
        return self.tracer.start_as_current_span(
            f"run {job.task}",
            context=context,
            kind=self._trace.SpanKind.CONSUMER,
            attributes={
                "canopy.job.id": job.id,
                "canopy.job.task": job.task,
                "canopy.job.attempt": job.attempts,
                "canopy.job.queue": job.queue,
            },
        )


def tracing_for(mode: str) -> Tracing | None:
    if mode == "off":
        return None
    if mode == "console":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        trace.set_tracer_provider(provider)
    return Tracing()
