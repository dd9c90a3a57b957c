"""The HTTP serving service: Hypercorn's config and protocols, Canopy's nurseries and drain.

Shape of :meth:`HTTPService.run`, outermost first::

    lifespan nursery      the ASGI lifespan (Quart's before/after_serving)
      connections nursery one task per client connection; its deadline is the drain grace
        acceptors nursery the accept loops (cancelling it closes the listening sockets)
                          and the reaper that closes idle keep-alive connections

``shutdown()`` cancels the acceptors (a new connection is refused from then on, not
left hanging in a backlog), asks every connection to drain, and gives the
connections nursery ``graceful_timeout`` seconds before whatever is left is cancelled.
Then the lifespan shuts down, bounded by Hypercorn's ``shutdown_timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.utils import repr_socket_addr, wrap_app

from ._connection import Connection
from ._listen import Listener, accept_loop
from ._websocket import WebSocketHandler

__all__ = ["CannotListen", "HTTPService"]

log = logging.getLogger("canopy.http")


class CannotListen(OSError):
    """An address to serve cannot be bound (in use, not this host's, not allowed);
    the message names it, and is all an operator needs."""


class HTTPService:
    """Serves an ASGI app; a :class:`nurseries.Drainable` child of the supervision tree."""

    def __init__(
        self, app: Any, config: Config, *, drain_linger: float = 1.0, inline: bool = False
    ) -> None:
        """``inline``: run HTTP/1.1 requests in the reading task (see ``Connection.defer``)."""
        self._unwrapped = app
        self.app = wrap_app(app, config.wsgi_max_body_size, "asgi")
        self.config = config
        self.drain_linger = drain_linger
        self.inline = inline
        self.binds: list[str] = []
        self._connections: set[Connection] = set()
        self._stop = trio.Event()

    @property
    def grace(self) -> float:
        """How long the supervisor should allow for a full stop (drain plus lifespan)."""
        return self.config.graceful_timeout + self.config.shutdown_timeout + 1.0

    def shutdown(self) -> None:
        self._stop.set()

    async def run(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        lifespan_state: dict[str, Any] = {}
        lifespan = Lifespan(self.app, self.config, lifespan_state)
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            await self._serve(lifespan_state, task_status)
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _serve(
        self, lifespan_state: dict[str, Any], task_status: trio.TaskStatus[list[str]]
    ) -> None:
        listeners, self.binds = self._listen()
        handler = partial(
            _serve_connection,
            self.app,
            self.config,
            lifespan_state,
            self._connections,
            self.inline,
            self._websockets(),
        )
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptors:
                for listener in listeners:
                    acceptors.start_soon(accept_loop, listener, handler, connections)
                acceptors.start_soon(self._reap_idle)
                for bind in self.binds:
                    log.info("listening", extra={"bind": bind})
                task_status.started(self.binds)
                await self._stop.wait()
                acceptors.cancel_scope.cancel()
            self._drain(connections)
        log.info("drained")

    async def _reap_idle(self) -> None:
        """Close keep-alive connections idle past the timeout, a few sweeps per period."""
        limit = self.config.keep_alive_timeout
        if self.config.read_timeout:
            limit = min(limit, self.config.read_timeout)
        interval = min(1.0, max(0.02, limit / 4))
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for connection in list(self._connections):
                connection.reap(now, limit)

    def _websockets(self) -> Mapping[str, WebSocketHandler]:
        """The WebSocket paths the app hands the transport (``_websocket``), read once
        it has started: an app assembles its routes at start-up."""
        routes = getattr(self._unwrapped, "transport_websockets", None)
        return routes() if callable(routes) else {}

    def _drain(self, connections: trio.Nursery) -> None:
        log.info("draining", extra={"connections": len(self._connections)})
        connections.cancel_scope.deadline = trio.current_time() + self.config.graceful_timeout
        for connection in list(self._connections):
            connection.drain(self.drain_linger)

    def _listen(self) -> tuple[list[Listener], list[str]]:
        try:
            sockets = self.config.create_sockets()
        except OSError as exc:
            where = ", ".join([*self.config.bind, *self.config.insecure_bind])
            raise CannotListen(f"cannot listen on {where}: {exc.strerror or exc}") from None
        ssl_context = self.config.create_ssl_context() if sockets.secure_sockets else None
        listeners: list[Listener] = []
        binds = []
        for scheme, group, context in (
            ("https", sockets.secure_sockets, ssl_context),
            ("http", sockets.insecure_sockets, None),
        ):
            for sock in group:
                sock.listen(self.config.backlog)
                listeners.append(Listener(sock, context))
                binds.append(f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}")
        if not listeners:
            raise CannotListen("nothing to listen on: no bind is configured")
        return listeners, binds


async def _serve_connection(
    app: Any,
    config: Config,
    lifespan_state: dict[str, Any],
    registry: set[Connection],
    inline: bool,
    websockets: Mapping[str, WebSocketHandler],
    stream: trio.abc.Stream,
) -> None:
    connection = Connection(
        app, config, lifespan_state, registry, stream, inline=inline, websockets=websockets
    )
    await connection.run()
