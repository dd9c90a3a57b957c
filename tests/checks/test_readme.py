"""The README's two set-up commands exist, and CI runs exactly the test one."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import trio

from canopy.testing import serve_app

ROOT = Path(__file__).parents[2]


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


async def test_the_readmes_app_serves_and_runs_its_task(tmp_path: Path) -> None:
    (block,) = re.findall(r"```python\n(.+?)\n```", (ROOT / "README.md").read_text(), re.DOTALL)
    (tmp_path / "hello_readme.py").write_text(block)
    spec = importlib.util.spec_from_file_location("hello_readme", tmp_path / "hello_readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    async with serve_app(module.app) as served:
        response = await served.http.get("/hello/ann")
        assert response.json()["hello"] == "ann"
        with trio.fail_after(10):
            job = await module.app.jobs.wait(response.json()["job"])
        assert job.result == "greeted ann"
