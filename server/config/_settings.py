"""Canopy's own settings: defaults, then a ``[canopy]`` table in a TOML file, then ``CANOPY_*``.

Hypercorn's settings (bind, keep-alive, graceful_timeout, TLS...) stay in Hypercorn's
own ``Config``, read from the same TOML file; this module holds only what Canopy adds.
An app and each capability it includes may declare settings of their own, a section:
a dataclass of :func:`setting` fields, read from ``[canopy.<section>]`` and
``CANOPY_<SECTION>_<NAME>``. Every value is parsed once at start-up, and a bad one
raises :class:`SettingsError` naming the setting, which the CLI prints as one line
before exiting with code 2.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from canopy.handlers.grants import operation_grants
from canopy.nurseries.fanout import (
    InvalidTopic,
    SlowConsumerPolicy,
    TopicRule,
    check_pattern,
)
from canopy.nurseries.jobs import Periodic

__all__ = [
    "ENV_PREFIX",
    "Settings",
    "SettingsError",
    "describe",
    "load_settings",
    "section_prefix",
    "setting",
]

ENV_PREFIX = "CANOPY_"
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """An invalid setting; the message names it and says what was expected."""


def _number(value: Any, expected: str) -> float:
    """``value`` as a number, or ValueError saying what was expected."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(expected) from None


def _positive_float(value: Any) -> float:
    expected = "must be a positive number of seconds"
    number = _number(value, expected)
    if not number > 0 or number == float("inf"):
        raise ValueError(expected)
    return number


def _non_negative_float(value: Any) -> float:
    expected = "must be zero or a positive number of seconds"
    number = _number(value, expected)
    if not number >= 0 or number == float("inf"):
        raise ValueError(expected)
    return number


def _whole_number(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a whole number")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError("must be a whole number") from None
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        return number

    return parse


_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)


def _fraction(value: Any) -> float:
    number = _number(value, "must be a fraction from 0 to 1")
    if not 0.0 <= number <= 1.0:
        raise ValueError("must be a fraction from 0 to 1")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _synchronous(value: Any) -> str:
    text = str(value).strip().upper()
    if text not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError("must be FULL, NORMAL, OFF or EXTRA")
    return text


STORE_SCHEMES = ("sqlite", "redis", "rediss", "unix", "redis+cluster", "redis+sentinel")


