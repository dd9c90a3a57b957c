"""Events from other processes on this machine into this process's hub.

On the memory broker one process's hub owns every topic's offsets and history: the
web tier's (``canopy serve``). A ``canopy worker`` beside it, sharing its SQLite store,
has no hub of its own that any subscriber reads. Its jobs' events (an order's states,
``jobs.{id}``) reach the web tier's hub through a Unix socket in the data directory:
:class:`RelayListener` serves it in the web tier, :class:`RelayClient` publishes
through it from the worker.

Wire: one stream connection per worker; newline-delimited JSON both ways. A request is
``{"topic": ..., "data": ..., "key": ...}``, its reply ``{"offset": ..., "epoch":
...}`` or ``{"error": ...}``. Requests are pipelined and answered in order, and the
listener publishes what it read in one ``publish_many``, so a worker's events keep
their order and each takes its offset from the hub, as a publish of the web tier's
own does.

Resource handling: the listener's socket file is removed when it stops, even when
cancelled; a file left by a process that died (nobody accepts on it) is replaced at
start, and a live one is refused (:class:`RelayBusy`: another process owns the
topics). The client reconnects at each publish after a failure; a publish that
cannot be delivered raises :class:`RelayUnavailable`, never passes in silence.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from .._json import json_loads
from ._hub import Hub
from ._hub_errors import HubError
from ._topics import check_topic

__all__ = ["RelayBusy", "RelayClient", "RelayListener", "RelayUnavailable"]

MAX_LINE = 1 << 20  # bytes of one request; a longer one ends its connection
# sun_path is 108 bytes on Linux, 104 on the BSDs; keep to the smaller, with its NUL.
MAX_PATH = 103


class RelayUnavailable(Exception):
    """The event was not published: no process listens on the relay's socket, or the
    connection broke before its answer (it may then have been published)."""


class RelayBusy(OSError):
    """Another live process listens on the relay's socket: it owns the topics."""


