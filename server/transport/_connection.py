"""Canopy's Trio transport: one accepted stream, driven through Hypercorn's protocol classes.

Hypercorn's sans-I/O layer (h11, h2 and wsproto handling behind ``ProtocolWrapper``)
stays as it is. What this module replaces is Hypercorn's Trio ``TCPServer``, for two
reasons:

- speed: Hypercorn restarts an idle-timeout task with ``nursery.start`` twice per
  request. Here the keep-alive timeout is the deadline of the cancel scope around
  the socket read, moved as the connection goes busy and idle: no task at all.
- a graceful drain: :meth:`Connection.drain` makes the next response carry
  ``Connection: close``, lets idle keep-alive connections answer for a short linger
  instead of resetting them, and closes WebSockets with 1001 and a reason.
- WebSockets without ASGI: an upgrade for a path the app hands the transport is
  answered here, and its session runs in this connection's task (``_websocket``).

Resource handling: each connection owns one nursery holding its ASGI app tasks, so a
connection never outlives what it started. Each app call runs in its own cancel
scope, cancelled when the client disconnects before the response is complete.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping, MutableSet
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState
from hypercorn.utils import parse_socket_addr

from canopy.nurseries.fanout import SubscriberGone

from ._extensions import CANCEL_ON_DISCONNECT, TRANSPORT_EXTENSION
from ._hypercorn import CanopyProtocolWrapper
from ._websocket import (
    ServerWebSocket,
    WebSocketHandler,
    WebSocketSession,
    accept_response,
    parse_upgrade,
)

__all__ = ["SHUTDOWN_CLOSE_CODE", "ClientDisconnected", "Connection"]

log = logging.getLogger("canopy.transport")

MAX_RECV = 2**16
SEND_TIMEOUT = 30.0
# After the server closes a connection (a response with Connection: close, one sent
# before the request's body ended), how long it reads and discards what the client
# still sends, so that the close does not reset the response away (see _linger).
LINGER = 2.0
SHUTDOWN_CLOSE_CODE = 1001
SHUTDOWN_CLOSE_REASON = "server shutting down"


class _Inbox:
    """An app call's receive queue: Hypercorn's protocol puts, the one app task gets.

    Bounded like a memory channel (when full, ``put`` waits, so a slow app pushes
    back on the reader), but with nothing to allocate unless someone has to wait:
    on the common path a request's body is already queued when the app asks for it.
    """

    __slots__ = ("_closed", "_getter", "_items", "_last", "_limit", "_putters")

    def __init__(self, limit: int) -> None:
        # A list, not a deque: it holds at most ``limit`` (Hypercorn's
        # ``max_app_queue_size``, 10 by default), and an empty deque is 760 bytes
        # against a list's 56, for every open WebSocket.
        self._items: list[Any] = []
        self._limit = max(1, limit)
        self._getter: trio.Event | None = None
        self._putters: trio.lowlevel.ParkingLot | None = None
        self._closed = False
        self._last: Any = None

    @property
    def full(self) -> bool:
        return len(self._items) >= self._limit

    def close(self, last: Any = None) -> None:
        """Nothing more will be read from here (a response is complete, or the call is
        over): what comes now, the rest of a body the app refused, is dropped, a put
        waiting for room returns, and a get has ``last``."""
        self._closed = True
        self._last = last
        self._items.clear()
        if self._putters is not None:
            self._putters.unpark_all()
        if self._getter is not None:
            self._getter.set()

    async def put(self, message: Any) -> None:
        if self._closed:
            return
        while len(self._items) >= self._limit:
            if self._closed:
                return
            if self._putters is None:
                self._putters = trio.lowlevel.ParkingLot()
            await self._putters.park()
        self._items.append(message)
        getter = self._getter
        if getter is not None:
            self._getter = None
            getter.set()

    async def get(self) -> Any:
        # Several tasks may wait (a WebSocket view can receive from more than one):
        # they share the event, and those that find nothing when it fires wait again.
        while not self._items:
            if self._closed:
                return self._last
            if self._getter is None:
                self._getter = trio.Event()
            await self._getter.wait()
        if self._putters is not None:
            self._putters.unpark()
        return self._items.pop(0)


class _AppCall:
    """One ASGI application call, seen from the transport.

    It corks the connection from ``http.response.start`` until the next message, so
    a response's head and body leave in one write. A client disconnect before the
    response is complete cancels the call: through its own cancel scope on HTTP/2,
    where streams share the connection, and by aborting the connection on HTTP/1.1,
    where this call is the only one it has. A WebSocket call is cancelled at the
    client's disconnect only if the app asked for it (``CANCEL_ON_DISCONNECT`` in
    the transport extension); otherwise it reads the disconnect, as ASGI has it.
    """

    __slots__ = (
        "_disconnected",
        "_inbox",
        "_on_disconnect",
        "_send",
        "body_complete",
        "cancel_scope",
        "connection",
        "receive",
        "responded",
        "started",
    )

    def __init__(
        self, connection: Connection, send: Callable[[Any], Awaitable[None]], scope: Any
    ) -> None:
        self.connection = connection
        self._send = send
        self._disconnected = False
        self._on_disconnect: Callable[[], object] | None = None
        self.cancel_scope = trio.CancelScope() if scope.get("http_version") == "2" else None
        self.started = False
        self.responded = False
        self.body_complete = False
        self._inbox = _Inbox(connection.config.max_app_queue_size)
        self.receive = self._inbox.get

    async def send(self, message: Any) -> None:
        if message is None:
            self._inbox.close()
            self.connection.uncork()
            await self._send(None)
            # The stream holds our ``put`` and we its ``app_send``: a reference cycle
            # per request, left for the cyclic collector (see ``_finished``).
            self._send = _finished
            await self.connection.flush()
            return
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            self.connection.cork()
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.responded = True
            # What the client still sends is not for the app: Hypercorn's own
            # http.disconnect must not wait behind the body chunks that filled the queue.
            self._inbox.close(_DISCONNECT)
        await self._send(message)
        if kind != "http.response.start":
            self.connection.uncork()
            await self.connection.flush()

    async def put(self, message: Any) -> None:
        if self._inbox.full:
            self.connection.promote(self)  # a deferred call must run to make room
        kind = message["type"]
        if kind == "http.disconnect" or (kind == "http.request" and not message.get("more_body")):
            self.body_complete = True
        if kind == "http.disconnect" and not self.responded:
            if self.cancel_scope is not None:
                self.cancel_scope.cancel()
            else:
                self.connection.abort()
        elif kind == "websocket.disconnect":
            self._disconnected = True
            if self._on_disconnect is not None:
                self._on_disconnect()  # the app asked for this instead of reading it
        await self._inbox.put(message)

    def cancel_on_disconnect(self, cancel: Callable[[], object]) -> None:
        """What the app calls (``CANCEL_ON_DISCONNECT`` in the transport extension) to
        have ``cancel`` called at the client's disconnect; at once if it came first,
        which it may before the app's task has run at all."""
        if self._disconnected:
            cancel()
        else:
            self._on_disconnect = cancel