def _store_url(value: Any) -> str:
    """'' (SQLite under data_dir), sqlite:///relative.db, sqlite:////absolute.db, or a
    Redis URL as ``canopy.nurseries.redis`` reads them."""
    text = str(value).strip()
    if not text:
        return ""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in STORE_SCHEMES:
        raise ValueError(f"must be a URL with a scheme of {', '.join(STORE_SCHEMES)}")
    if scheme == "sqlite" and (not rest.startswith("/") or rest == "/"):
        raise ValueError("must be sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return text


BROKER_SCHEMES = ("memory", "redis", "rediss", "unix", "redis+cluster", "redis+sentinel")


def _broker_url(value: Any) -> str:
    text = str(value).strip() or "memory://"
    scheme, sep, _rest = text.partition("://")
    if not sep or scheme not in BROKER_SCHEMES:
        raise ValueError(f"must be memory:// or a URL with a scheme of {', '.join(BROKER_SCHEMES)}")
    return text


TRACING_MODES = ("off", "on", "console")


def _tracing(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in TRACING_MODES:
        raise ValueError(f"must be one of {', '.join(TRACING_MODES)}")
    needs = {"on": "opentelemetry.trace", "console": "opentelemetry.sdk"}.get(text)
    if needs is not None and not _importable(needs):
        raise ValueError(
            f"{text} must have {needs} installed: pip install 'canopy-server[tracing]'"
        )
    return text


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _redis_prefix(value: Any) -> str:
    text = str(value).strip()
    if not text or any(c in text for c in "{} "):
        raise ValueError("must be a non-empty key prefix without braces or spaces")
    return text


def _log_level(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return text


def _patterns(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("must be comma-separated topic patterns")
    try:
        return tuple(check_pattern(str(item).strip()) for item in items if str(item).strip())
    except InvalidTopic as exc:
        raise ValueError(f"must be topic patterns: {exc}") from None


def _operations(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("must be comma-separated operation grants, as jobs:admin")
    try:
        return operation_grants([str(item).strip() for item in items if str(item).strip()])
    except ValueError as exc:
        raise ValueError(f"must be operation grants, as jobs:enqueue:shop.*: {exc}") from None


class RuleSpec(NamedTuple):
    """A topic rule as configured: a window left out takes the configured default."""

    pattern: str
    policy: SlowConsumerPolicy
    history_size: int | None = None
    history_ttl: float | None = None

    def rule(self, default: TopicRule) -> TopicRule:
        size = default.history_size if self.history_size is None else self.history_size
        ttl = default.history_ttl if self.history_ttl is None else self.history_ttl
        return TopicRule(self.pattern, self.policy, size, ttl)


def _topic_rules(value: Any) -> tuple[RuleSpec, ...]:
    if isinstance(value, tuple) and all(isinstance(spec, RuleSpec) for spec in value):
        return value
    items = value.split(",") if isinstance(value, str) else value
    specs = []
    for item in items:
        if not str(item).strip():
            continue
        pattern, _, text = str(item).strip().partition("=")
        policy, *window = text.split(":")
        try:
            size = int(window[0]) if window else None
            ttl = float(window[1]) if len(window) > 1 else None
            spec = RuleSpec(check_pattern(pattern), SlowConsumerPolicy(policy), size, ttl)
            spec.rule(TopicRule())  # the window's own checks
            specs.append(spec)
        except (ValueError, InvalidTopic, IndexError):
            raise ValueError(
                f"must be PATTERN=POLICY[:SIZE[:TTL]] with POLICY one of "
                f"{', '.join(p.value for p in SlowConsumerPolicy)} (bad: {item!r})"
            ) from None
    return tuple(specs)


def _schedules(value: Any) -> tuple[Periodic, ...]:
    """``NAME=TASK@every:SECONDS`` or ``NAME=TASK@CRON`` (five fields, UTC), separated
    by ``;``. Whether each task exists is the app's to say, when it is assembled."""
    if isinstance(value, tuple) and all(isinstance(p, Periodic) for p in value):
        return value
    items = value.split(";") if isinstance(value, str) else value
    schedules: dict[str, Periodic] = {}
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        name, _, rest = text.partition("=")
        task, _, when = rest.partition("@")
        name, task, when = name.strip(), task.strip(), when.strip()
        if not name or not task or not when:
            raise ValueError(f"must be NAME=TASK@every:SECONDS or NAME=TASK@CRON (bad: {text!r})")
        if name in schedules:
            raise ValueError(f"{name}: must be scheduled once")
        try:
            if when.startswith("every:"):
                schedules[name] = Periodic(name, task, every=float(when[6:]))
            else:
                schedules[name] = Periodic(name, task, cron=when)
        except ValueError as exc:
            raise ValueError(f"must be every:SECONDS or a cron expression ({exc})") from None
    return tuple(schedules.values())


def _secret(value: Any) -> str:
    text = str(value)
    if text and len(text.encode()) < 32:
        raise ValueError("must be at least 32 bytes (HS256 needs a key as long as its hash)")
    return text


def setting(default: Any, parse: Callable[[Any], Any], doc: str, *, secret: bool = False) -> Any:
    """A field of a settings dataclass: its default, the function that reads a value
    from the config file or the environment (raising ValueError, whose message says
    what the value "must" be), and one line for ``canopy settings``. A ``secret``'s
    value is never printed, not even when it is refused."""
    metadata = {"parse": parse, "doc": doc, "secret": secret}
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """What an operator can tune; each field maps to ``CANOPY_<NAME>``."""

    request_timeout: float = setting(
        30.0, _positive_float, "default deadline of a request, in seconds (504 when it passes)"
    )
    max_inflight: int = setting(
        4096, _positive_int, "requests served at once before new ones get 503 + Retry-After"
    )
    retry_after: int = setting(1, _positive_int, "Retry-After seconds sent with a 503")
    max_body_size: int = setting(1_048_576, _positive_int, "largest request body, in bytes")
    drain_linger: float = setting(
        1.0,
        _non_negative_float,
        "during a drain, how long idle keep-alive connections stay open to answer "
        "with 'Connection: close' instead of being reset",
    )
    service_grace: float = setting(
        10.0, _positive_float, "grace of each background service when stopping, in seconds"
    )
    data_dir: str = setting("var", str, "directory for embedded data (SQLite and the like)")
    log_level: str = setting("info", _log_level, "debug, info, warning or error")
    access_log: bool = setting(True, _boolean, "one JSON line per request on stdout")
    run_jobs: bool = setting(
        True, _boolean, "run jobs in the server too (false: leave them to 'canopy worker')"
    )
    job_concurrency: int = setting(
        1000,
        _positive_int,
        "jobs of one queue run at once by this process (a queue declared with its own "
        "concurrency has that instead)",
    )
    job_memory_limit: int = setting(
        1024,
        _non_negative_int,
        "MiB of resident memory past which this process claims no more jobs until it is "
        "back under (0: no bound)",
    )
    job_lease: float = setting(
        10.0, _positive_float, "seconds a claimed job stays leased without a heartbeat"
    )
    job_poll_interval: float = setting(
        0.05,
        _positive_float,
        "longest wait of an idle runner between looks for jobs, while its store does not "
        "hear every process's enqueues; where it does, it sleeps until the next is due, "
        "looking at least once a second",
    )
    max_queued: int = setting(100_000, _positive_int, "waiting jobs per queue before 429")
    schedules: tuple[Periodic, ...] = setting(
        (),
        _schedules,
        "periodic jobs, as NAME=TASK@every:SECONDS or NAME=TASK@CRON (UTC), separated "
        "by ';'; one job per tick however many processes run them",
    )
    store: str = setting(
        "",
        _store_url,
        "where jobs are kept: sqlite:///PATH (default: canopy.db in data_dir) or "
        "redis://HOST:PORT/DB (also rediss://, redis+cluster://, redis+sentinel://)",
    )
    broker: str = setting(
        "memory://",
        _broker_url,
        "where topics' offsets and history live: memory:// (this process) or "
        "redis://HOST:PORT/DB, shared by every instance (offsets are then global)",
    )
    redis_prefix: str = setting(
        "canopy", _redis_prefix, "prefix of Canopy's Redis keys (one hash tag, {PREFIX})"
    )
    job_result_ttl: float = setting(
        7 * 24 * 3600.0,
        _positive_float,
        "seconds a finished job (succeeded, failed or cancelled) is kept, with its "
        "idempotency key, before it is deleted (SQLite and Redis alike)",
    )
    sqlite_synchronous: str = setting(
        "FULL", _synchronous, "SQLite synchronous level: FULL (durable), NORMAL or OFF"
    )
    sqlite_runner_synchronous: str = setting(
        "NORMAL",
        _synchronous,
        "SQLite synchronous level of the job runner's own writes (claims, leases, "
        "progress, outcomes, the sweeper's requeues): NORMAL survives a crash of any "
        "process; FULL also keeps the last outcomes through a power loss",
    )
    tracing: str = setting(
        "off",
        _tracing,
        "OpenTelemetry spans for requests, enqueues and job runs: off, on (to the "
        "process's TracerProvider, e.g. from opentelemetry-instrument) or console "
        "(spans on stderr; needs opentelemetry-sdk)",
    )
    gc_threshold: int = setting(
        200_000,
        _non_negative_int,
        "allocations between young-generation garbage collections; 0 keeps Python's "
        "defaults and does not pace the collector",
    )

    topics_secret: str = setting(
        "",
        _secret,
        "HMAC secret (32+ bytes) that signs topic tokens (empty: anonymous only)",
        secret=True,
    )
    anonymous_subscribe: tuple[str, ...] | None = setting(
        None,
        _patterns,
        "topic patterns anyone may subscribe to (comma-separated), in place of those "
        "the app declares with subscribe='anyone'",
    )
    anonymous_publish: tuple[str, ...] | None = setting(
        None,
        _patterns,
        "topic patterns anyone may publish to (comma-separated), in place of those the "
        "app declares with publish='anyone'",
    )
    anonymous_operations: tuple[str, ...] | None = setting(
        None,
        _operations,
        "what anyone may do without a token, in place of what the app opens with "
        "allow_anonymous (comma-separated: jobs:enqueue:<task pattern>, jobs:admin, "
        "orders:admin; empty: nothing). Each lets whoever reaches the server do it",
    )
    topic_rules: tuple[RuleSpec, ...] = setting(
        (),
        _topic_rules,
        "per-topic slow-consumer policy and history, as PATTERN=POLICY[:SIZE[:TTL]],... "
        "with POLICY disconnect, drop_oldest or latest; over the app's own for a pattern "
        "both name",
    )
    history_size: int = setting(100, _non_negative_int, "messages kept per topic for resume")
    history_ttl: float = setting(300.0, _positive_float, "seconds a message is kept for resume")
    job_events_ttl: float = setting(
        60.0,
        _positive_float,
        "seconds a job's events stay on jobs.{id} for a subscriber that comes late or "
        "reconnects (its state stays at GET /jobs/{id}); a rule for jobs.* in the app or "
        "CANOPY_TOPIC_RULES goes over it",
    )
    subscriber_queue: int = setting(
        256, _positive_int, "messages queued per subscriber before its slow-consumer policy applies"
    )
    flush_interval: float = setting(
        0.005,
        _non_negative_float,
        "seconds a delivery may wait, while the server is busy, for more to join it in "
        "one write (no wait when idle; 0: never wait)",
    )
    ws_max_subscriptions: int = setting(100, _positive_int, "subscriptions per WebSocket")
    ws_compression: bool = setting(
        False,
        _boolean,
        "accept permessage-deflate from WebSocket clients that offer it, without context "
        "takeover (false: every message is sent uncompressed, and a connection keeps no "
        "compressor)",
    )
    max_topics: int = setting(
        100_000,
        _positive_int,
        "topics a process keeps a log for; past it, the least recently used topic with no "
        "exact subscriber is forgotten to make room (memory broker); on the Redis broker, "
        "the topics Redis keeps for all processes, forgotten the same way",
    )

    # The sections the app and its capabilities declared, by name: each a dataclass
    # of ``setting`` fields (``App(settings=...)``, ``Capability.settings``).
    sections: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Setting name -> documentation, for ``canopy settings`` and the docs."""
        return describe(cls)

    def section(self, name: str, kind: type[Any]) -> Any:
        """The section ``name`` as loaded, or its defaults where none was (settings
        made in code rather than loaded)."""
        found = self.sections.get(name)
        return kind() if found is None else found

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def store_url(self) -> str:
        """The job store's URL, the default spelled out."""
        return self.store or f"sqlite:///{self.data_path / 'canopy.db'}"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file, when the store is SQLite."""
        scheme, _, rest = self.store_url.partition("://")
        return Path(rest[1:]) if scheme == "sqlite" else None


def describe(kind: type[Any]) -> dict[str, str]:
    """A settings dataclass's setting names -> their documentation."""
    return {f.name: f.metadata["doc"] for f in _fields(kind).values()}


def _fields(kind: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(kind) if "parse" in f.metadata}


def section_prefix(section: str) -> str:
    """``CANOPY_SHOP_`` for the section ``shop`` (``my-app``: ``CANOPY_MY_APP_``)."""
    return f"{ENV_PREFIX}{re.sub(r'[^A-Za-z0-9]', '_', section).upper()}_"


def _parse(setting: dataclasses.Field[Any], value: Any, source: str) -> Any:
    try:
        return setting.metadata["parse"](value)
    except (TypeError, ValueError) as exc:
        reason = str(exc) if "must" in str(exc) else "has the wrong type"
        got = (
            f"{len(str(value))} characters, not shown"
            if setting.metadata["secret"]
            else repr(value)
        )
        raise SettingsError(f"{source}: {reason} (got {got})") from None


def load_settings(
    toml_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    sections: Mapping[str, type[Any]] | None = None,
) -> Settings:
    """Merge defaults, the TOML file's ``[canopy]`` table and ``CANOPY_*`` variables,
    for Canopy's own settings and for each of ``sections`` (name -> dataclass)."""
    environ = os.environ if environ is None else environ
    sections = dict(sections or {})
    _check_sections(sections)
    known = _fields(Settings)
    values: dict[str, Any] = {}
    section_values: dict[str, dict[str, Any]] = {name: {} for name in sections}
    if toml_path is not None:
        where = os.fspath(toml_path)
        for name, value in _read_table(toml_path).items():
            if name in sections:
                section_values[name] = _read_section(name, sections[name], value, where)
            elif name in known:
                values[name] = _parse(known[name], value, f"[canopy] {name}")
            elif name not in _NOT_SETTINGS_IN_TOML:
                raise SettingsError(f"[canopy] {name}: unknown setting in {where}")
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _NOT_SETTINGS:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in known:
            values[name] = _parse(known[name], value, key)
            continue
        section, setting_name = _owner(key, sections)
        fields = _fields(sections[section])
        section_values[section][setting_name] = _parse(fields[setting_name], value, key)
    built = {name: kind(**section_values[name]) for name, kind in sections.items()}
    return Settings(**values, sections=built)


def _read_section(name: str, kind: type[Any], table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise SettingsError(f"[canopy.{name}]: must be a table in {where}")
    fields = _fields(kind)
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise SettingsError(f"[canopy.{name}] {key}: unknown setting in {where}")
        values[key] = _parse(fields[key], value, f"[canopy.{name}] {key}")
    return values


def _owner(key: str, sections: Mapping[str, type[Any]]) -> tuple[str, str]:
    """The section and setting that ``CANOPY_...`` names, or SettingsError."""
    for section, kind in sections.items():
        prefix = section_prefix(section)
        name = key[len(prefix) :].lower()
        if key.startswith(prefix) and name in _fields(kind):
            return section, name
    raise SettingsError(f"{key}: unknown setting (see 'canopy settings')")


def _check_sections(sections: Mapping[str, type[Any]]) -> None:
    """A section whose variables would be Canopy's own, or another section's, is an
    error of the app's, said at start-up rather than found by an operator later."""
    taken = {f"{ENV_PREFIX}{name.upper()}": "Canopy's own" for name in _fields(Settings)}
    for section, kind in sections.items():
        if section in _fields(Settings):
            raise SettingsError(f"[canopy.{section}]: the section has a setting's name")
        if not dataclasses.is_dataclass(kind):
            raise SettingsError(f"[canopy.{section}]: its settings must be a dataclass")
        for name in _fields(kind):
            key = f"{section_prefix(section)}{name.upper()}"
            if key in taken:
                raise SettingsError(f"{key}: both {taken[key]} and [canopy.{section}] {name}")
            taken[key] = f"[canopy.{section}] {name}"


# Environment variables with our prefix that select what to run rather than hold
# settings, and the same in the [canopy] table.
_NOT_SETTINGS = frozenset({"CANOPY_CONFIG", "CANOPY_APP"})
_NOT_SETTINGS_IN_TOML = frozenset({"app"})


def _read_table(toml_path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(toml_path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise SettingsError(f"{os.fspath(toml_path)}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{os.fspath(toml_path)}: invalid TOML ({exc})") from None
    table = data.get("canopy", {})
    if not isinstance(table, dict):
        raise SettingsError(f"{os.fspath(toml_path)}: 'canopy' must be a table")
    return table
