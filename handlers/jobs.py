"""Background jobs over HTTP: a pure-Trio service, and a thin blueprint over it.

``JobsService`` validates a request against the task registry and hands the job to
the store; it is usable from any Trio program. The blueprint maps the store's and
the registry's errors to JSON responses (see docs/API.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import trio
from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, request
from quart_schema import document_querystring, document_request, document_response

from canopy.nurseries import wall_time
from canopy.nurseries.jobs import (
    IdempotencyConflict,
    Job,
    JobState,
    JobStore,
    JobStoreError,
    QueueFull,
    TaskRegistry,
    UnknownTask,
    check_args,
)

from ._errors import ApiError
from ._requests import bad_parameter, header, int_arg, json_body
from ._schema import ErrorBody

__all__ = ["MAX_BATCH", "JobRequest", "JobsService", "create_blueprint", "page_bound", "page_end"]

MAX_BATCH = 1000
MAX_LIST = 1000


# How far ahead a job may be put, and how long one may run: past these an enqueue is
# more likely a unit mistake (milliseconds for seconds) than a plan.
MAX_DELAY = 366 * 24 * 3600.0
MAX_TIMEOUT = 7 * 24 * 3600.0
MAX_ATTEMPTS = 1000


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a number")
    return float(value)


@dataclass(frozen=True)
class JobRequest:
    """An enqueue as a client asks for it. ``None`` takes the task's default;
    ``run_at`` (Unix seconds) or ``delay`` (seconds from now) puts the job later."""

    task: str
    args: dict[str, Any]
    queue: str | None = None
    priority: int | None = None
    delay: float = 0.0
    idempotency_key: str | None = None
    run_at: float | None = None
    timeout: float | None = None
    max_attempts: int | None = None

    @classmethod
    def parse(
        cls, body: Any, idempotency_key: str | None = None, *, decoded: bool = False
    ) -> JobRequest:
        """From a JSON object; ValueError names the field that is wrong. A field it
        does not know is refused, so that a misspelt one (``"dealy"``) is not quietly
        left at its default.

        ``decoded`` says the body was parsed from JSON text (as over HTTP): its args
        are JSON already, so they are not encoded once more to find out (2-3 µs of
        every ``POST /jobs``)."""
        if not isinstance(body, dict):
            raise ValueError("body: must be a JSON object")
        if not _FIELD_SET.issuperset(body):
            name = next(name for name in body if name not in _FIELD_SET)
            raise ValueError(f"{name}: unknown field; the fields are {', '.join(_FIELDS)}")
        task = body.get("task")
        if not isinstance(task, str) or not task:
            raise ValueError("task: must be a non-empty string")
        args = body.get("args", {})
        if not decoded:
            args = check_args(args)
        elif not isinstance(args, dict):
            raise ValueError("args: must be a JSON object")
        queue = body.get("queue")
        if queue is not None and (not isinstance(queue, str) or not queue):
            raise ValueError("queue: must be a non-empty string")
        priority = body.get("priority")
        if priority is not None and (
            not isinstance(priority, int) or isinstance(priority, bool) or abs(priority) > 2**31
        ):
            raise ValueError(f"priority: must be an integer from {-(2**31)} to {2**31}")
        delay = _number(body, "delay") or 0.0
        if not 0 <= delay <= MAX_DELAY:
            raise ValueError(f"delay: must be from 0 to {MAX_DELAY:.0f} seconds (366 days)")
        run_at = _number(body, "run_at")
        if run_at is not None:
            if "delay" in body:
                raise ValueError("run_at: give run_at or delay, not both")
            if run_at > wall_time() + MAX_DELAY:
                raise ValueError("run_at: at most 366 days from now")
        timeout = _number(body, "timeout")
        if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
            raise ValueError(f"timeout: must be above 0 and at most {MAX_TIMEOUT:.0f} seconds")
        attempts = body.get("max_attempts")
        if attempts is not None and (
            not isinstance(attempts, int)
            or isinstance(attempts, bool)
            or not 1 <= attempts <= MAX_ATTEMPTS
        ):
            raise ValueError(f"max_attempts: must be an integer from 1 to {MAX_ATTEMPTS}")
        key = body.get("idempotency_key", idempotency_key)
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200):
            raise ValueError("idempotency_key: must be a string of 1-200 characters")
        return cls(task, args, queue, priority, delay, key, run_at, timeout, attempts)


# What an enqueue may say: JobRequest's fields, and nothing else.
_FIELDS = tuple(field.name for field in fields(JobRequest))
_FIELD_SET = frozenset(_FIELDS)


class JobsService:
    def __init__(
        self,
        store: JobStore,
        registry: TaskRegistry,
        on_enqueued: Callable[[Job], None] | None = None,
        stamp: Callable[[str], dict[str, str] | None] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.on_enqueued = on_enqueued  # told of each new job (not of idempotent repeats)
        # Called with the task's name as each job is built; what it returns travels
        # with the job as its headers (the server's tracing puts the trace context).
        self.stamp = stamp

    def build(self, req: JobRequest) -> Job:
        spec = self.registry.get(req.task)  # UnknownTask
        return spec.new_job(
            req.args,
            run_at=req.run_at if req.run_at is not None else wall_time() + req.delay,
            queue=req.queue or None,
            priority=req.priority,
            idempotency_key=req.idempotency_key,
            headers=self.stamp(req.task) if self.stamp is not None else None,
            timeout=req.timeout,
            max_attempts=req.max_attempts,
        )

    async def enqueue(self, req: JobRequest) -> tuple[Job, bool]:
        return self._told(await self.store.enqueue(self.build(req)))

    async def enqueue_task(self, task: str, args: dict[str, Any], key: str) -> tuple[Job, bool]:
        """Enqueue ``task`` from code (another task, a service), idempotent by ``key``."""
        return await self.enqueue(JobRequest(task, args, None, None, 0.0, key))

    def _told(self, outcome: tuple[Job, bool]) -> tuple[Job, bool]:
        if outcome[1] and self.on_enqueued is not None:
            self.on_enqueued(outcome[0])
        return outcome

    async def enqueue_many(self, requests: list[JobRequest]) -> list[tuple[Job, bool] | Exception]:
        """Every request built first (one bad request refuses all), then enqueued together,
        so the store commits them in as few transactions as it can."""
        jobs = [self.build(req) for req in requests]
        results: list[tuple[Job, bool] | Exception] = [ValueError("not enqueued")] * len(jobs)

        async def one(index: int, job: Job) -> None:
            try:
                results[index] = self._told(await self.store.enqueue(job))
            except JobStoreError as exc:
                results[index] = exc

        async with trio.open_nursery() as nursery:
            for index, job in enumerate(jobs):
                nursery.start_soon(one, index, job)
        return results


class NewJob(BaseModel):
    """What ``POST /jobs`` takes (``JobRequest.parse`` checks it, as for embedders)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(None, min_length=1, description="the task's, if not given")
    priority: int | None = Field(
        None, ge=-(2**31), le=2**31, description="lower runs first; the task's, if not given"
    )
    delay: float = Field(0.0, ge=0, le=MAX_DELAY, description="seconds before it may run")
    run_at: float | None = Field(
        None, description="Unix time before which it may not run (instead of delay)"
    )
    timeout: float | None = Field(
        None, gt=0, le=MAX_TIMEOUT, description="seconds per attempt; the task's, if not given"
    )
    max_attempts: int | None = Field(
        None, ge=1, le=MAX_ATTEMPTS, description="the task's, if not given"
    )
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)