_DISCONNECT = {"type": "http.disconnect"}


class ClientDisconnected(OSError):
    """A send to a connection that is gone: what the ASGI spec asks a server to raise
    (a subclass of ``OSError``), so that an app can tell a client that left from a
    fault of its own."""


async def _finished(message: Any) -> None:
    """What an app call sends to once its stream is closed (the client left, or the
    response ended): nothing more.

    Left as a cycle, each request's stream and call (with their scope, buffers and
    bound methods, about fifteen objects) stayed in memory until the cyclic collector
    ran, and each collection walked them (see ``canopy.server.app._process.tune_gc``).
    """
    raise ClientDisconnected("the connection is closed; nothing more can be sent")


class _ReaderEvent:
    """Hypercorn's ``can_read`` event, which also runs a deferred HTTP/1.1 request.

    An HTTP/1.1 request is run by the connection's reading task itself, once the
    protocol has consumed what was read (see ``Connection.run_deferred``): no task to
    spawn and no two context switches per request. When requests are pipelined,
    ``H11Protocol`` parks the reader on ``can_read.wait()`` until the current one is
    answered; waiting here runs it first. Waiting on an event that is already set
    returns without a trip through the scheduler.
    """

    __slots__ = ("_connection", "_event", "_flag")

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._flag = False
        self._event: trio.Event | None = None

    async def clear(self) -> None:
        self._flag = False
        self._event = None

    async def set(self) -> None:
        self._flag = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        await self._connection.run_deferred()
        if self._flag:
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()

    def is_set(self) -> bool:
        return self._flag


