"""The public API is pinned, and imports flow one way: server -> handlers -> nurseries."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import canopy
import canopy.handlers.topics
import canopy.nurseries.fanout
import canopy.nurseries.jobs
import canopy.nurseries.redis
import canopy.server

ROOT = Path(__file__).parent.parent


def test_public_api_is_pinned() -> None:
    assert sorted(canopy.nurseries.__all__) == sorted(
        [
            "ACTIVE",
            "TERMINAL",
            "Backoff",
            "CanopyError",
            "ChildSpec",
            "Drainable",
            "GroupCommit",
            "InflightLimit",
            "Overloaded",
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
            "gather",
            "json_loads",
            "random_hex",
            "sortable_id",
            "strict_json_loads",
            "follow_trio_clock",
            "runs_inline",
            "wall_time",
        ]
    )
    assert sorted(canopy.handlers.__all__) == sorted(
        [
            "DEADLINE_ATTRIBUTE",
            "ApiError",
            "dashboard",
            "deadline",
            "demo",
            "error_body",
            "first_header",
            "health",
            "jobs",
            "orders",
            "support",
            "tasks",
            "ticker",
            "topics",
        ]
    )
    assert sorted(canopy.server.__all__) == sorted(
        [
            "App",
            "AppError",
            "AppNotFound",
            "Assembly",
            "CanopyApp",
            "Capability",
            "ForcedShutdown",
            "HTTPService",
            "Jobs",
            "Mode",
            "Runtime",
            "Settings",
            "SettingsError",
            "Task",
            "Topics",
            "load_app",
            "load_config",
            "load_settings",
            "serve",
            "setting",
        ]
    )
    assert sorted(canopy.nurseries.jobs.__all__) == sorted(
        [
            "ACTIVE",
            "CLAIMABLE",
            "DuplicateTask",
            "TERMINAL",
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
            "UnknownTask",
            "can_transition",
            "check_args",
            "new_job_id",
            "next_tick",
            "tick_key",
        ]
    )
    assert sorted(canopy.nurseries.fanout.__all__) == sorted(
        [
            "MAX_TOPIC_LENGTH",
            "Broker",
            "BrokerUnavailable",
            "CloseReason",
            "Hub",
            "HubClosed",
            "HubError",
            "InvalidTopic",
            "Item",
            "Message",
            "Presence",
            "Replay",
            "Sink",
            "SlowConsumerPolicy",
            "Subscription",
            "TooManySubscriptions",
            "TooManyTopics",
            "TopicLog",
            "TopicRule",
            "TopicRules",
            "check_pattern",
            "check_topic",
            "pattern_matches",
        ]
    )
    assert sorted(canopy.handlers.topics.__all__) == sorted(
        [
            "CLOSE_GOING_AWAY",
            "CLOSE_POLICY",
            "CLOSE_SLOW_CONSUMER",
            "CLOSE_TOO_BIG",
            "FRAMES_EXTENSION",
            "OPERATIONS",
            "Forbidden",
            "Grants",
            "InvalidToken",
            "ProtocolError",
            "Session",
            "Socket",
            "TokenIssuer",
            "TopicsService",
            "covers",
            "create_blueprint",
        ]
    )
    assert sorted(canopy.nurseries.redis.__all__) == sorted(
        [
            "RedisBroker",
            "RedisConnection",
            "RedisJobStore",
            "RedisUnavailable",
            "client_for_url",
            "redis_supervisor",
        ]
    )
    packages = (
        canopy.nurseries,
        canopy.nurseries.jobs,
        canopy.nurseries.fanout,
        canopy.nurseries.redis,
        canopy.handlers,
        canopy.handlers.topics,
        canopy.server,
    )
    for package in packages:
        for name in package.__all__:
            assert hasattr(package, name), f"{package.__name__}.{name}"


def test_the_face_is_pinned() -> None:
    """What a user imports: ``canopy.X``, each name there, each reporting itself so."""
    assert sorted(canopy.__all__) == sorted(
        [
            "ApiError",
            "App",
            "AppError",
            "Assembly",
            "Backoff",
            "CanopyError",
            "Capability",
            "ChildSpec",
            "HubError",
            "IdempotencyConflict",
            "Job",
            "JobContext",
            "JobState",
            "JobStoreError",
            "Message",
            "Overloaded",
            "QueueFull",
            "RestartIntensity",
            "RestartPolicy",
            "Retry",
            "Service",
            "ServiceState",
            "ServiceStatus",
            "Settings",
            "SettingsError",
            "SlowConsumerPolicy",
            "Supervisor",
            "SupervisorGaveUp",
            "Task",
            "UnknownTask",
            "capabilities",
            "first_completed",
            "gather",
            "reference",
            "setting",
            "testing",
        ]
    )
    for name in canopy.__all__:
        value = getattr(canopy, name)
        if not isinstance(value, types.ModuleType):
            assert f"{value.__module__}.{value.__qualname__}" == f"canopy.{name}"
    assert repr(canopy.App) == "<class 'canopy.App'>"
    assert repr(canopy.Retry(max_attempts=2)).startswith("Retry(max_attempts=2")


def test_importing_canopy_imports_no_web_stack() -> None:
    """A Trio program that uses the core or embeds a service pays for no Quart."""
    code = (
        "import sys, canopy, canopy.nurseries.jobs;"
        " print(sorted(m for m in ('quart', 'hypercorn', 'werkzeug') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stderr


def imported_roots(folder: str) -> set[str]:
    """What the modules under ``folder`` import, by top-level package; Canopy's own
    packages by their second part (``canopy.server``), the face as ``canopy``."""
    roots = set()
    for path in (ROOT / folder).rglob("*.py"):
        if path.is_relative_to(ROOT / "tests" / "project") and folder != "tests/project":
            continue  # a user's project, with names of its own
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots.update(_root(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "canopy":
                    roots.update(_root(f"canopy.{alias.name}") for alias in node.names)
                else:
                    roots.add(_root(node.module))
    return roots


def _root(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "canopy" and len(parts) > 1 and parts[1] in LAYERS:
        return ".".join(parts[:2])
    return parts[0]


LAYERS = ("server", "handlers", "nurseries")


def test_nurseries_is_pure_trio() -> None:
    forbidden = {"quart", "quart_trio", "hypercorn", "werkzeug"}
    assert not imported_roots("nurseries") & {
        *forbidden,
        "canopy",
        "canopy.handlers",
        "canopy.server",
    }


def test_only_nurseries_redis_imports_coredis() -> None:
    """coredis takes a third of a second to import: a SQLite deployment never pays it."""
    code = "import canopy.showcase, sys; print('coredis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_handlers_never_import_server() -> None:
    assert not imported_roots("handlers") & {"canopy.server", "canopy", "hypercorn"}


def test_nothing_imports_the_folders_by_their_own_names() -> None:
    """Installed, the folders exist only as ``canopy.*``: a bare ``import server`` works
    from a checkout's root by accident and nowhere else."""
    for folder in (*LAYERS, "tests", "bench", "examples"):
        assert not imported_roots(folder) & set(LAYERS), folder


def test_the_users_project_under_test_has_its_own_server_and_handlers() -> None:
    """tests/project is a user's, and takes those names on purpose (test_cli_app.py)."""
    assert imported_roots("tests/project") >= {"server", "handlers", "canopy"}
