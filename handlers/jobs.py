"""Background jobs over HTTP: a pure-Trio service, and a thin blueprint over it.

``JobsService`` validates a request against the task registry and hands the job to
the store; it is usable from any Trio program. The blueprint maps the store's and
the registry's errors to JSON responses (see docs/API.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from pydantic import BaseModel, ConfigDict, Field, create_model
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
    UnknownQueue,
    UnknownTask,
    check_args,
)

from ._errors import ApiError, store_unavailable
from ._requests import bad_parameter, caller_grants, header, int_arg, json_body, require
from ._schema import ErrorBody
from .grants import TokenIssuer

__all__ = ["MAX_BATCH", "JobRequest", "JobsService", "create_blueprint", "page_bound", "page_end"]

MAX_BATCH = 1000
MAX_LIST = 1000

# How far ahead a job may be put, and how long one may run: past these an enqueue is
# more likely a unit mistake (milliseconds for seconds) than a plan.
MAX_DELAY = 366 * 24 * 3600.0
MAX_TIMEOUT = 7 * 24 * 3600.0
MAX_ATTEMPTS = 1000


def _plain(number: float | None) -> str:
    """``31622400``, not ``3.16224e+07``."""
    assert number is not None
    return f"{number:.0f}" if float(number).is_integer() else f"{number:g}"


@dataclass(frozen=True)
class _Rule:
    """What one field of an enqueue must be. ``JobRequest.parse`` checks a request
    against these, and the OpenAPI document's ``NewJob`` is made from them: one
    source for both. ``low``/``high`` bound a number (or a string's length),
    ``above`` is a number's exclusive lower bound; ``nullable``: null means "not
    given"."""

    kind: type
    description: str
    low: float | None = None
    high: float | None = None
    above: float | None = None
    nullable: bool = True
    unit: str = ""

    def accepts(self, value: Any) -> bool:
        kind = self.kind
        if kind is str:
            return isinstance(value, str) and self._within(len(value))
        if kind is dict:
            return isinstance(value, dict)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if kind is int:
            return isinstance(value, int) and self._within(value)
        return math.isfinite(value) and self._within(value)

    def _within(self, value: float) -> bool:
        return (
            (self.low is None or value >= self.low)
            and (self.high is None or value <= self.high)
            and (self.above is None or value > self.above)
        )

    @property
    def expected(self) -> str:
        """What the refusal says the field must be."""
        if self.kind is dict:
            return "must be a JSON object"
        if self.kind is str:
            if self.high is None:
                return "must be a non-empty string"
            return f"must be a string of {_plain(self.low)}-{_plain(self.high)} characters"
        noun = "an integer" if self.kind is int else "a number"
        unit = f" {self.unit}" if self.unit else ""
        if self.above is not None:
            return (
                f"must be {noun} above {_plain(self.above)} and at most {_plain(self.high)}{unit}"
            )
        if self.low is not None:
            return f"must be {noun} from {_plain(self.low)} to {_plain(self.high)}{unit}"
        return f"must be {noun}"

    def schema_field(self) -> tuple[Any, Any]:
        """The field as pydantic declares it, for the OpenAPI document."""
        limits: dict[str, Any] = {}
        if self.kind is str:
            limits = {"min_length": int(self.low or 1)}
            if self.high is not None:
                limits["max_length"] = int(self.high)
        elif self.kind is not dict:
            limits = {
                key: bound
                for key, bound in (("ge", self.low), ("le", self.high), ("gt", self.above))
                if bound is not None
            }
            if self.kind is float:
                limits["allow_inf_nan"] = False
        if self.kind is dict:  # absent: an empty object
            return dict[str, Any], Field(default_factory=dict, description=self.description)
        if not self.nullable:  # required
            return self.kind, Field(description=self.description, **limits)
        return self.kind | None, Field(None, description=self.description, **limits)


_RULES = {
    "task": _Rule(str, "the task's name", low=1, nullable=False),
    "args": _Rule(dict, "the task's arguments, any JSON object", nullable=False),
    "queue": _Rule(str, "the task's, if not given", low=1),
    "priority": _Rule(int, "lower runs first; the task's, if not given", -(2**31), 2**31),
    "delay": _Rule(float, "seconds before it may run", 0, MAX_DELAY, unit="seconds"),
    "run_at": _Rule(float, "Unix time before which it may not run (instead of delay)"),
    "timeout": _Rule(
        float, "seconds per attempt; the task's, if not given", None, MAX_TIMEOUT, 0,
        unit="seconds",
    ),
    "max_attempts": _Rule(int, "the task's, if not given", 1, MAX_ATTEMPTS),
    "idempotency_key": _Rule(str, "as the Idempotency-Key header", 1, 200),
}  # fmt: skip


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
        """From a JSON object, by the rules above; ValueError names the field that is
        wrong. A field it does not know is refused, so that a misspelt one
        (``"dealy"``) is not quietly left at its default.

        ``decoded`` says the body was parsed from JSON text (as over HTTP): its args
        are JSON already, so they are not encoded once more to find out."""
        if not isinstance(body, dict):
            raise ValueError("body: must be a JSON object")
        for name, value in body.items():
            rule = _RULES.get(name)
            if rule is None:
                raise ValueError(f"{name}: unknown field; the fields are {', '.join(_RULES)}")
            if not rule.accepts(value) and not (value is None and rule.nullable):
                raise ValueError(f"{name}: {rule.expected}")
        task = body.get("task")
        if task is None:
            raise ValueError(f"task: {_RULES['task'].expected}")
        args = body.get("args", {})
        if not decoded:
            args = check_args(args)
        delay = body.get("delay")
        run_at = body.get("run_at")
        if run_at is not None:
            if "delay" in body:
                raise ValueError("run_at: give run_at or delay, not both")
            if run_at > wall_time() + MAX_DELAY:
                raise ValueError("run_at: at most 366 days from now")
            run_at = float(run_at)
        timeout = body.get("timeout")
        key = body.get("idempotency_key", idempotency_key)
        if key is not None and not _RULES["idempotency_key"].accepts(key):
            raise ValueError(f"idempotency_key: {_RULES['idempotency_key'].expected}")
        return cls(
            task,
            args,
            body.get("queue"),
            body.get("priority"),
            0.0 if delay is None else float(delay),
            key,
            run_at,
            None if timeout is None else float(timeout),
            body.get("max_attempts"),
        )


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
        if req.queue:
            self.registry.check_queue(req.queue)  # UnknownQueue: it would never run
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


# What POST /jobs takes, in the OpenAPI document: made from the rules JobRequest.parse
# checks, so the two cannot disagree. (A type checker sees a model, not its fields.)
if TYPE_CHECKING:
    NewJob = BaseModel
else:
    NewJob = create_model(
        "NewJob",
        __config__=ConfigDict(extra="forbid"),
        **{name: rule.schema_field() for name, rule in _RULES.items()},
    )


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


def _not_runnable(exc: UnknownTask | UnknownQueue) -> ApiError:
    """An enqueue that names a task this app does not have, or a queue nothing runs."""
    if isinstance(exc, UnknownTask):
        return ApiError(422, "unknown_task", f"no task named {exc}", field="task")
    return ApiError(422, "invalid_field", str(exc), field="queue")


def _store_error(exc: JobStoreError) -> ApiError:
    if isinstance(exc, QueueFull):
        return ApiError(429, "queue_full", str(exc), headers={"Retry-After": "1"}, queue=exc.queue)
    if isinstance(exc, IdempotencyConflict):
        return ApiError(409, "idempotency_conflict", str(exc), job_id=exc.existing.id)
    return store_unavailable("job", exc)


def _parse(body: Any, key: str | None) -> JobRequest:
    try:
        return JobRequest.parse(body, key, decoded=True)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise ApiError(422, "invalid_field", message or str(exc), field=field) from None


def create_blueprint(service: JobsService, issuer: TokenIssuer | None = None) -> Blueprint:
    """The jobs API. Enqueuing a task takes the grant ``jobs:enqueue:<task>``, and
    cancelling or retrying a job ``jobs:admin``: from the caller's token, or from the
    anonymous grants of ``issuer`` (none without one). Reading is open."""
    blueprint = Blueprint("jobs", __name__, url_prefix="/jobs")
    issuer = issuer if issuer is not None else TokenIssuer()

    @blueprint.post("")
    @document_request(NewJob)
    @document_response(JobOut, 202)
    @document_response(ErrorBody, 422)
    async def enqueue() -> Any:
        grants = caller_grants(issuer)
        req = _parse(await json_body(), header(b"idempotency-key"))
        require(grants, f"jobs:enqueue:{req.task}")
        try:
            job, _created = await service.enqueue(req)
        except (UnknownTask, UnknownQueue) as exc:
            raise _not_runnable(exc) from None
        except JobStoreError as exc:
            raise _store_error(exc) from None
        return _job_body(job), 202, {"Location": f"/jobs/{job.id}"}

    @blueprint.post("/batch")
    @document_request(NewJobs)
    async def enqueue_batch() -> Any:
        grants = caller_grants(issuer)
        body = await json_body()
        items = body.get("jobs") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
            raise ApiError(
                422, "invalid_field", f"jobs: a list of 1-{MAX_BATCH} jobs", field="jobs"
            )
        requests = [_parse(item, None) for item in items]
        for task in sorted({req.task for req in requests}):
            require(grants, f"jobs:enqueue:{task}")
        try:
            results = await service.enqueue_many(requests)
        except (UnknownTask, UnknownQueue) as exc:
            raise _not_runnable(exc) from None
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
        require(caller_grants(issuer), "jobs:admin")
        return _job_body(await _existing(service.store.cancel(job_id), job_id))

    @blueprint.post("/<job_id>/retry")
    async def retry(job_id: str) -> Any:
        require(caller_grants(issuer), "jobs:admin")
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
