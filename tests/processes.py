"""End-to-end helpers: a real ``canopy serve`` (or ``hypercorn``) process on a free port,
or Canopy's HTTP service in the test's own process.

The server logs one JSON object per line on stdout; :class:`ServerProcess` reads
them as they come, so a test can wait for a named event ("listening",
"draining") instead of sleeping, and learns the port the server bound to.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config

from canopy.server import Settings
from canopy.server.transport._service import HTTPService
from canopy.showcase import create_app

__all__ = [
    "ResponseReader",
    "ServerProcess",
    "http_request",
    "http_request_response",
    "running_server",
    "running_worker",
    "serving_app_in_process",
    "serving_in_process",
    "write_config",
]

LOG_TIMEOUT = 10.0  # a server that has not logged an expected event by then is broken
EXIT_TIMEOUT = 15.0

HYPERCORN_TOML = """\
bind = ["127.0.0.1:0"]
worker_class = "trio"
workers = 1
keep_alive_timeout = {keep_alive}
graceful_timeout = {grace}
shutdown_timeout = 5

[canopy]
data_dir = "var"
"""


def write_config(
    directory: Path, grace: float = 5.0, keep_alive: float = 5.0, **settings: object
) -> Path:
    """A hypercorn.toml; ``settings`` are further top-level (Hypercorn) settings."""
    path = directory / "hypercorn.toml"
    text = HYPERCORN_TOML.format(grace=grace, keep_alive=keep_alive)
    extra = ""
    for name, value in settings.items():
        line = f"{name} = {json.dumps(value)}\n"
        text, replaced = re.subn(rf"^{name} = .*\n", line, text, flags=re.MULTILINE)
        extra += "" if replaced else line
    path.write_text(text.replace("\n[canopy]", f"{extra}\n[canopy]"))
    return path


class ServerProcess:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.logs: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = trio.Event()
        self.port = 0

    async def pump_logs(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._add(line.decode(errors="replace"))

    def _add(self, line: str) -> None:
        self.raw.append(line)
        try:
            self.logs.append(json.loads(line))
        except ValueError:
            pass
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_output(self, text: str) -> str:
        """Wait for a raw output line containing ``text`` (for servers that are not ours)."""
        with trio.fail_after(LOG_TIMEOUT):
            while True:
                for line in self.raw:
                    if text in line:
                        return line
                await self._changed.wait()

    async def wait_for_log(self, msg: str) -> dict[str, Any]:
        with trio.fail_after(LOG_TIMEOUT):
            while True:
                for entry in self.logs:
                    if entry.get("msg") == msg:
                        return entry
                await self._changed.wait()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    async def stop(self) -> int:
        """SIGTERM, then the exit code once the process has drained and ended."""
        self.signal(signal.SIGTERM)
        return await self.wait()

    async def wait(self) -> int:
        with trio.fail_after(EXIT_TIMEOUT):
            return await self.process.wait()


@asynccontextmanager
async def running_server(
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    argv: Sequence[str] | None = None,
    wait_for: str = "listening",
    started_line: str | None = None,
    showcase: bool = True,
) -> AsyncIterator[ServerProcess]:
    """Start the server in ``cwd``; on exit make sure the process (ours) has ended.
    The showcase's market feed is off (``showcase=False`` for another app, which has
    no such setting)."""
    command = list(argv or [sys.executable, "-m", "canopy", "serve"])
    # No market feed unless a test asks for one: it is background load for every other.
    quiet = {"CANOPY_TICKER_RATE": "0"} if showcase else {}
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **quiet, **(env or {})}
    process = await trio.lowlevel.open_process(
        command, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    server = ServerProcess(process)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.pump_logs)
        try:
            if started_line is None:
                bind = (await server.wait_for_log(wait_for)).get("bind", "")
            else:
                line = await server.wait_for_output(started_line)
                bind = re.search(r"https?://[^ \"]+", line).group(0)  # type: ignore[union-attr]
            if bind:  # a worker process listens on nothing
                server.port = int(bind.rsplit(":", 1)[1])
            yield server
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await process.wait()
            nursery.cancel_scope.cancel()


def running_worker(
    cwd: Path, env: dict[str, str] | None = None
) -> AbstractAsyncContextManager[ServerProcess]:
    """``canopy worker`` in ``cwd`` (the showcase's tasks), once it says it started."""
    worker = [sys.executable, "-m", "canopy", "worker"]
    return running_server(cwd, env=env, argv=worker, wait_for="worker started")


@asynccontextmanager
async def serving_in_process(app: Any) -> AsyncIterator[int]:
    """Canopy's HTTP service on a free port in this process, so a test can see into
    the app and the server; yields the port."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    http = HTTPService(app, config, inline=True)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(http.run)
        yield int(binds[0].rsplit(":", 1)[1])
        http.shutdown()


@asynccontextmanager
async def serving_app_in_process() -> AsyncIterator[int]:
    """Canopy's app served in this process without its services' tree (the lifespan
    does not start it) or access log, for tests of the request path alone; the port."""
    app = create_app().boot(Settings(access_log=False))
    app.runtime.lifespan_owns_tree = False
    async with serving_in_process(app) as port:
        yield port


async def http_request(
    stream: trio.SocketStream, method: str, path: str, body: bytes = b"", headers: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on an open stream; the stream stays usable if kept alive."""
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    await stream.send_all(head.encode() + body)
    return await http_request_response(stream)


async def http_request_response(stream: trio.SocketStream) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (with a Content-Length) from ``stream``."""
    return await ResponseReader(stream).read()


class ResponseReader:
    """Reads HTTP/1.1 responses off one stream, keeping bytes that belong to the next.

    Pipelined responses can arrive in one segment; a reader per stream keeps them.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        self.buffer += chunk

    async def read(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        raw_head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body


def rss(pid: int) -> int:
    """A process's resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
