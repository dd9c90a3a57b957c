"""The code stays ruff-clean, ruff-formatted and type-checks: all run in the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
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
    result = run("mypy", "--cache-dir", str(tmp_path), *PACKAGES)
    assert result.returncode == 0, result.stdout + result.stderr
