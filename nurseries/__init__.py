"""Canopy's structured-concurrency core: pure Trio, no web framework.

Any Trio program can use it: the supervision tree (:class:`Supervisor`), the
service start protocol (:class:`Service`), restart policies, load shedding
(:class:`InflightLimit`), concurrent sub-calls (:func:`gather`,
:func:`first_completed`), group commit for stores (:class:`GroupCommit`) and one
SQLite database behind ``trio.to_thread`` (:class:`SqliteDatabase`), the wall clock
jobs are stamped with (:func:`wall_time`, which a test on a ``MockClock`` makes follow
Trio's with :func:`follow_trio_clock`), random ids that
cost no system call each (:func:`random_hex`, and :func:`sortable_id`, time first for
an index that grows at its end), and JSON decoded by orjson
wherever it reads exactly what ``json`` reads (:func:`json_loads`, and
:func:`strict_json_loads` for what clients send).
"""

from ._concurrency import first_completed, gather
from ._errors import CanopyError, Overloaded, SupervisorGaveUp
from ._failures import RepeatingFailure
from ._group_commit import GroupCommit
from ._ids import random_hex, sortable_id
from ._json import json_loads, strict_json_loads
from ._limits import InflightLimit
from ._restart import Backoff, RestartIntensity, RestartPolicy
from ._retention import PRUNE_BATCH, Pruner
from ._service import Drainable, Service
from ._sqlite import SqliteDatabase
from ._state import ACTIVE, TERMINAL, ServiceState, ServiceStatus
from ._supervisor import ChildSpec, Supervisor
from ._wall_clock import follow_trio_clock, runs_inline, wall_time

__all__ = [
    "ACTIVE",
    "PRUNE_BATCH",
    "TERMINAL",
    "Backoff",
    "CanopyError",
    "ChildSpec",
    "Drainable",
    "GroupCommit",
    "InflightLimit",
    "Overloaded",
    "Pruner",
    "RepeatingFailure",
    "RestartIntensity",
    "RestartPolicy",
    "Service",
    "ServiceState",
    "ServiceStatus",
    "SqliteDatabase",
    "Supervisor",
    "SupervisorGaveUp",
    "first_completed",
    "follow_trio_clock",
    "gather",
    "json_loads",
    "random_hex",
    "runs_inline",
    "sortable_id",
    "strict_json_loads",
    "wall_time",
]
