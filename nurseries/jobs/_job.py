"""The job record: what a store keeps about one unit of background work."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field, fields
from typing import Any

from .._ids import sortable_id
from .._wall_clock import wall_time
from ._state import ACTIVE, TERMINAL, JobState, can_transition

__all__ = ["InvalidTransition", "Job", "check_args", "new_job_id"]


class InvalidTransition(ValueError):
    """A state change the lifecycle does not allow (see ``_state``)."""


def new_job_id() -> str:
    """A job's id: time first (:func:`canopy.nurseries.sortable_id`), so the id index grows
    at its end, and ids sort by when the jobs were made."""
    return sortable_id()


def check_args(args: Any) -> dict[str, Any]:
    """Arguments as an enqueue must accept them: a JSON object. Checked once, at enqueue,
    not on every state change of the record."""
    if not isinstance(args, dict):
        raise ValueError("args: must be a JSON object")
    try:
        json.dumps(args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"args: must be JSON: {exc}") from None
    return args


@dataclass(frozen=True)
class Job:
    """Immutable: every change is a new record, which is what a store writes.

    Times are seconds since the epoch, shared by every process using the store.
    """

    task: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_job_id)
    queue: str = "default"
    priority: int = 0  # lower runs first
    state: JobState = JobState.QUEUED
    attempts: int = 0
    max_attempts: int = 5
    timeout: float = 300.0
    run_at: float = field(default_factory=wall_time)
    lease_owner: str | None = None
    lease_expires: float | None = None
    idempotency_key: str | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    progress: Any = None
    # Carried from the enqueuer to the run, untouched by Canopy: e.g. the W3C trace
    # context (traceparent) that links a job's run to the request that enqueued it.
    headers: dict[str, str] | None = None
    created_at: float = field(default_factory=wall_time)
    updated_at: float = field(default_factory=wall_time)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def moved(self, state: JobState, now: float | None = None, **changes: Any) -> Job:
        """This job in ``state``, with ``changes``; refuses what the lifecycle forbids."""
        if not can_transition(self.state, state):
            raise InvalidTransition(f"job {self.id}: {self.state.value} -> {state.value}")
        if not _FIELDS.issuperset(changes):
            unknown = sorted(set(changes) - _FIELDS)
            raise TypeError(f"Job has no field {unknown[0]!r}")
        # A shallow copy with the changes set: what dataclasses.replace does, without
        # running __init__ again (twenty frozen-field assignments per state change), and
        # without copy.copy's trip through __reduce_ex__.
        data = {**vars(self), **changes}
        data["state"] = state
        data["updated_at"] = wall_time() if now is None else now
        return _with_fields(data)

    def same_request(self, other: Job) -> bool:
        """Whether an enqueue under the same idempotency key asked for the same thing:
        the same work, run the same way. Not when it may run (a delay is relative to
        the moment of asking, so a repeat's ``run_at`` differs), nor its headers."""
        return (
            self.task == other.task
            and self.args == other.args
            and self.queue == other.queue
            and self.priority == other.priority
            and self.timeout == other.timeout
            and self.max_attempts == other.max_attempts
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field, the state as its value. Shallow: args, result and progress are
        the job's own (JSON) values, not copies (``asdict`` deep-copies them, on every
        answer that shows a job)."""
        out = dict(zip(_FIELD_ORDER, _field_values(vars(self)), strict=True))
        out["state"] = self.state.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """A job from ``to_dict``'s output (missing fields take their defaults).

        A store reads every job it claims through here, so a complete record skips
        ``__init__``, which sets each of the twenty fields through ``object.__setattr__``.
        """
        state = _STATES.get(data["state"]) or JobState(data["state"])
        if cls is Job and data.keys() == _FIELDS:
            return _with_fields({**data, "state": state})
        return cls(**{**data, "state": state})


_FIELD_ORDER = tuple(f.name for f in fields(Job))
# Every field's value from a record's __dict__, in one C call: ``to_dict`` answers each
# POST /jobs, and twenty getattr calls were most of its time.
_field_values = operator.itemgetter(*_FIELD_ORDER)
_FIELDS = frozenset(_FIELD_ORDER)
_STATES = {state.value: state for state in JobState}


def _with_fields(data: dict[str, Any]) -> Job:
    """A Job whose attributes are ``data``: its callers make sure it holds every field."""
    job = object.__new__(Job)
    vars(job).update(data)
    return job
