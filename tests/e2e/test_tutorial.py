"""docs/TUTORIAL.md runs: its code is examples/tutorial's, and its commands do what it
says they do, against a copy of that folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.processes import running_server

ROOT = Path(__file__).parents[2]
PAGE = (ROOT / "docs" / "TUTORIAL.md").read_text()
EXAMPLE = ROOT / "examples" / "tutorial"

# Every command the page gives, in order; the tests below run each one's equivalent.
COMMANDS = [
    "python3 -m venv .venv",
    ".venv/bin/pip install canopy-server pytest-trio",
    ".venv/bin/canopy serve shop:app",
    """curl -s -X POST localhost:8000/signups -d '{"email": "ann@example.com"}'""",
    """curl -s -X POST localhost:8000/signups -d '{"email": "nobody"}'""",
    "cat outbox.txt",
    "CANOPY_RUN_JOBS=false .venv/bin/canopy serve shop:app",
    ".venv/bin/canopy worker shop:app",
    ".venv/bin/python -m pytest -q",
]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE, flags=re.DOTALL)


def test_the_pages_code_is_the_examples() -> None:
    sources = "".join(path.read_text() for path in EXAMPLE.glob("*.py"))
    python = blocks("python")
    assert len(python) == 5
    for block in python:
        assert block in sources, block


def test_the_pages_commands_are_the_ones_run_here() -> None:
    lines = [line for block in blocks("console") for line in block.splitlines()]
    assert [line[2:] for line in lines if line.startswith("$ ")] == COMMANDS


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    copy = tmp_path / "shop"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_its_tests_pass(shop: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=shop,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


async def test_served_with_a_worker_it_does_what_the_page_shows(shop: Path) -> None:
    env = {"CANOPY_RUN_JOBS": "false"}
    serve = [sys.executable, "-m", "canopy", "serve", "shop:app", "--bind", "127.0.0.1:0"]
    worker = [sys.executable, "-m", "canopy", "worker", "shop:app"]
    async with (
        running_server(shop, argv=serve, env=env, showcase=False) as server,
        running_server(shop, argv=worker, env=env, wait_for="worker started", showcase=False),
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            page = await client.get("/")
            assert 'import { connect } from "/canopy.js"' in page.text
            module = await client.get("/canopy.js")
            assert module.status_code == 200 and "export function connect" in module.text
            signed = await client.post("/signups", content='{"email": "ann@example.com"}')
            assert signed.status_code == 202
            assert re.fullmatch(r'\{"job":"[0-9a-f]+"\}', signed.text)
            refused = await client.post("/signups", content='{"email": "nobody"}')
            shown = '{"error":"invalid_email","message":"email: must be an address with an @"}'
            assert (refused.status_code, refused.text) == (422, shown)
            outbox = trio.Path(shop / "outbox.txt")
            with trio.fail_after(20):
                while True:  # the worker, another process, writes it: the whole line
                    if await outbox.exists() and (await outbox.read_text()).endswith("\n"):
                        break
                    await trio.sleep(0.05)
            assert await outbox.read_text() == "to ann@example.com: welcome!\n"
            tree = (await client.get("/readyz")).json()["tree"]
            assert "clock" in [child["name"] for child in tree["children"][0]["children"]]
