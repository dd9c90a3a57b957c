"""An app under test: served in this process, on a real socket, with its whole tree.

The same transport, request pipeline and services as ``canopy serve``, on a store
in a fresh temporary folder, so a test sees what a client would; the app's tasks run
in its own runner, and :meth:`Served.run_jobs` waits until what is due has run.

On a ``MockClock`` (pytest-trio's ``autojump_clock``) the clock jumps whenever every
task waits, and a wait it cannot see lets it jump past a deadline that should not
fire. Three such waits are taken out of the run:

- TCP: the app listens on a Unix socket in its folder instead. The kernel hands a
  Unix socket's bytes, and its connections, to the peer within the sending call, so
  the peer is ready before the clock could jump; on loopback TCP that is usual but
  not promised.
- SQLite's thread, and Unix time: :func:`canopy.nurseries.follow_trio_clock` runs
  SQLite calls on the Trio thread and stamps jobs with Trio's clock, so a retry's
  backoff, a delayed job and a schedule's tick come as the clock jumps to them.
- The folder is made and removed without a thread (it is one ``mkdir``).

An idle runner there sleeps until its queue's next job is due, looking at least every
virtual second (``job_poll_interval`` is 1 s, not 50 ms, for a store that does not
hear every process): an hour of virtual time takes under a second of real time.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio
import trio.testing

from canopy.handlers.topics.client import TopicsClient, connect_topics
from canopy.nurseries import follow_trio_clock
from canopy.nurseries.jobs import JobState

from ..config._hypercorn import CanopyConfig
from ..config._settings import Settings
from ..transport._service import HTTPService

if TYPE_CHECKING:
    from ..app._application import App

__all__ = ["Served", "TopicsClient", "serve_app"]

# Jobs a test waits for: all that are not finished, except those put off on purpose.
_UNFINISHED = (JobState.QUEUED, JobState.RUNNING, JobState.RETRYING)
_VIRTUAL_POLL = 1.0


@dataclass(eq=False)
class Served:
    """The app as a test reaches it: ``http`` (an httpx client of it), ``topics()`` (a
    WebSocket client of ``/ws``), ``connect()`` (a raw stream to it), ``run_jobs()``,
    and the app.

    On 127.0.0.1:``port``, or (on a ``MockClock``) on the Unix socket ``socket_path``
    with ``port`` None; ``http`` and ``topics()`` reach it either way."""

    app: App
    port: int | None
    http: httpx.AsyncClient
    data_dir: Path
    socket_path: str | None = None

    @property
    def base_url(self) -> str:
        """The URL a client outside this test would use (TCP only)."""
        if self.port is None:
            raise RuntimeError(
                f"served on the Unix socket {self.socket_path} (on a MockClock): "
                "use served.http, served.topics() or served.connect()"
            )
        return f"http://127.0.0.1:{self.port}"

    async def connect(self) -> trio.SocketStream:
        """A new connection to the server, for a test that speaks the protocol itself."""
        if self.socket_path is not None:
            return await trio.open_unix_socket(self.socket_path)
        assert self.port is not None
        return await trio.open_tcp_stream("127.0.0.1", self.port)

    def topics(self, token: str | None = None) -> Any:
        """``async with served.topics() as client:``: subscribe, publish, resume (the
        app must include ``canopy.capabilities.topics_api``)."""
        host = "localhost" if self.port is None else f"127.0.0.1:{self.port}"
        return connect_topics(f"ws://{host}/ws", token=token, open_stream=self.connect)

    async def run_jobs(self) -> None:
        """Return once no job is waiting to run, running or retrying: what the routes
        and tasks enqueued has run to its end (jobs delayed on purpose stay put).
        Bound it where you call it: ``with trio.fail_after(5):``.

        It looks every 10 ms. On a MockClock a retry's backoff passes as the clock
        jumps to it, and looking that often through minutes of it would take real
        seconds: there it looks at growing intervals, up to one virtual second."""
        store = self.app.jobs.service.store
        interval, longest = 0.01, (1.0 if self.socket_path is not None else 0.01)
        while True:
            for state in _UNFINISHED:
                if await store.list_jobs(state, limit=1):
                    break
            else:
                return
            await trio.sleep(interval)
            interval = min(interval * 2, longest)


@asynccontextmanager
async def serve_app(
    app: App, settings: Settings | None = None, **overrides: Any
) -> AsyncIterator[Served]:
    """Assemble ``app`` and serve it for the block (on a free port of 127.0.0.1, or on
    a ``MockClock`` on a Unix socket: see the module); then stop it as SIGTERM would
    (a drain) and remove its data.

    ``settings`` (default: Canopy's defaults, without the access log) with any field
    given in ``overrides`` replaced; the data directory is always a new one."""
    virtual = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    data = Path(tempfile.mkdtemp(prefix="canopy-test-"))
    try:
        with ExitStack() as clock:
            if virtual:
                clock.enter_context(follow_trio_clock())
            base = settings if settings is not None else Settings(access_log=False)
            if virtual and base.job_poll_interval == Settings.job_poll_interval:
                # A runner whose store hears every process sleeps until the next job is
                # due; one that polls looks every virtual second, not twenty times: an
                # hour of the jumping clock is then thousands of looks, not 72,000.
                base = replace(base, job_poll_interval=_VIRTUAL_POLL)
            # The collector is the test runner's: neither tuned nor paced here.
            app.boot(replace(base, data_dir=str(data), **{"gc_threshold": 0, **overrides}))
            runtime = app.runtime
            runtime.lifespan_owns_tree = False
            config = CanopyConfig()
            config.websocket_compression = runtime.settings.ws_compression
            socket_path = str(data / "http.sock") if virtual else None
            config.bind = [f"unix:{socket_path}" if socket_path else "127.0.0.1:0"]
            http = HTTPService(app, config, drain_linger=0.0, inline=True)
            runtime.tree.add("http", http, grace=http.grace)
            async with trio.open_nursery() as nursery:
                await nursery.start(runtime.tree.run)
                if socket_path is None:
                    port: int | None = int(http.binds[0].rsplit(":", 1)[1])
                    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
                else:
                    port = None
                    # No timeout of its own: the clock would jump to it whenever the
                    # app waits (for a job, say); the test's fail_after bounds it.
                    transport = httpx.AsyncHTTPTransport(uds=socket_path)
                    client = httpx.AsyncClient(
                        transport=transport, base_url="http://localhost", timeout=None
                    )
                async with client:
                    yield Served(app, port, client, data, socket_path)
                runtime.tree.shutdown()
                await runtime.tree.wait_stopped()
    finally:
        shutil.rmtree(data, ignore_errors=True)
