"""The job model as plain data: lifecycle, records, retry policy, task registry."""

from __future__ import annotations

import random
import time
from dataclasses import fields
from typing import Any

import pytest

from canopy.handlers.jobs import JobRequest
from canopy.nurseries.jobs import (
    ACTIVE,
    CLAIMABLE,
    TERMINAL,
    InvalidTransition,
    Job,
    JobState,
    RetryPolicy,
    TaskRegistry,
    UnknownTask,
    can_transition,
    check_args,
    new_job_id,
)


def test_states_partition_into_active_and_terminal() -> None:
    assert ACTIVE | TERMINAL == set(JobState)
    assert not ACTIVE & TERMINAL
    assert CLAIMABLE <= ACTIVE
    assert JobState.RUNNING not in CLAIMABLE


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        (JobState.QUEUED, JobState.RUNNING, True),
        (JobState.RUNNING, JobState.RETRYING, True),
        (JobState.RUNNING, JobState.QUEUED, True),  # lease released or expired
        (JobState.RETRYING, JobState.RUNNING, True),
        (JobState.FAILED, JobState.QUEUED, True),  # a dead letter retried by hand
        (JobState.SUCCEEDED, JobState.QUEUED, False),
        (JobState.CANCELLED, JobState.RUNNING, False),
        (JobState.QUEUED, JobState.SUCCEEDED, False),  # never without running
        (JobState.FAILED, JobState.RUNNING, False),
    ],
)
def test_lifecycle_transitions(old: JobState, new: JobState, allowed: bool) -> None:
    assert can_transition(old, new) is allowed


def test_job_records_are_immutable_and_round_trip() -> None:
    job = Job("email.send", {"to": "a@example.org"}, idempotency_key="k1")
    running = job.moved(JobState.RUNNING, now=100.0, attempts=1, lease_owner="w1")
    assert job.state is JobState.QUEUED and running.state is JobState.RUNNING
    assert running.updated_at == 100.0 and running.attempts == 1
    assert Job.from_dict(running.to_dict()) == running
    with pytest.raises(InvalidTransition, match="succeeded -> queued"):
        running.moved(JobState.SUCCEEDED).moved(JobState.QUEUED)
    assert job.same_request(Job("email.send", {"to": "a@example.org"}))
    assert not job.same_request(Job("email.send", {"to": "b@example.org"}))
    for changed in ({"queue": "bulk"}, {"priority": 1}, {"timeout": 5.0}, {"max_attempts": 1}):
        other = Job("email.send", {"to": "a@example.org"}, **changed)  # type: ignore[arg-type]
        assert not job.same_request(other), changed
    later = Job("email.send", {"to": "a@example.org"}, run_at=job.run_at + 60)
    assert job.same_request(later)  # a delay counts from each request


def test_records_built_without_init_behave_as_built_with_it() -> None:
    """``moved`` and a complete ``from_dict`` skip ``__init__``; a partial record still
    takes the defaults, and what is not a field is refused either way."""
    job = Job("email.send", {"to": "a@example.org"})
    running = job.moved(JobState.RUNNING, now=5.0, attempts=1)
    assert running == Job(
        **{**vars(job), "state": JobState.RUNNING, "attempts": 1, "updated_at": 5.0}
    )
    assert vars(job)["state"] is JobState.QUEUED and job.attempts == 0  # the original is intact
    with pytest.raises(AttributeError):
        running.attempts = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match="no field 'nope'"):
        job.moved(JobState.RUNNING, nope=1)
    partial = Job.from_dict({"task": "t", "state": "retrying"})
    assert partial.state is JobState.RETRYING and partial.max_attempts == 5 and partial.args == {}
    with pytest.raises(TypeError):
        Job.from_dict({**job.to_dict(), "nope": 1})
    with pytest.raises(ValueError):
        Job.from_dict({**job.to_dict(), "state": "lost"})
    # A record's dict is in field order however the record was built (a store's row
    # has the id first), so every answer lists a job's fields alike.
    shuffled = Job.from_dict(dict(reversed(list(running.to_dict().items()))))
    assert shuffled == running and next(iter(vars(shuffled))) == "updated_at"
    assert list(shuffled.to_dict()) == [field.name for field in fields(Job)]
    assert shuffled.to_dict()["state"] == "running"