class RelayListener:
    """Publishes into ``hub`` what other processes send to the socket at ``path``."""

    def __init__(self, hub: Hub, path: str | Path) -> None:
        self.hub = hub
        self.path = Path(path)
        self.relayed = 0  # events published for other processes, so far
        self.reads = 0  # chunks read that held whole requests: fewer when clients batch

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = _bind(self.path)
        identity = os.stat(self.path).st_ino
        try:
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            task_status.started()
            await trio.serve_listeners(self._serve, [listener])
        finally:
            sock.close()
            try:  # ours only: a process started since may have replaced the file
                if os.stat(self.path).st_ino == identity:
                    os.unlink(self.path)
            except FileNotFoundError:
                pass

    async def _serve(self, stream: trio.abc.Stream) -> None:
        pending = b""
        async with stream:
            try:
                async for chunk in stream:
                    *lines, pending = (pending + chunk).split(b"\n")
                    if len(pending) > MAX_LINE:
                        return  # not a relay client: its connection ends
                    if lines:
                        self.reads += 1
                        await stream.send_all(await self._publish(lines))
            except trio.BrokenResourceError:
                pass  # the worker went away mid-reply; its client retries what it must

    async def _publish(self, lines: Sequence[bytes]) -> bytes:
        requests: list[tuple[str, Any, str | None]] = []
        replies: list[dict[str, Any] | None] = []
        for line in lines:
            try:
                request = json_loads(line)
                topic, key = request["topic"], request.get("key")
                if not isinstance(topic, str) or not (key is None or isinstance(key, str)):
                    raise TypeError("topic and key must be strings")
                check_topic(topic)  # InvalidTopic, a ValueError: refused alone
                requests.append((topic, request.get("data"), key))
                replies.append(None)
            except (ValueError, TypeError, KeyError) as exc:
                replies.append({"error": f"refused: {exc}"})
        outcomes: list[Any]
        try:
            outcomes = list(await self.hub.publish_many(requests)) if requests else []
        except HubError as exc:  # the hub is closing
            outcomes = [exc] * len(requests)
        published = iter(outcomes)
        out = []
        for reply in replies:
            if reply is None:
                outcome = next(published)
                if isinstance(outcome, Exception):
                    reply = {"error": str(outcome) or type(outcome).__name__}
                else:
                    reply = {"offset": outcome.offset, "epoch": outcome.epoch}
                    self.relayed += 1
            out.append(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
        return b"".join(out)


class RelayClient:
    """Publishes to the hub of the process listening at ``path``, in order."""

    def __init__(
        self, path: str | Path, *, connect_timeout: float = 1.0, retry_after: float = 1.0
    ) -> None:
        """``retry_after``: seconds after a failed connection in which publishes are
        refused at once, without trying again."""
        self.path = Path(path)
        self.connect_timeout = connect_timeout
        self.retry_after = retry_after
        # While the web tier is away, each publish trying to connect (a socket, a
        # refused connect, in turn under the lock) made that the worker's pace: a
        # worker with no web tier ran its jobs at a fifth of its speed. So a failure
        # is remembered for retry_after: the events are lost either way.
        self._refused: str | None = None  # why (a new exception each time: a raised
        # one keeps its traceback, and raising it again would grow it)
        self._refused_until = -math.inf
        self._stream: trio.SocketStream | None = None
        self._connect_lock = trio.Lock()
        self._waiting: deque[_Reply] = deque()
        # Lines not yet sent, in the order of ``_waiting``'s tail: the connection's
        # writer sends all that gathered in one write, as a job's steps publish
        # several events at once and each send is a system call.
        self._outbox: list[bytes] = []
        self._outbox_ready = trio.Event()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Holds the nursery the connection's reader runs in; the first connection is
        made by the first publish (the web tier may start after the worker)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._drop(RelayUnavailable("the relay client stopped"))

    async def publish(self, topic: str, data: Any, *, key: str | None = None) -> tuple[int, str]:
        """The event's offset and epoch in the listening process's hub. Raises
        RelayUnavailable if it could not be handed over or its answer did not come,
        and ValueError for what that hub refused (its message)."""
        if self._stream is None:
            self._check_refused()  # before the lock: taking it is two trips to the loop
            async with self._connect_lock:
                await self._connected()
        line = json.dumps({"topic": topic, "data": data, "key": key}, separators=(",", ":"))
        reply = _Reply()
        # Queued together, so the order of sends is the order of replies.
        self._waiting.append(reply)
        self._outbox.append(line.encode() + b"\n")
        self._outbox_ready.set()
        answer = await reply.wait()
        if "error" in answer:
            raise ValueError(answer["error"])
        return int(answer["offset"]), str(answer["epoch"])

    async def _connected(self) -> trio.SocketStream:
        if self._stream is not None:
            return self._stream
        if self._nursery is None:
            raise RelayUnavailable("the relay client is not running")
        self._check_refused()
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_unix_socket(str(self.path))
        except (OSError, trio.TooSlowError) as exc:
            self._refused = (
                f"no process publishes events at {self.path} (is canopy serve running "
                f"with the same data directory?): {exc}"
            )
            self._refused_until = trio.current_time() + self.retry_after
            raise RelayUnavailable(self._refused) from None
        self._refused = None
        self._stream = stream
        self._nursery.start_soon(self._read, stream)
        self._nursery.start_soon(self._write, stream)
        return stream

    def _check_refused(self) -> None:
        if self._refused is not None and trio.current_time() < self._refused_until:
            raise RelayUnavailable(self._refused)

    async def _write(self, stream: trio.SocketStream) -> None:
        while True:
            await self._outbox_ready.wait()  # set by _drop too
            if self._stream is not stream:
                return  # dropped: a new connection has a writer of its own
            self._outbox_ready = trio.Event()
            if not self._outbox:
                continue
            data = b"".join(self._outbox)
            self._outbox.clear()
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                if self._stream is stream:
                    self._drop(RelayUnavailable(f"relay connection lost: {exc}"))

    async def _read(self, stream: trio.SocketStream) -> None:
        pending = b""
        try:
            async for chunk in stream:
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if self._waiting:
                        self._waiting.popleft().set(json_loads(line))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if self._stream is stream:
            self._drop(RelayUnavailable("the relay's listener closed the connection"))

    def _drop(self, error: RelayUnavailable) -> None:
        """Forget the connection; what waits on it will not be answered."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.socket.close()
        self._outbox.clear()  # never sent: their publishes fail with the rest
        self._outbox_ready.set()  # the old connection's writer sees it is gone
        while self._waiting:
            self._waiting.popleft().fail(error)


class _Reply:
    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: dict[str, Any] = {}
        self._error: RelayUnavailable | None = None

    def set(self, value: dict[str, Any]) -> None:
        self._value = value
        self._done.set()

    def fail(self, error: RelayUnavailable) -> None:
        self._error = error
        self._done.set()

    async def wait(self) -> dict[str, Any]:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


def _bind(path: Path) -> socket.socket:
    """A listening Unix socket at ``path``, replacing a file nobody listens on."""
    if len(os.fsencode(path)) > MAX_PATH:
        raise OSError(
            errno.ENAMETOOLONG,
            f"{path}: longer than a Unix socket's path may be ({MAX_PATH} bytes); "
            "use a shorter data directory",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:  # refused, gone, not a socket: left by a process that died
            path.unlink(missing_ok=True)
        else:
            raise RelayBusy(
                errno.EADDRINUSE,
                f"another process publishes events at {path}: one canopy serve per data "
                "directory on the memory broker (set CANOPY_BROKER=redis://... for more)",
            )
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(64)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
