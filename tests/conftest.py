"""Shared fixtures. End-to-end helpers live in ``tests/e2e.py``."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from canopy.nurseries.jobs import SQLiteJobStore

from .redis_server import RedisServer, running_redis


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
