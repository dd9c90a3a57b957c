"""Canopy's own settings: defaults, then a ``[canopy]`` table in a TOML file, then ``CANOPY_*``.

Hypercorn's settings (bind, keep-alive, graceful_timeout, TLS...) stay in Hypercorn's
own ``Config``, read from the same TOML file; this module holds only what Canopy adds.
Every value is parsed once at start-up, and a bad one raises :class:`SettingsError`
naming the setting, which the CLI prints as one line before exiting with code 2.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from canopy.handlers.tasks import register_examples
from canopy.nurseries.fanout import (
    InvalidTopic,
    SlowConsumerPolicy,
    TopicRule,
    check_pattern,
    check_topic,
)
from canopy.nurseries.jobs import Periodic, TaskRegistry

__all__ = ["ENV_PREFIX", "Settings", "SettingsError", "load_settings"]

ENV_PREFIX = "CANOPY_"
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """An invalid setting; the message names it and says what was expected."""


def _positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return number


def _non_negative_float(value: Any) -> float:
    number = float(value)
    if not number >= 0 or number == float("inf"):
        raise ValueError("must be zero or a positive number of seconds")
    return number


def _whole_number(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("must be a whole number")
        number = int(value)
        if number < minimum:
            raise ValueError(f"must be at least {minimum}")
        return number

    return parse


_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)


def _fraction(value: Any) -> float:
    number = float(value)
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


def _symbols(value: Any) -> tuple[tuple[str, float], ...]:
    """``SYMBOL=START_PRICE,...`` (each symbol a topic segment: ``ticker.{symbol}``)."""
    if isinstance(value, tuple):
        return value
    items = value.split(",") if isinstance(value, str) else value
    symbols = []
    for item in items:
        name, _, price = str(item).strip().partition("=")
        bad = ValueError(f"must be SYMBOL=START_PRICE,... (bad: {item!r})")
        try:
            check_topic(f"ticker.{name}")  # one segment of letters, digits and _-:@
            start = float(price)
        except ValueError:  # InvalidTopic is one
            raise bad from None
        if "." in name or not 0 < start < float("inf"):
            raise bad
        symbols.append((name, start))
    if not symbols:
        raise ValueError("must name at least one SYMBOL=START_PRICE")
    return tuple(symbols)


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
    by ``;``; the tasks are the server's own (``canopy.handlers.tasks``)."""
    if isinstance(value, tuple) and all(isinstance(p, Periodic) for p in value):
        return value
    known = TaskRegistry()
    register_examples(known)
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
        if task not in known:
            names = ", ".join(spec.name for spec in known)
            raise ValueError(f"{name}: must name a known task ({names}), not {task!r}")
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


