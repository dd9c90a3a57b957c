"""canopy.js, the browser client: its pure parts under ``node --test`` (tests/js/),
and its size. Its connection is tested in Chromium (tests/e2e/test_canopy_js.py)."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import canopy
from canopy import capabilities, reference
from canopy.testing import serve_app

ROOT = Path(__file__).parents[3]
MODULE = ROOT / "handlers" / "topics" / "js" / "canopy.js"


def _node() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node:
        return node
    if os.environ.get("CI"):
        pytest.fail("CI installs nodejs (.ci/run) and these tests need it")
    pytest.skip("no node on this machine (apt-get install nodejs)")


def test_the_pure_parts_pass_node_test() -> None:
    done = subprocess.run(
        [_node(), "--test", str(ROOT / "tests" / "js")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^# fail 0$", done.stdout, flags=re.MULTILINE), done.stdout
    assert not re.search(r"^# pass 0$", done.stdout, flags=re.MULTILINE), done.stdout


def test_it_stays_small() -> None:
    """What a browser downloads, compressed, and what is code rather than comments
    and indentation (a minifier, which we do not need, gets it to about 7 KB)."""
    source = MODULE.read_bytes()
    assert len(gzip.compress(source, 9)) < 5 * 1024
    code = re.sub(rb"/\*.*?\*/|^\s*//.*$", b"", source, flags=re.DOTALL | re.MULTILINE)
    code = re.sub(rb"^\s+|\s+$", b"", code, flags=re.MULTILINE)
    assert len(code) < 10 * 1024


async def test_every_app_with_the_topics_api_serves_it_with_an_etag() -> None:
    app = canopy.App("served")
    app.include(capabilities.topics_api)
    async with serve_app(app) as served:
        first = await served.http.get("/canopy.js")
        again = await served.http.get(
            "/canopy.js", headers={"If-None-Match": first.headers["ETag"]}
        )
        other = await served.http.get("/canopy.js", headers={"If-None-Match": '"stale"'})
    assert first.status_code == 200 and first.content == MODULE.read_bytes()
    assert first.headers["Content-Type"].startswith("text/javascript")
    assert first.headers["Cache-Control"] == "public, max-age=86400"
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["ETag"] == first.headers["ETag"]
    assert other.status_code == 200


async def test_the_demo_page_is_told_what_visitors_may_do() -> None:
    app = canopy.App("demo")
    app.include(capabilities.topics_api)
    app.include(reference.demo)
    app.topics("public.*", subscribe="anyone")
    async with serve_app(app) as served:
        page = (await served.http.get("/demo/topics")).text
    embedded = re.search(r'<script type="application/json" id="grants">(.*?)</script>', page)
    assert embedded is not None
    grants = json.loads(embedded.group(1))
    assert grants == {"subscribe": ["demo.*", "public.*"], "publish": ["demo.*"]}
    assert 'import { connect, matches } from "/canopy.js"' in page