class _TaskGroup:
    """The task-group interface Hypercorn's protocol classes expect, on our nursery."""

    def __init__(self, connection: Connection, nursery: trio.Nursery) -> None:
        self._connection = connection
        self._nursery = nursery

    async def spawn_app(
        self, app: AppWrapper, config: Config, scope: Any, send: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        extension: dict[str, Any] = {}
        scope["extensions"][TRANSPORT_EXTENSION] = extension
        call = _AppCall(self._connection, send, scope)
        if scope["type"] == "websocket":  # an HTTP call is cancelled at disconnect anyway
            extension[CANCEL_ON_DISCONNECT] = call.cancel_on_disconnect
        if self._connection.inline and scope["type"] == "http" and call.cancel_scope is None:
            self._connection.defer(app, scope, call)
        else:
            self._nursery.start_soon(_run_app, app, scope, call)
        return call.put

    def spawn(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._nursery.start_soon(func, *args)


async def _run_app(app: AppWrapper, scope: Any, call: _AppCall) -> None:
    finished = False  # False only when cancelled from outside (the end of a drain's grace)
    try:
        if call.cancel_scope is None:
            await app(scope, call.receive, call.send, trio.to_thread.run_sync, trio.from_thread.run)
        else:
            with call.cancel_scope:
                await app(
                    scope, call.receive, call.send, trio.to_thread.run_sync, trio.from_thread.run
                )
        finished = True
    except Exception:
        finished = True  # a bug: the stream answers 500 below if nothing was sent
        log.exception("error in ASGI application", extra={"path": scope.get("path")})
    finally:
        if finished:
            await call.send(None)
        else:
            # Cut off by the end of a drain's grace: answer 503 so the client retries
            # elsewhere (never a 500), then let the stream finish. Shielded, and
            # bounded. (Only here: two cancel scopes on every request's way out
            # would cost every request.)
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                if scope["type"] == "http" and not call.started:
                    await call.send(_UNAVAILABLE_START)
                    await call.send(_UNAVAILABLE_BODY)
                await call.send(None)


_UNAVAILABLE = (
    b'{"error":"unavailable","message":"the server stopped before this request finished"}'
)
_UNAVAILABLE_START = {
    "type": "http.response.start",
    "status": 503,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_UNAVAILABLE)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ],
}
_UNAVAILABLE_BODY = {"type": "http.response.body", "body": _UNAVAILABLE, "more_body": False}


