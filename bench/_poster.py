"""A lean HTTP/1.1 client for load: keep-alive connections that each carry one request
at a time, for JSON APIs that answer with a ``Content-Length``.

httpx spends more CPU per request than the servers under test spend answering it (its
pool scans every waiting request on each hand-out), so a bench that drives a server
with it measures the client. This does only what a POST of a small JSON body needs.
"""

from __future__ import annotations

import json
from typing import Any

import trio

__all__ = ["KeepAlive", "PostError", "Poster"]

_MAX_HEAD = 64 * 1024


class PostError(Exception):
    """The connection failed or the answer could not be read; the request may or may
    not have reached the server."""


class KeepAlive:
    """One keep-alive connection: a request's bytes in, its status and body out."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.untouched = True  # no byte of the current answer came yet

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.untouched = True
        await self.stream.send_all(data)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._fill()
            if len(self.buffer) > _MAX_HEAD:
                raise PostError("the answer's head is too long")
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        del self.buffer[: end + 4]
        while len(self.buffer) < length:
            await self._fill()
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return status, body

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise PostError("the server closed the connection")
        self.untouched = False
        self.buffer += chunk


class Poster:
    """``connections`` keep-alive connections to ``127.0.0.1:port``, shared by any
    number of tasks: a request waits for a free connection, and a connection that
    failed is replaced by a new one."""

    def __init__(self, port: int, connections: int) -> None:
        self.port = port
        self.connections = connections
        self._idle: list[KeepAlive] = []
        self._free = trio.Semaphore(connections)

    async def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None, method: str = "POST"
    ) -> tuple[int, Any]:
        """(status, decoded JSON body or None). PostError if the exchange failed."""
        payload = json.dumps(body).encode()
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            *(f"{name}: {value}" for name, value in (headers or {}).items()),
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        async with self._free:
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else await self._open()
            try:
                status, answer = await self._exchange(connection, data)
            except PostError:
                if not (reused and connection.untouched):
                    raise
                # A kept-alive connection the server closed as this was sent (as
                # Uvicorn does when its keep-alive timeout ends): nothing of the
                # answer came, so, as browsers do, once more on a new connection.
                connection = await self._open()
                status, answer = await self._exchange(connection, data)
            self._idle.append(connection)
        return status, json.loads(answer) if answer else None

    async def _exchange(self, connection: KeepAlive, data: bytes) -> tuple[int, bytes]:
        try:
            return await connection.request(data)
        except (PostError, OSError, trio.BrokenResourceError, ValueError, IndexError) as exc:
            await connection.stream.aclose()
            raise PostError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            await trio.aclose_forcefully(connection.stream)  # cancelled mid-answer
            raise

    async def _open(self) -> KeepAlive:
        try:
            return KeepAlive(await trio.open_tcp_stream("127.0.0.1", self.port))
        except OSError as exc:
            raise PostError(f"cannot connect: {exc}") from exc

    async def aclose(self) -> None:
        while self._idle:
            await self._idle.pop().stream.aclose()
