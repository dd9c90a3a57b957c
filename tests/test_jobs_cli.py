"""``canopy jobs ...`` against a real store file, as an operator would run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .e2e import write_config


def canopy(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "canopy", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(cwd: Path, *args: str) -> Any:
    result = canopy(cwd, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_enqueue_show_list_cancel_retry(tmp_path: Path) -> None:
    write_config(tmp_path)
    job = ok(tmp_path, "jobs", "enqueue", "demo.echo", "--args", '{"a": 1}', "--delay", "60")
    assert job["state"] == "scheduled" and job["args"] == {"a": 1}
    assert ok(tmp_path, "jobs", "show", job["id"])["id"] == job["id"]
    listed = ok(tmp_path, "jobs", "list", "--state", "scheduled")
    assert [j["id"] for j in listed] == [job["id"]]
    second = ok(tmp_path, "jobs", "enqueue", "demo.echo", "--args", '{"a": 2}', "--delay", "60")
    full = canopy(tmp_path, "jobs", "list", "--state", "scheduled", "--limit", "1")
    assert [j["id"] for j in json.loads(full.stdout)] == [second["id"]]
    assert full.stderr.startswith("canopy: more with --before ")
    bound = full.stderr.split()[-1]
    rest = ok(tmp_path, "jobs", "list", "--state", "scheduled", "--limit", "1", "--before", bound)
    assert [j["id"] for j in rest] == [job["id"]]
    assert canopy(tmp_path, "jobs", "list", "--before", "soon").returncode == 2
    assert ok(tmp_path, "jobs", "cancel", second["id"])["state"] == "cancelled"
    assert ok(tmp_path, "jobs", "cancel", job["id"])["state"] == "cancelled"
    refused = canopy(tmp_path, "jobs", "retry", job["id"])  # not a dead letter: unchanged
    assert json.loads(refused.stdout)["state"] == "cancelled"
    own = ok(tmp_path, "jobs", "enqueue", "demo.echo", "--timeout", "2.5", "--max-attempts", "1")
    assert (own["timeout"], own["max_attempts"]) == (2.5, 1)
    again = ok(tmp_path, "jobs", "enqueue", "demo.echo", "--key", "k", "--delay", "60")
    assert ok(tmp_path, "jobs", "enqueue", "demo.echo", "--key", "k", "--delay", "60") == again


def test_errors_are_one_line_and_nonzero(tmp_path: Path) -> None:
    write_config(tmp_path)
    for args, needle in (
        (("jobs", "enqueue", "no.such"), "UnknownTask"),
        (("jobs", "show", "missing"), "no job missing"),
    ):
        result = canopy(tmp_path, *args)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr
    result = canopy(tmp_path, "jobs", "enqueue", "demo.echo", "--args", "[1]")
    assert result.returncode == 2 and "JSON object" in result.stderr
