"""``canopy jobs ...`` against a real store file, as an operator would run them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.processes import write_config


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
    listed = ok(tmp_path, "jobs", "list", "--state", "scheduled", "--json")
    assert [j["id"] for j in listed] == [job["id"]]
    table = canopy(tmp_path, "jobs", "list", "--state", "scheduled").stdout.splitlines()
    assert table[0].split() == ["ID", "TASK", "STATE", "ATTEMPTS", "CREATED", "ERROR"]
    assert table[1].split()[:4] == [job["id"], "demo.echo", "scheduled", "0/5"]
    second = ok(tmp_path, "jobs", "enqueue", "demo.echo", "--args", '{"a": 2}', "--delay", "60")
    full = canopy(tmp_path, "jobs", "list", "--state", "scheduled", "--limit", "1", "--json")
    assert [j["id"] for j in json.loads(full.stdout)] == [second["id"]]
    assert full.stderr.startswith("canopy: more with --before ")
    bound = full.stderr.split()[-1]
    rest = ok(
        tmp_path,
        "jobs",
        "list",
        "--state",
        "scheduled",
        "--limit",
        "1",
        "--before",
        bound,
        "--json",
    )
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
    assert canopy(tmp_path, "jobs", "enqueue", "demo.echo").returncode == 0  # a store
    for args, said in (
        (
            ("jobs", "enqueue", "no.such"),
            "canopy: no task 'no.such'; the app's tasks are demo.echo, demo.fail, demo.sleep,"
            " orders.charge, orders.confirm, orders.reserve\n",
        ),
        (("jobs", "show", "missing"), "canopy: no job missing\n"),
        (("jobs", "cancel", "missing"), "canopy: no job missing\n"),
    ):
        result = canopy(tmp_path, *args)
        assert (result.returncode, result.stderr) == (1, said)
    result = canopy(tmp_path, "jobs", "enqueue", "demo.echo", "--args", "[1]")
    assert result.returncode == 2 and "JSON object" in result.stderr
    result = canopy(tmp_path, "jobs", "enqueue", "demo.echo", "--args", "notjson")
    assert result.returncode == 2
    assert "Invalid value for '--args': not JSON" in result.stderr


def test_a_command_that_reads_jobs_creates_no_store(tmp_path: Path) -> None:
    """Run from the wrong directory, it says where it looked, and leaves no ./var."""
    for args in (("list",), ("show", "x"), ("cancel", "x"), ("retry", "x")):
        result = canopy(tmp_path, "jobs", *args)
        assert result.returncode == 1
        assert result.stderr == (
            f"canopy: no job store at {tmp_path / 'var' / 'canopy.db'}: run this where the"
            " server runs, or give its --config or CANOPY_DATA_DIR\n"
        )
        assert not (tmp_path / "var").exists()