class Connection:
    """Serves one client stream until it closes, idles out, or the server drains."""

    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        lifespan_state: dict[str, Any],
        registry: MutableSet[Connection],
        stream: trio.abc.Stream,
        *,
        inline: bool = False,
        websockets: Mapping[str, WebSocketHandler] | None = None,
    ) -> None:
        self.app = app
        self.inline = inline
        self.websockets = websockets or {}
        self.config = config
        self.lifespan_state = lifespan_state
        self.registry = registry
        self.stream = stream
        self.protocol: CanopyProtocolWrapper
        self._nursery: trio.Nursery
        # Made when first needed (a write that must wait), as the worker context is
        # (Hypercorn's protocols): an idle WebSocket the transport runs has neither.
        self.context: WorkerContext
        self._send_lock: trio.Lock | None = None
        self._idle = True
        self._idle_since = trio.current_time()
        self._draining = False
        self._drain_deadline = math.inf
        self._read_scope: trio.CancelScope | None = None
        self._closed = False
        self._lingering = False  # closed by the server, reading on to discard (_linger)
        self._corked = False
        self._pending: list[bytes] = []
        self._fd = -1  # the socket's descriptor, for writes that need no await
        self._deferred: tuple[AppWrapper, Any, _AppCall] | None = None
        self._websocket: ServerWebSocket | None = None  # one the transport runs

    async def run(self) -> None:
        self.registry.add(self)
        try:
            ssl, alpn = await self._handshake()
            if alpn is None:
                return
            first = b""
            if not ssl:
                self._fd = cast(trio.SocketStream, self.stream).socket.fileno()
                if self.websockets:
                    first = await self._first_read()
                    if not first:
                        return
                    websocket = self._websocket_session(first)
                    if websocket is not None:
                        first = b""  # not held for the session's lifetime
                        await websocket
                        return
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.protocol = self._make_protocol(nursery, ssl, alpn)
                await self.protocol.initiate()
                await self._read_loop(first)
        except OSError:
            pass  # the peer vanished (getpeername on a reset socket, and the like)
        except Exception:
            # One broken connection must never take the server down with it.
            log.exception("connection failed")
        finally:
            self.registry.discard(self)
            await self._close()
            # The protocol holds our send and task group, and the worker context our
            # event class: cycles that kept a closed connection (about fifty objects,
            # its task and nursery among them) until the collector ran.
            for name in ("protocol", "_nursery", "context", "_websocket"):
                vars(self).pop(name, None)

    async def _handshake(self) -> tuple[bool, str | None]:
        if not isinstance(self.stream, trio.SSLStream):
            return False, "http/1.1"
        try:
            with trio.fail_after(self.config.ssl_handshake_timeout):
                await self.stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError):
            return True, None
        return True, self.stream.selected_alpn_protocol() or "http/1.1"

    def _make_protocol(self, nursery: trio.Nursery, ssl: bool, alpn: str) -> CanopyProtocolWrapper:
        self.context = WorkerContext(None)
        self.context.event_class = partial(_ReaderEvent, self)  # type: ignore[assignment]
        stream = self.stream
        transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        sock = cast(trio.SocketStream, transport).socket
        return CanopyProtocolWrapper(
            self.app,
            self.config,
            self.context,
            _TaskGroup(self, nursery),
            ConnectionState(self.lifespan_state.copy()),
            ssl,
            parse_socket_addr(sock.family, sock.getpeername()),
            parse_socket_addr(sock.family, sock.getsockname()),
            self._protocol_send,
            alpn,
        )

    async def _first_read(self) -> bytes:
        """What a fresh connection sends first (b"" if nothing, before it idles out):
        a WebSocket upgrade the transport takes (``websockets``), or Hypercorn's."""
        data = b""
        with trio.CancelScope() as self._read_scope:
            data = await self.read()
        self._read_scope = None
        return data

    def _websocket_session(self, first: bytes) -> Awaitable[None] | None:
        """The session of an upgrade the transport takes (see ``_websocket``), or None."""
        compression = bool(getattr(self.config, "websocket_compression", False))
        taken = parse_upgrade(first, self.websockets, compression=compression)
        if taken is None:
            return None
        upgrade, trailing = taken
        # The handler reads what it needs of the request now: nothing of it is kept.
        session = self.websockets[upgrade.path](upgrade)
        answer = accept_response(upgrade, self.config.response_headers("h11"))
        return self._serve_websocket(session, answer, trailing, upgrade.path)

    async def _serve_websocket(
        self, session: WebSocketSession, answer: bytes, trailing: bytes, path: str
    ) -> None:
        """Answer the upgrade and run the session in this task, the connection's only
        one. At a drain the session is asked to end (``ServerWebSocket.on_drain``)."""
        self._idle = False  # never reaped as an idle keep-alive connection
        if not await self.write(answer):
            return
        socket = ServerWebSocket(self, trailing, self.config.websocket_max_message_size)
        self._websocket = socket
        try:
            await session(socket)
        except SubscriberGone:
            pass
        except Exception:
            log.exception("error in WebSocket session", extra={"path": path})
            with trio.move_on_after(1.0):
                await socket.close(1011, "internal error")
        finally:
            socket.on_drain(None)  # it holds the session, which holds the socket
        if self._pending:
            # A close frame's answer, a pong: as far as the socket takes it now. The
            # connection is closing; a client that does not read does not hold it
            # open for the send timeout.
            self.write_nowait(self._take_pending())

    async def read(self) -> bytes:
        """The client's next bytes, b"" once it has gone: for a WebSocket run here."""
        try:
            return await self._receive()
        except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            return b""

    def write_nowait(self, data: bytes) -> bool:
        """Write ``data`` after what is queued, as far as the socket takes it now;
        False if some is left queued for :meth:`write`. A broken connection's is
        dropped (its reader finds it closed)."""
        if self._closed:
            return True
        if self._pending or (self._send_lock is not None and self._send_lock.locked()):
            self._pending.append(data)
            return False
        sent = self._write_now(data)
        if sent is not None and sent < len(data):
            self._pending.append(data[sent:])
            return False
        return True

    def _write_now(self, data: bytes) -> int | None:
        """One non-blocking write: how much the socket took, None if it is broken."""
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError:
            return None

    def queue(self, data: bytes) -> None:
        """Send ``data`` with the next :meth:`write` (a pong, say, with what it answers)."""
        self._pending.append(data)

    async def write(self, data: bytes = b"") -> bool:
        """Send what was queued, then ``data``; False (and closed) if the client has gone."""
        if data:
            self._pending.append(data)
        if not self._pending:
            return not self._closed
        if await self._write(self._take_pending()):
            return True
        await self._close()
        return False

    def drain(self, linger: float) -> None:
        """Begin this connection's part of a graceful shutdown; does not block."""
        self._draining = True
        self._drain_deadline = trio.current_time() + linger
        if self._websocket is not None:
            self._websocket.server_draining()
        protocol = getattr(self, "protocol", None)
        inner = protocol.protocol if protocol is not None else None
        if isinstance(inner, H11Protocol):
            inner.keep_alive_requests = math.inf  # type: ignore[assignment]
            stream = inner.stream
            if isinstance(stream, WSStream) and stream.state is ASGIWebsocketState.CONNECTED:
                self._nursery.start_soon(self._close_websocket, stream)
        self._apply_drain_deadline()

    async def _close_websocket(self, stream: WSStream) -> None:
        await stream.app_send(
            {
                "type": "websocket.close",
                "code": SHUTDOWN_CLOSE_CODE,
                "reason": SHUTDOWN_CLOSE_REASON,
            }
        )
        await stream.handle(StreamClosed(stream_id=stream.stream_id))
        self._idle = True  # now only waiting for the client's close frame and FIN
        self._apply_drain_deadline()

    def reap(self, now: float, idle_limit: float) -> None:
        """Close the connection if it has been idle for ``idle_limit`` (keep-alive).

        Called by the server's reaper, which sweeps every connection a few times per
        keep-alive period: cheaper than a cancel-scope deadline moved twice per request.
        """
        if self._idle and not self._draining and now - self._idle_since >= idle_limit:
            if self._read_scope is not None:
                self._read_scope.cancel()

    def _apply_drain_deadline(self) -> None:
        # While draining, an idle connection lingers until the drain deadline; a busy
        # one has until its request is done (bounded by the server's grace).
        if self._draining and self._read_scope is not None and not self._lingering:
            self._read_scope.deadline = self._drain_deadline if self._idle else math.inf

    async def _read_loop(self, first: bytes) -> None:
        # One scope for the connection's whole life, cancelled by the reaper when the
        # connection idles out, or given the linger deadline when the server drains.
        with trio.CancelScope() as self._read_scope:
            self._apply_drain_deadline()
            if first:
                await self.protocol.handle(RawData(first))
                await self.run_deferred()
            while not self._closed:
                try:
                    data = await self._receive()
                except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
                    break
                if not data:
                    break
                if self._lingering:
                    continue  # the server has closed: what the client still sends is dropped
                await self.protocol.handle(RawData(data))
                await self.run_deferred()
                if self._draining and self._idle:
                    break
        self._read_scope = None
        await self.protocol.handle(Closed())

    async def _receive(self) -> bytes:
        if self._fd < 0:
            return bytes(await self.stream.receive_some(MAX_RECV))
        # Plain TCP: what trio's recv does, minus its layers. Read first (under load the
        # next request is usually waiting), yield once so other tasks run, and wait
        # for readability only when there was nothing to read.
        # After every await, check that no other task closed the connection meanwhile:
        # a closed descriptor's number may already belong to a new connection.
        await trio.lowlevel.checkpoint()
        while not self._closed:
            try:
                return os.read(self._fd, MAX_RECV)
            except BlockingIOError:
                pass
            # Not in the except clause: a task waiting there keeps the exception and
            # its traceback alive, for as long as an idle connection waits.
            await trio.lowlevel.wait_readable(self._fd)
        return b""

    def defer(self, app: AppWrapper, scope: Any, call: _AppCall) -> None:
        """Hold an HTTP/1.1 request for the reader to run (see ``_ReaderEvent``).

        Only with ``inline=True``, for apps that read the request body and then never
        call ``receive()`` again (Canopy's connection class): the reader cannot feed an
        app it is running. The trade: while the reader runs a request it does not read,
        so a client that disconnects mid-request is noticed when the response is
        written, not before; the request stays bounded by its deadline.
        """
        if self._deferred is not None:
            self.promote(self._deferred[2])
        self._deferred = (app, scope, call)

    def promote(self, call: _AppCall) -> None:
        """Run a deferred request in a task of its own after all (its body is large)."""
        if self._deferred is not None and self._deferred[2] is call:
            self._nursery.start_soon(_run_app, *self._deferred)
            self._deferred = None

    async def run_deferred(self) -> None:
        """Run the deferred request, once its body is complete (the app reads it first)."""
        if self._deferred is not None and self._deferred[2].body_complete:
            deferred, self._deferred = self._deferred, None
            await _run_app(*deferred)

    def abort(self) -> None:
        """The client is gone: cancel everything this connection runs."""
        self._nursery.cancel_scope.cancel()

    async def _protocol_send(self, event: Event) -> None:
        # Exact types: Hypercorn's events derive from an ABC, so ``isinstance`` goes
        # through ``ABCMeta.__instancecheck__``, three times a request. It sends only
        # these three classes, never subclasses.
        kind = type(event)
        if kind is RawData:
            data = cast(RawData, event).data
            if data:
                self._pending.append(data)
                if not self._corked:
                    await self.flush()
        elif kind is Updated:
            idle = cast(Updated, event).idle
            self._idle = idle
            if idle:
                self._idle_since = trio.current_time()
            if self._draining:
                self._apply_drain_deadline()
        elif kind is Closed:
            self._corked = False
            await self.flush()
            await self._linger()
            await self.protocol.handle(Closed())

    def cork(self) -> None:
        self._corked = True

    def uncork(self) -> None:
        self._corked = False

    async def flush(self) -> None:
        if self._corked or not self._pending:
            return
        if not await self._write(self._take_pending()):
            await self._close()
            await self.protocol.handle(Closed())

    def _take_pending(self) -> bytes:
        """Everything queued to send, as one write's worth."""
        pending = self._pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        return data

    async def _write(self, data: bytes) -> bool:
        """Write ``data`` in order; False if the connection is broken."""
        if self._closed:
            return False
        lock = self._send_lock
        if self._fd >= 0 and (lock is None or not lock.locked()):
            # Fast path: a non-blocking write that usually takes everything at once,
            # with no await and so no cancel scope to enter.
            sent = self._write_now(data)
            if sent is None:
                return False
            if sent == len(data):
                return True
            data = data[sent:]
        # Shielded, the wait for the lock included, so a cancelled writer cannot leave
        # half a frame or response on the wire (the fast path may have written the
        # first part already); bounded so a client that stopped reading cannot hold
        # the drain open. Past the deadline the connection is closed, not resumed.
        if lock is None:
            lock = self._send_lock = trio.Lock()
        deadline = trio.current_time() + SEND_TIMEOUT
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            async with lock:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return False
        return not scope.cancelled_caught

    async def _linger(self) -> None:
        """The server's close: the end of writing (a FIN), then reading on, discarding,
        until the client closes or ``LINGER`` has passed. Closing a socket with unread
        input makes the kernel answer with a reset, which discards what the client has
        not read yet: a 413 sent before the body ended never arrived. TLS has no
        half-close: closed at once, as before."""
        if self._fd < 0 or self._read_scope is None:
            await self._close()
            return
        try:
            cast(trio.SocketStream, self.stream).socket.shutdown(trio.socket.SHUT_WR)
        except OSError:
            pass  # the peer has gone already; the read sees it
        self._lingering = True
        self._read_scope.deadline = min(self._read_scope.deadline, trio.current_time() + LINGER)

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._fd >= 0:
            # Plain TCP: what send_eof and aclose do, without their two checkpoints
            # (aclose_forcefully's a cancelled one, which raised and caught a
            # Cancelled for every connection closed).
            sock = cast(trio.SocketStream, self.stream).socket
            try:
                sock.shutdown(trio.socket.SHUT_WR)
            except OSError:
                pass  # the peer has gone already
            sock.close()
            return
        with trio.CancelScope(shield=True):
            try:
                await self.stream.send_eof()  # type: ignore[attr-defined]
            except (
                trio.BrokenResourceError,
                trio.BusyResourceError,
                trio.ClosedResourceError,
                AttributeError,  # TLS streams have no half-close
            ):
                pass
            await trio.aclose_forcefully(self.stream)