def test_a_task_builds_its_jobs_as_the_constructor_would() -> None:
    """``TaskSpec.new_job`` gives every field itself (no ``__init__``): a field added to
    ``Job`` and forgotten there fails here."""
    registry = TaskRegistry()

    @registry.task("reports.build", queue="slow", priority=3, timeout=60)
    async def build(args: dict[str, Any]) -> None:
        pass

    spec = registry.get("reports.build")
    job = spec.new_job({"n": 1}, idempotency_key="k", headers={"traceparent": "t"})
    assert job == Job(
        "reports.build",
        {"n": 1},
        id=job.id,
        queue="slow",
        priority=3,
        max_attempts=spec.retry.max_attempts,
        timeout=60,
        run_at=job.run_at,
        idempotency_key="k",
        headers={"traceparent": "t"},
        created_at=job.created_at,
        updated_at=job.created_at,
    )
    assert vars(job).keys() == vars(Job("t")).keys()
    later = spec.new_job({}, run_at=job.run_at + 60, queue="other", priority=-1)
    assert later.state is JobState.SCHEDULED and later.queue == "other" and later.priority == -1
    assert later.id != job.id and job.state is JobState.QUEUED


def test_args_must_be_a_json_object() -> None:
    assert check_args({"n": [1, 2]}) == {"n": [1, 2]}
    with pytest.raises(ValueError, match="JSON object"):
        check_args([1, 2])
    with pytest.raises(ValueError, match="must be JSON"):
        check_args({"when": object()})


def test_an_enqueue_request_checks_its_args_unless_they_were_decoded_from_json() -> None:
    """Over HTTP the body was parsed from JSON, so its args are not encoded again to
    check them; everything else is checked the same either way."""
    assert JobRequest.parse({"task": "t", "args": {"n": 1}}).args == {"n": 1}
    with pytest.raises(ValueError, match="args: must be JSON"):
        JobRequest.parse({"task": "t", "args": {"when": object()}})
    for decoded in (False, True):
        with pytest.raises(ValueError, match="args: must be a JSON object"):
            JobRequest.parse({"task": "t", "args": [1]}, decoded=decoded)
        with pytest.raises(ValueError, match="dealy: unknown field"):
            JobRequest.parse({"task": "t", "dealy": 1}, decoded=decoded)
        with pytest.raises(ValueError, match="task: must be"):
            JobRequest.parse({"args": {}}, decoded=decoded)
        assert JobRequest.parse({"task": "t"}, "k", decoded=decoded) == JobRequest(
            "t", {}, idempotency_key="k"
        )


def test_retry_policy_backoff_and_jitter() -> None:
    policy = RetryPolicy(max_attempts=4, base=1.0, factor=3.0, cap=20.0, jitter=False)
    assert [policy.next_retry_delay(n) for n in (1, 2, 3, 4)] == [1.0, 3.0, 9.0, 20.0]
    assert [policy.retryable(n) for n in (1, 3, 4)] == [True, True, False]
    jittered = RetryPolicy(base=2.0, factor=2.0, cap=60.0)
    rng = random.Random(7)
    delays = [jittered.next_retry_delay(3, rng) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 4.0  # actually spread, not constant
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base=10, cap=1)


def test_registry_declares_tasks_with_defaults() -> None:
    registry = TaskRegistry()

    @registry.task("reports.build", queue="slow", timeout=60, retry=RetryPolicy(max_attempts=2))
    async def build(args: dict[str, Any]) -> str:
        return "done"

    spec = registry.get("reports.build")
    assert spec.function is build and spec.queue == "slow" and spec.timeout == 60
    assert spec.retry.max_attempts == 2
    assert "reports.build" in registry and [s.name for s in registry] == ["reports.build"]
    with pytest.raises(UnknownTask):
        registry.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.task("reports.build")(build)
    with pytest.raises(TypeError, match="async"):
        registry.task("sync")(lambda args: None)  # type: ignore[arg-type]


def test_job_ids_begin_with_the_time() -> None:
    """A store's id index grows at its end (see nurseries.sortable_id)."""
    now_ms = time.time_ns() // 1_000_000
    assert 0 <= int(new_job_id()[:12], 16) - now_ms < 1000