class NewJobs(BaseModel):
    jobs: list[NewJob] = Field(min_length=1, max_length=MAX_BATCH)


class JobOut(BaseModel):
    id: str
    task: str
    args: dict[str, Any]
    queue: str
    priority: int
    state: JobState
    attempts: int
    max_attempts: int
    timeout: float
    run_at: float
    lease_owner: str | None
    lease_expires: float | None
    idempotency_key: str | None
    result: Any
    error: str | None
    traceback: str | None
    progress: Any
    headers: dict[str, str] | None
    created_at: float
    updated_at: float


class JobList(BaseModel):
    jobs: list[JobOut]
    next: str | None = Field(
        description="when the page is full: the `before` of the next page, else null"
    )


class ListQuery(BaseModel):
    state: JobState | None = None
    limit: int = Field(100, ge=1, le=MAX_LIST)
    before: str | None = Field(None, description="a page's `next`: the jobs after it")


def _job_body(job: Job) -> dict[str, Any]:
    return job.to_dict()


def _store_error(exc: JobStoreError) -> ApiError:
    if isinstance(exc, QueueFull):
        return ApiError(429, "queue_full", str(exc), headers={"Retry-After": "1"}, queue=exc.queue)
    if isinstance(exc, IdempotencyConflict):
        return ApiError(409, "idempotency_conflict", str(exc), job_id=exc.existing.id)
    return ApiError(503, "store_unavailable", f"the job store failed: {exc}")


def _parse(body: Any, key: str | None) -> JobRequest:
    try:
        return JobRequest.parse(body, key, decoded=True)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise ApiError(422, "invalid_field", message or str(exc), field=field) from None


