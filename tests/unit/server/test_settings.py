"""Settings: defaults, the [canopy] table, CANOPY_* variables, and one-line errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from canopy import reference
from canopy.nurseries import Backoff, RestartIntensity, RestartPolicy
from canopy.nurseries.fanout import SlowConsumerPolicy, TopicRule
from canopy.server import Settings, SettingsError, load_config, load_settings, setting
from canopy.showcase import create_app


def test_defaults_then_toml_then_environment(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[canopy]\nrequest_timeout = 5\nlog_level = "debug"\n')
    settings = load_settings(toml, {"CANOPY_REQUEST_TIMEOUT": "7.5", "OTHER": "x"})
    assert settings.request_timeout == 7.5  # environment wins
    assert settings.log_level == "debug"  # from the file
    assert settings.max_inflight == Settings().max_inflight  # default


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"CANOPY_REQUEST_TIMEOUT": "soon"}, "CANOPY_REQUEST_TIMEOUT"),
        ({"CANOPY_REQUEST_TIMEOUT": "-1"}, "CANOPY_REQUEST_TIMEOUT"),
        ({"CANOPY_MAX_INFLIGHT": "1.5"}, "CANOPY_MAX_INFLIGHT"),
        ({"CANOPY_ACCESS_LOG": "maybe"}, "CANOPY_ACCESS_LOG"),
        ({"CANOPY_LOG_LEVEL": "loud"}, "CANOPY_LOG_LEVEL"),
        ({"CANOPY_SQLITE_RUNNER_SYNCHRONOUS": "sometimes"}, "CANOPY_SQLITE_RUNNER_SYNCHRONOUS"),
        ({"CANOPY_NO_SUCH_THING": "1"}, "CANOPY_NO_SUCH_THING"),
        ({"CANOPY_TOPIC_RULES": "chat.*=sometimes"}, "CANOPY_TOPIC_RULES"),
        ({"CANOPY_TOPIC_RULES": "chat.*=latest:-1"}, "CANOPY_TOPIC_RULES"),
        ({"CANOPY_TOPICS_SECRET": "short"}, "CANOPY_TOPICS_SECRET"),
        ({"CANOPY_SCHEDULES": "x=demo.echo@61 * * * *"}, "CANOPY_SCHEDULES"),
        ({"CANOPY_SCHEDULES": "x=demo.echo@every:0"}, "CANOPY_SCHEDULES"),
        ({"CANOPY_SCHEDULES": "x=demo.echo@every:1;x=demo.echo@every:2"}, "CANOPY_SCHEDULES"),
        ({"CANOPY_SCHEDULES": "no schedule here"}, "CANOPY_SCHEDULES"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as info:
        load_settings(None, environ)
    assert "\n" not in str(info.value)


def test_a_schedule_names_a_task_of_the_app(tmp_path: Path) -> None:
    """Which tasks there are is the app's to say: checked as it is assembled."""
    settings = load_settings(None, {"CANOPY_SCHEDULES": "x=no.such.task@every:5"})
    with pytest.raises(SettingsError, match=r"CANOPY_SCHEDULES: x: .*demo\.echo.*no\.such\.task"):
        create_app().boot(settings)


@dataclass(frozen=True)
class ShopSettings:
    greeting: str = setting("hello", str, "what the shop says")
    discount: float = setting(0.0, float, "a fraction off")


