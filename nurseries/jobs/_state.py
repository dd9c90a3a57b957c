"""A job's lifecycle as data.

    queued ──claim──> running ──ok──> succeeded
      ^                  │ └──error, attempts left──> retrying ──due──> queued
    scheduled ──due──────┘ └──error, none left──────> failed (dead letter)
    any active state ──cancel──> cancelled

A job in a TERMINAL state never changes again, except that a dead letter may be
re-queued by an operator (``failed`` -> ``queued``).
"""

from __future__ import annotations

import enum

__all__ = ["ACTIVE", "CLAIMABLE", "TERMINAL", "JobState", "can_transition"]


class JobState(enum.Enum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset({JobState.QUEUED, JobState.SCHEDULED, JobState.RUNNING, JobState.RETRYING})
TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
# States a worker may claim from, once the job's run_at has come.
CLAIMABLE = frozenset({JobState.QUEUED, JobState.SCHEDULED, JobState.RETRYING})

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.SCHEDULED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RETRYING: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.RETRYING,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.QUEUED,  # lease released (graceful stop) or expired (worker died)
        }
    ),
    JobState.FAILED: frozenset({JobState.QUEUED}),  # an operator's retry of a dead letter
    JobState.SUCCEEDED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(old: JobState, new: JobState) -> bool:
    return new in _ALLOWED[old]
