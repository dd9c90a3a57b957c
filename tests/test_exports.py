"""The public API is pinned, and imports flow one way: server -> handlers -> nurseries."""

from __future__ import annotations

import ast
from pathlib import Path

import handlers
import nurseries
import nurseries.fanout
import nurseries.jobs
import nurseries.redis
import server

ROOT = Path(__file__).parent.parent


def test_public_api_is_pinned() -> None:
    assert sorted(nurseries.__all__) == sorted(
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
        ]
    )
    assert sorted(handlers.__all__) == sorted(
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
    assert sorted(server.__all__) == sorted(
        [
            "CanopyApp",
            "ForcedShutdown",
            "HTTPService",
            "Runtime",
            "Settings",
            "SettingsError",
            "create_app",
            "load_config",
            "load_settings",
            "serve",
        ]
    )
    assert sorted(nurseries.jobs.__all__) == sorted(
        [
            "ACTIVE",
            "CLAIMABLE",
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
    assert sorted(nurseries.fanout.__all__) == sorted(
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
    assert sorted(handlers.topics.__all__) == sorted(
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
    assert sorted(nurseries.redis.__all__) == sorted(
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
        nurseries,
        nurseries.jobs,
        nurseries.fanout,
        nurseries.redis,
        handlers,
        handlers.topics,
        server,
    )
    for package in packages:
        for name in package.__all__:
            assert hasattr(package, name), f"{package.__name__}.{name}"


def imported_roots(package: str) -> set[str]:
    roots = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return roots


def test_nurseries_is_pure_trio() -> None:
    forbidden = {"quart", "quart_trio", "hypercorn", "handlers", "server", "werkzeug"}
    assert not imported_roots("nurseries") & forbidden


def test_only_nurseries_redis_imports_coredis() -> None:
    """coredis takes a third of a second to import: a SQLite deployment never pays it."""
    import subprocess
    import sys

    code = "import server.asgi, sys; print('coredis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_handlers_never_import_server() -> None:
    assert "server" not in imported_roots("handlers")
    assert "hypercorn" not in imported_roots("handlers")