def test_sections_of_the_app_and_its_capabilities(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[canopy]\nlog_level = "debug"\n[canopy.shop]\ngreeting = "hi"\n')
    environ = {"CANOPY_SHOP_DISCOUNT": "0.5", "CANOPY_TICKER_RATE": "3"}
    sections = {"shop": ShopSettings, "ticker": reference.ticker.settings}
    settings = load_settings(toml, environ, sections)
    assert settings.log_level == "debug"
    assert settings.section("shop", ShopSettings) == ShopSettings("hi", 0.5)
    assert settings.sections["ticker"].rate == 3.0
    # settings made in code have every section's defaults
    assert Settings().section("shop", ShopSettings) == ShopSettings()


@pytest.mark.parametrize(
    ("toml", "environ", "named"),
    [
        ("", {"CANOPY_SHOP_DISCOUNT": "lots"}, "CANOPY_SHOP_DISCOUNT: has the wrong type"),
        ("", {"CANOPY_SHOP_NOPE": "1"}, "CANOPY_SHOP_NOPE: unknown setting"),
        ("[canopy.shop]\nnope = 1\n", {}, r"\[canopy.shop\] nope: unknown setting"),
        ("[canopy]\nshop = 1\n", {}, r"\[canopy.shop\]: must be a table"),
        # a capability the app does not include has no settings to set
        ("", {"CANOPY_TICKER_RATE": "5"}, "CANOPY_TICKER_RATE: unknown setting"),
        ("[canopy.ticker]\nrate = 5\n", {}, r"\[canopy\] ticker: unknown setting"),
    ],
)
def test_bad_sections_name_the_setting(
    tmp_path: Path, toml: str, environ: dict[str, str], named: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(SettingsError, match=named):
        load_settings(path, environ, {"shop": ShopSettings})


def test_a_section_may_not_shadow_a_setting() -> None:
    @dataclass(frozen=True)
    class Job:
        lease: float = setting(1.0, float, "clashes with CANOPY_JOB_LEASE")

    with pytest.raises(SettingsError, match="CANOPY_JOB_LEASE: both Canopy's own and"):
        load_settings(None, {}, {"job": Job})


def test_bad_toml_and_hypercorn_settings(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[canopy]\nrequest_timout = 5\n")
    with pytest.raises(SettingsError, match=r"\[canopy\] request_timout: unknown"):
        load_settings(toml, {})
    toml.write_text('bind = ["nonsense"]\n')
    with pytest.raises(SettingsError, match="bind"):
        load_config(str(toml), environ={})
    toml.write_text("workers = 0\n")
    with pytest.raises(SettingsError, match="workers"):
        load_config(str(toml), environ={})
    toml.write_text("this is not toml")
    with pytest.raises(SettingsError, match="invalid TOML"):
        load_settings(toml, {})


def test_hypercorn_toml_in_repo_loads() -> None:
    config, settings = load_config(str(Path(__file__).parents[3] / "hypercorn.toml"), environ={})
    assert config.worker_class == "trio"
    assert settings.data_dir == "var"


def test_restart_policy_and_backoff_are_plain_functions() -> None:
    assert RestartPolicy.PERMANENT.should_restart(crashed=False)
    assert RestartPolicy.TRANSIENT.should_restart(crashed=True)
    assert not RestartPolicy.TRANSIENT.should_restart(crashed=False)
    assert not RestartPolicy.TEMPORARY.should_restart(crashed=True)
    backoff = Backoff(initial=0.5, factor=3, maximum=10)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 10]
    intensity = RestartIntensity(max_restarts=2, window=10)
    assert intensity.allows([1.0], now=5.0)
    assert not intensity.allows([1.0, 4.0], now=5.0)
    assert intensity.allows([1.0, 4.0], now=12.0)  # the first fell out of the window


def test_request_content_length_follows_werkzeug_rules() -> None:
    from werkzeug.sansio.utils import get_content_length

    from canopy.server.pipeline._quart import CanopyRequest

    cases = [
        [],
        [(b"content-length", b"12")],
        [(b"content-length", b" 7 ")],
        [(b"content-length", b"abc")],
        [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")],
        [(b"transfer-encoding", b"gzip, chunked")],
    ]
    for headers in cases:
        request = CanopyRequest.__new__(CanopyRequest)
        request.scope = {"headers": headers}  # type: ignore[attr-defined]
        named = {k.decode(): v.decode() for k, v in headers}
        expected = get_content_length(named.get("content-length"), named.get("transfer-encoding"))
        assert request.content_length == expected, headers


def test_topic_rules_keep_what_they_state_and_inherit_the_rest() -> None:
    settings = load_settings(
        None,
        {
            "CANOPY_TOPIC_RULES": "chat.*=disconnect:100:3600,feed.*=drop_oldest:5,ticker.*=latest",
            "CANOPY_HISTORY_SIZE": "50",
            "CANOPY_HISTORY_TTL": "60",
        },
    )
    default = TopicRule(history_size=50, history_ttl=60)
    rules = {spec.pattern: spec.rule(default) for spec in settings.topic_rules}
    assert (rules["chat.*"].history_size, rules["chat.*"].history_ttl) == (100, 3600)
    assert (rules["feed.*"].history_size, rules["feed.*"].history_ttl) == (5, 60)
    assert (rules["ticker.*"].history_size, rules["ticker.*"].history_ttl) == (50, 60)
    assert rules["ticker.*"].policy is SlowConsumerPolicy.LATEST


def test_schedules_by_interval_and_by_cron() -> None:
    settings = load_settings(
        None, {"CANOPY_SCHEDULES": "beat = demo.echo @ every:30; nightly=demo.sleep@0 3 * * *;"}
    )
    beat, nightly = settings.schedules
    assert (beat.name, beat.task, beat.every, beat.cron) == ("beat", "demo.echo", 30.0, None)
    assert (nightly.name, nightly.task, nightly.every) == ("nightly", "demo.sleep", None)
    assert nightly.cron == "0 3 * * *"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CANOPY_REQUEST_TIMEOUT", "abc", "must be a positive number of seconds"),
        ("CANOPY_DRAIN_LINGER", "soon", "must be zero or a positive number of seconds"),
        ("CANOPY_MAX_INFLIGHT", "many", "must be a whole number"),
        ("CANOPY_HISTORY_SIZE", "[]", "must be a whole number"),
        ("CANOPY_FLUSH_INTERVAL", "nan", "must be zero or a positive number of seconds"),
    ],
)
def test_a_bad_value_says_what_is_expected(name: str, value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(None, {name: value})
    assert str(info.value) == f"{name}: {expected} (got {value!r})"


def test_a_refused_secret_is_not_printed_back() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(None, {"CANOPY_TOPICS_SECRET": "hunter2-short"})
    assert "hunter2" not in str(info.value)
    assert str(info.value) == (
        "CANOPY_TOPICS_SECRET: must be at least 32 bytes (HS256 needs a key as long as its"
        " hash) (got 13 characters, not shown)"
    )


def test_a_secret_is_not_in_the_settings_repr() -> None:
    settings = load_settings(None, {"CANOPY_TOPICS_SECRET": "k" * 40})
    assert settings.topics_secret == "k" * 40
    assert "kkkk" not in repr(settings)