def create_blueprint(service: JobsService) -> Blueprint:
    blueprint = Blueprint("jobs", __name__, url_prefix="/jobs")

    @blueprint.post("")
    @document_request(NewJob)
    @document_response(JobOut, 202)
    @document_response(ErrorBody, 422)
    async def enqueue() -> Any:
        req = _parse(await json_body(), header(b"idempotency-key"))
        try:
            job, _created = await service.enqueue(req)
        except UnknownTask as exc:
            raise ApiError(422, "unknown_task", f"no task named {exc}", field="task") from None
        except JobStoreError as exc:
            raise _store_error(exc) from None
        return _job_body(job), 202, {"Location": f"/jobs/{job.id}"}

    @blueprint.post("/batch")
    @document_request(NewJobs)
    async def enqueue_batch() -> Any:
        body = await json_body()
        items = body.get("jobs") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
            raise ApiError(
                422, "invalid_field", f"jobs: a list of 1-{MAX_BATCH} jobs", field="jobs"
            )
        requests = [_parse(item, None) for item in items]
        try:
            results = await service.enqueue_many(requests)
        except UnknownTask as exc:
            raise ApiError(422, "unknown_task", f"no task named {exc}", field="task") from None
        out: list[dict[str, Any]] = []
        for result in results:
            if isinstance(result, tuple):
                out.append({"job": _job_body(result[0])})
            else:
                error = _store_error(result) if isinstance(result, JobStoreError) else None
                code = error.error_code if error else "failed"
                out.append({"error": code, "message": str(result)})
        return {"results": out}, 202

    @blueprint.get("/queues")
    async def queues() -> Any:
        """Waiting jobs per queue: what an autoscaler of workers reads (docs/DEPLOY.md)."""
        stats = await _store_call(service.store.queue_stats())
        now = wall_time()
        return {
            "queues": {
                queue: {
                    "waiting": waiting,
                    "oldest_age": round(max(0.0, now - oldest), 3) if oldest else 0.0,
                }
                for queue, (waiting, oldest) in sorted(stats.items())
            }
        }

    @blueprint.get("/<job_id>")
    @document_response(JobOut, 200)
    @document_response(ErrorBody, 404)
    async def get(job_id: str) -> Any:
        return _job_body(await _existing(service.store.get(job_id), job_id))

    @blueprint.delete("/<job_id>")
    async def cancel(job_id: str) -> Any:
        return _job_body(await _existing(service.store.cancel(job_id), job_id))

    @blueprint.post("/<job_id>/retry")
    async def retry(job_id: str) -> Any:
        job = await _existing(service.store.retry_dead(job_id), job_id)
        if job.state is not JobState.QUEUED:
            raise ApiError(409, "not_a_dead_letter", f"job {job_id} is {job.state.value}")
        return _job_body(job), 202

    @blueprint.get("")
    @document_querystring(ListQuery)
    @document_response(JobList, 200)
    async def list_jobs() -> Any:
        state_name = request.args.get("state")
        before_text = request.args.get("before")
        try:
            state = JobState(state_name) if state_name else None
        except ValueError:
            raise bad_parameter("state", f"one of {', '.join(s.value for s in JobState)}") from None
        limit = int_arg("limit", 100, 1, MAX_LIST)
        try:
            before = page_bound(before_text) if before_text is not None else None
        except ValueError as exc:
            raise bad_parameter("before", str(exc).partition(": ")[2] or str(exc)) from None
        jobs = await _store_call(service.store.list_jobs(state, limit, before))
        # A full page may have more after it: where the next one starts.
        more = page_end(jobs[-1]) if len(jobs) == limit else None
        return {"jobs": [_job_body(job) for job in jobs], "next": more}

    return blueprint


def page_end(job: Job) -> str:
    """The ``before`` that continues a list of jobs after ``job``: its creation time
    (exact, as ``repr`` writes a float) and its id, which orders jobs created at the
    same time."""
    return f"{job.created_at!r}_{job.id}"


def page_bound(text: str) -> tuple[float, str]:
    """``page_end``'s text as ``JobStore.list_jobs`` takes it; ValueError if it is not one."""
    created, _, job_id = text.partition("_")  # a float's repr has no "_"
    try:
        at = float(created)
    except ValueError:
        at = math.nan
    if not math.isfinite(at) or not 0 < len(job_id) <= 200:
        raise ValueError("before: the 'next' of the page before")
    return at, job_id


async def _store_call(call: Any) -> Any:
    try:
        return await call
    except JobStoreError as exc:
        raise _store_error(exc) from None


async def _existing(call: Any, job_id: str) -> Job:
    """A store call that answers with a job or None; None becomes a 404."""
    job = await _store_call(call)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id}")
    return job
