"""The public API is pinned, and imports flow one way: server -> handlers -> nurseries."""

from __future__ import annotations

import ast
import functools
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

ROOT = Path(__file__).parents[2]


def test_public_api_is_pinned() -> None:
    assert sorted(canopy.nurseries.__all__) == sorted(
        [
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
            "bearer_token_of",
            "dashboard",
            "deadline",
            "demo",
            "error_body",
            "first_header",
            "grants",
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
            "Outlet",
            "Presence",
            "RelayBusy",
            "RelayClient",
            "RelayListener",
            "RelayUnavailable",
            "Replay",
            "Sink",
            "SlowConsumerPolicy",
            "Snapshot",
            "Version",
            "SubscriberGone",
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
            "DirectSocket",
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
            "encode_frames",
            "serve_socket",
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
    """A Trio program that uses the core or embeds a capability's service pays for no
    Quart."""
    code = (
        "import sys, canopy, canopy.nurseries.jobs;"
        "from canopy.handlers.orders import OrdersService;"
        "from canopy.handlers.support import SupportService;"
        "from canopy.handlers.ticker import TickerService;"
        "from canopy.handlers.topics import Forbidden, TopicsService;"
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


# Where each installed package's modules are in the checkout (see pyproject's package-dir).
PACKAGE_DIRS = {
    "canopy": ROOT / "server" / "canopy",
    "canopy.server": ROOT / "server",
    "canopy.handlers": ROOT / "handlers",
    "canopy.nurseries": ROOT / "nurseries",
}


def module_files() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if package == "canopy.server" and parts[0] == "canopy":
                continue  # the face, mapped on its own
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports, at any depth of its code (a lazy
    import in a function or under TYPE_CHECKING is still an arrow)."""
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source in modules:
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    found.add(child if child in modules else source)
    found.discard(name)
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Each module of the package, and the package's modules it imports."""
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each set of modules that reach one another (Tarjan's strongly connected parts)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            part = []
            while (member := stack.pop()) != node:
                part.append(member)
            if part:
                found.append(sorted([node, *part]))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    """Imports run one way between modules too, not only between the layers: a circle
    held together by a lazy import breaks the day someone imports eagerly."""
    assert circles(import_graph()) == []
    # The test reads what it should: a planted circle is found.
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert circles(planted) == [["a", "b", "c"]]


SERVER_ROOMS = ("config", "observe", "transport", "pipeline", "app", "capabilities", "runtime")


def test_the_servers_rooms_import_only_downward() -> None:
    """canopy.server's subpackages, bottom first: each imports only from those before
    it (see server/__init__.py)."""
    graph = import_graph()
    rank = {room: n for n, room in enumerate(SERVER_ROOMS)}

    def room(name: str) -> str | None:
        parts = name.split(".")
        return parts[2] if len(parts) > 2 and parts[:2] == ["canopy", "server"] else None

    rooms = {room(name) for name in graph} - {None}
    assert rooms == set(SERVER_ROOMS)
    upward = [
        f"{name} -> {target}"
        for name, targets in graph.items()
        if (here := room(name)) is not None
        for target in targets
        if (there := room(target)) is not None and rank[there] > rank[here]
    ]
    assert upward == []


def test_a_chain_of_imports_within_a_package_is_at_most_five_modules() -> None:
    """Inside one package (a room of the server, a capability, a core package), a
    reader follows at most five modules from where they start to the bottom: its
    ``__init__`` is the door, not counted. Across packages, the layers and rooms above
    keep the order."""
    modules, graph = module_files(), import_graph()

    def package(name: str) -> str:
        return name if modules[name].name == "__init__.py" else name.rpartition(".")[0]

    longest: dict[str, list[str]] = {}

    def chain(name: str) -> list[str]:
        if name not in longest:
            inside = [t for t in graph[name] if package(t) == package(name) and t != package(name)]
            longest[name] = [name, *max((chain(t) for t in inside), key=len, default=[])]
        return longest[name]

    too_long = [
        " -> ".join(found)
        for name in graph
        if modules[name].name != "__init__.py" and len(found := chain(name)) > 5
    ]
    assert too_long == []
