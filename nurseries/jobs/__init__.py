"""Background jobs, the data half: lifecycle, records, retry policy, task registry.

Pure logic, no I/O: stores and the worker pool build on these.
"""

from ._job import InvalidTransition, Job, check_args, new_job_id
from ._periodic import Periodic, PeriodicScheduler, next_tick, tick_key
from ._registry import DuplicateTask, TaskRegistry, TaskSpec, UnknownQueue, UnknownTask
from ._retry import RetryPolicy
from ._runner import JobContext, JobRunner, Notify, job_event, resident_memory
from ._sqlite import SQLiteJobStore
from ._state import ACTIVE, CLAIMABLE, TERMINAL, JobState, can_transition
from ._store import IdempotencyConflict, JobStore, JobStoreError, QueueFull

__all__ = [
    "ACTIVE",
    "CLAIMABLE",
    "TERMINAL",
    "DuplicateTask",
    "IdempotencyConflict",
    "InvalidTransition",
    "Job",
    "JobContext",
    "JobRunner",
    "JobState",
    "JobStore",
    "JobStoreError",
    "Notify",
    "Periodic",
    "PeriodicScheduler",
    "QueueFull",
    "RetryPolicy",
    "SQLiteJobStore",
    "TaskRegistry",
    "TaskSpec",
    "UnknownQueue",
    "UnknownTask",
    "can_transition",
    "check_args",
    "job_event",
    "new_job_id",
    "next_tick",
    "resident_memory",
    "tick_key",
]
