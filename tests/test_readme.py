"""The README's two set-up commands exist, and CI runs exactly the test one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_has_the_two_commands_and_ci_runs_the_test_one() -> None:
    commands = readme_commands()
    serve = [c for c in commands if "canopy serve" in c]
    tests = [c for c in commands if "pytest" in c]
    assert len(serve) == 1 and len(tests) == 1
    assert serve[0].startswith("python3 -m venv .venv && ")
    ci_lines = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == tests[0]