def _setting(default: Any, parse: Callable[[Any], Any], doc: str) -> Any:
    return field(default=default, metadata={"parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """What an operator can tune; each field maps to ``CANOPY_<NAME>``."""

    request_timeout: float = _setting(
        30.0, _positive_float, "default deadline of a request, in seconds (504 when it passes)"
    )
    max_inflight: int = _setting(
        4096, _positive_int, "requests served at once before new ones get 503 + Retry-After"
    )
    retry_after: int = _setting(1, _positive_int, "Retry-After seconds sent with a 503")
    max_body_size: int = _setting(1_048_576, _positive_int, "largest request body, in bytes")
    drain_linger: float = _setting(
        1.0,
        _non_negative_float,
        "during a drain, how long idle keep-alive connections stay open to answer "
        "with 'Connection: close' instead of being reset",
    )
    service_grace: float = _setting(
        10.0, _positive_float, "grace of each background service when stopping, in seconds"
    )
    data_dir: str = _setting("var", str, "directory for embedded data (SQLite and the like)")
    log_level: str = _setting("info", _log_level, "debug, info, warning or error")
    access_log: bool = _setting(True, _boolean, "one JSON line per request on stdout")
    run_jobs: bool = _setting(
        True, _boolean, "run jobs in the server too (false: leave them to 'canopy worker')"
    )
    job_concurrency: int = _setting(64, _positive_int, "jobs run at once by this process")
    job_lease: float = _setting(
        10.0, _positive_float, "seconds a claimed job stays leased without a heartbeat"
    )
    max_queued: int = _setting(100_000, _positive_int, "waiting jobs per queue before 429")
    schedules: tuple[Periodic, ...] = _setting(
        (),
        _schedules,
        "periodic jobs, as NAME=TASK@every:SECONDS or NAME=TASK@CRON (UTC), separated "
        "by ';'; one job per tick however many processes run them",
    )
    store: str = _setting(
        "",
        _store_url,
        "where jobs are kept: sqlite:///PATH (default: canopy.db in data_dir) or "
        "redis://HOST:PORT/DB (also rediss://, redis+cluster://, redis+sentinel://)",
    )
    broker: str = _setting(
        "memory://",
        _broker_url,
        "where topics' offsets and history live: memory:// (this process) or "
        "redis://HOST:PORT/DB, shared by every instance (offsets are then global)",
    )
    redis_prefix: str = _setting(
        "canopy", _redis_prefix, "prefix of Canopy's Redis keys (one hash tag, {PREFIX})"
    )
    job_result_ttl: float = _setting(
        7 * 24 * 3600.0,
        _positive_float,
        "seconds Redis keeps a finished job's record (SQLite keeps them all)",
    )
    sqlite_synchronous: str = _setting(
        "FULL", _synchronous, "SQLite synchronous level: FULL (durable), NORMAL or OFF"
    )
    sqlite_runner_synchronous: str = _setting(
        "NORMAL",
        _synchronous,
        "SQLite synchronous level of the job runner's own writes (claims, leases, "
        "progress, outcomes, the sweeper's requeues): NORMAL survives a crash of any "
        "process; FULL also keeps the last outcomes through a power loss",
    )
    tracing: str = _setting(
        "off",
        _tracing,
        "OpenTelemetry spans for requests, enqueues and job runs: off, on (to the "
        "process's TracerProvider, e.g. from opentelemetry-instrument) or console "
        "(spans on stderr; needs opentelemetry-sdk)",
    )
    gc_threshold: int = _setting(
        200_000,
        _non_negative_int,
        "allocations between young-generation garbage collections (0: Python's default)",
    )

    payment_latency: float = _setting(
        0.0, _non_negative_float, "seconds the simulated payment gateway takes per charge"
    )
    payment_failure_rate: float = _setting(
        0.0, _fraction, "share of simulated charges that fail transiently (retried)"
    )
    payment_decline_rate: float = _setting(
        0.0, _fraction, "share of simulated charges declined (the order fails, stock released)"
    )
    support_reassign_after: float = _setting(
        15.0,
        _positive_float,
        "seconds a support agent may be disconnected before their conversations are "
        "given to other agents",
    )
    ticker_symbols: tuple[tuple[str, float], ...] = _setting(
        (("BTC-USD", 60000.0), ("ETH-USD", 3000.0), ("AAPL", 190.0), ("MSFT", 420.0),
         ("EUR-USD", 1.08)),
        _symbols,
        "the simulated market feed's symbols and starting prices, SYMBOL=PRICE,...",
    )  # fmt: skip
    ticker_rate: float = _setting(
        50.0,
        _non_negative_float,
        "price updates per second in all from the simulated feed (0: no feed)",
    )
    topics_secret: str = _setting(
        "", _secret, "HMAC secret (32+ bytes) that signs topic tokens (empty: anonymous only)"
    )
    anonymous_subscribe: tuple[str, ...] = _setting(
        ("demo.*", "public.*", "ticker.*"),
        _patterns,
        "topic patterns anyone may subscribe to (comma-separated)",
    )
    anonymous_publish: tuple[str, ...] = _setting(
        ("demo.*",), _patterns, "topic patterns anyone may publish to (comma-separated)"
    )
    topic_rules: tuple[RuleSpec, ...] = _setting(
        (
            RuleSpec("ticker.*", SlowConsumerPolicy.LATEST),
            # A conversation resumes after a long absence; a typing indicator matters
            # only while it is fresh, and only the newest per participant.
            RuleSpec("support.*", SlowConsumerPolicy.DISCONNECT, 1000, 3600.0),
            RuleSpec("typing.*", SlowConsumerPolicy.LATEST, 1, 30.0),
        ),
        _topic_rules,
        "per-topic slow-consumer policy and history, as PATTERN=POLICY[:SIZE[:TTL]],... "
        "with POLICY disconnect, drop_oldest or latest",
    )
    history_size: int = _setting(100, _non_negative_int, "messages kept per topic for resume")
    history_ttl: float = _setting(300.0, _positive_float, "seconds a message is kept for resume")
    subscriber_queue: int = _setting(
        256, _positive_int, "messages queued per subscriber before its slow-consumer policy applies"
    )
    flush_interval: float = _setting(
        0.005,
        _non_negative_float,
        "seconds a delivery may wait, while the server is busy, for more to join it in "
        "one write (no wait when idle; 0: never wait)",
    )
    ws_max_subscriptions: int = _setting(100, _positive_int, "subscriptions per WebSocket")
    max_topics: int = _setting(
        100_000,
        _positive_int,
        "topics a process keeps a log for; past it, the least recently used topic with no "
        "exact subscriber is forgotten to make room (memory broker); on the Redis broker, "
        "the topics Redis keeps for all processes, forgotten the same way",
    )

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Setting name -> documentation, for ``canopy settings`` and the docs."""
        return {f.name: f.metadata["doc"] for f in dataclasses.fields(cls)}

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


def _parse(name: str, value: Any, source: str) -> Any:
    parse = Settings.__dataclass_fields__[name].metadata["parse"]
    try:
        return parse(value)
    except (TypeError, ValueError) as exc:
        reason = str(exc) if "must" in str(exc) else "has the wrong type"
        raise SettingsError(f"{source}: {reason} (got {value!r})") from None


def load_settings(
    toml_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the TOML file's ``[canopy]`` table and ``CANOPY_*`` variables."""
    environ = os.environ if environ is None else environ
    known = Settings.__dataclass_fields__
    values: dict[str, Any] = {}
    if toml_path is not None:
        for name, value in _read_table(toml_path).items():
            if name not in known:
                raise SettingsError(f"[canopy] {name}: unknown setting in {os.fspath(toml_path)}")
            values[name] = _parse(name, value, f"[canopy] {name}")
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _NOT_SETTINGS:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in known:
            raise SettingsError(f"{key}: unknown setting (see 'canopy settings')")
        values[name] = _parse(name, value, key)
    return Settings(**values)


# Environment variables with our prefix that select files rather than hold settings.
_NOT_SETTINGS = frozenset({"CANOPY_CONFIG"})


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
