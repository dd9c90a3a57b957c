"""An app under test: served in this process, on a real socket, with its whole tree.

The same transport, request pipeline and services as ``canopy serve``, on a store
in a fresh temporary folder, so a test sees what a client would; the app's tasks run
in its own runner, and :meth:`Served.run_jobs` waits until what is due has run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio

from canopy.handlers.topics.client import TopicsClient, connect_topics
from canopy.nurseries.jobs import JobState

from ._config import CanopyConfig
from ._http import HTTPService
from ._settings import Settings

if TYPE_CHECKING:
    from ._application import App

__all__ = ["Served", "TopicsClient", "serve_app"]

# Jobs a test waits for: all that are not finished, except those put off on purpose.
_UNFINISHED = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)


@dataclass(eq=False)
class Served:
    """The app as a test reaches it: ``http`` (an httpx client on its address),
    ``topics()`` (a WebSocket client of ``/ws``), ``run_jobs()``, and the app."""

    app: App
    port: int
    http: httpx.AsyncClient
    data_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def topics(self, token: str | None = None) -> Any:
        """``async with served.topics() as client:``: subscribe, publish, resume (the
        app must include ``canopy.capabilities.topics_api``)."""
        return connect_topics(f"ws://127.0.0.1:{self.port}/ws", token=token)

    async def run_jobs(self, *, interval: float = 0.01) -> None:
        """Return once no job is waiting to run, running or retrying: what the routes
        and tasks enqueued has run to its end (jobs delayed on purpose stay put).
        Bound it where you call it: ``with trio.fail_after(5):``."""
        store = self.app.jobs.service.store
        while True:
            for state in _UNFINISHED:
                if await store.list_jobs(state, limit=1):
                    break
            else:
                return
            await trio.sleep(interval)


@asynccontextmanager
async def serve_app(
    app: App, settings: Settings | None = None, **overrides: Any
) -> AsyncIterator[Served]:
    """Assemble ``app`` and serve it on a free port of 127.0.0.1 for the block; then
    stop it as SIGTERM would (a drain) and remove its data.

    ``settings`` (default: Canopy's defaults, without the access log) with any field
    given in ``overrides`` replaced; the data directory is always a new one."""
    data = Path(await trio.to_thread.run_sync(tempfile.mkdtemp, None, "canopy-test-"))
    base = settings if settings is not None else Settings(access_log=False)
    app.boot(replace(base, data_dir=str(data), **overrides))
    runtime = app.runtime
    runtime.lifespan_owns_tree = False
    config = CanopyConfig()
    config.bind = ["127.0.0.1:0"]
    http = HTTPService(app, config, drain_linger=0.0, inline=True)
    runtime.tree.add("http", http, grace=http.grace)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.tree.run)
            port = int(http.binds[0].rsplit(":", 1)[1])
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield Served(app, port, client, data)
            runtime.tree.shutdown()
            await runtime.tree.wait_stopped()
    finally:
        await trio.to_thread.run_sync(shutil.rmtree, data, True)
