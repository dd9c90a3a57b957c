"""The code stays ruff-clean, ruff-formatted and type-checks: all run in the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGES = ["nurseries", "handlers", "server"]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", *PACKAGES, "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    """The examples in docs/ too: ruff formats Python blocks in Markdown."""
    result = run("ruff", "format", "--check", *PACKAGES, "tests", "bench", "examples", "docs")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean(tmp_path: Path) -> None:
    """mypy reads packages from folders, and knows nothing of pyproject's package-dir
    mapping: it checks a tree of links laid out as the installed ``canopy``."""
    face = ROOT / "server" / "canopy"
    (tmp_path / "canopy").mkdir()
    for module in face.glob("*.py"):
        (tmp_path / "canopy" / module.name).symlink_to(module)
    for package in PACKAGES:
        (tmp_path / "canopy" / package).symlink_to(ROOT / package)
    # The load generator, a script of bench/ that imports its engine as a top-level module.
    tools = ("load.py", "_loadgen.py")
    for tool in tools:
        (tmp_path / tool).symlink_to(ROOT / "bench" / tool)
    argv = [
        *("mypy", "--cache-dir", str(tmp_path / "cache")),
        *("--config-file", str(ROOT / "pyproject.toml")),
        *("--exclude", "^canopy/server/canopy/", "canopy", *tools),
    ]
    result = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found in" in result.stdout
