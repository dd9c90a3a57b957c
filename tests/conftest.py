"""Shared fixtures. End-to-end helpers live in ``tests/processes.py``."""

from __future__ import annotations

import gc
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from canopy.nurseries.jobs import SQLiteJobStore

from .redis_server import RedisServer, running_redis

ROOT = Path(__file__).parent.parent


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what importing the tests made (modules, classes, the web stack's
    tables): it lives to the end, and each test's collection below would otherwise
    walk all of it again, a tenth of a second a test."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so a leaked socket is blamed on the test that leaked it."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by key prefix."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, nursery: trio.Nursery
) -> Callable[..., Any]:
    """A factory of job stores over one database, for each backend: a SQLite file, or
    a key prefix of its own on the session's redis-server (its connection running in
    ``nursery``). Tests that take it run against both."""
    if request.param == "sqlite":
        return lambda **options: SQLiteJobStore(tmp_path / "jobs.db", **options)
    from canopy.nurseries.redis import RedisConnection, RedisJobStore

    redis: RedisServer = request.getfixturevalue("redis_server")
    connection = RedisConnection(redis.url)
    await nursery.start(connection.run)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    return lambda **options: RedisJobStore(connection, prefix=prefix, **options)


@pytest.fixture(scope="session")
def installed_canopy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel pip builds from this checkout, installed on its own into a folder."""
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
    done = subprocess.run(
        [*pip, "--target", str(target), str(ROOT)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture(scope="session")
def fresh_python(tmp_path_factory: pytest.TempPathFactory, installed_canopy: Path) -> Path:
    """A new venv's python with Canopy from its wheel and nothing of this checkout:
    its site-packages lists the wheel's folder, then the packages Canopy depends on
    (this venv's, where pip put them; the editable install of Canopy there is not
    activated, as a listed folder's own .pth files are not read)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    dependencies = sysconfig.get_paths()["purelib"]
    (site / "canopy-under-test.pth").write_text(f"{installed_canopy}\n{dependencies}\n")
    return venv / "bin" / "python"
