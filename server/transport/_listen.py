"""Accepting connections in batches.

Trio's ``SocketListener.accept`` takes one connection per trip through the scheduler.
On a busy server a trip runs hundreds of requests, so when a thousand clients connect
at once the last ones can wait seconds to be accepted, where asyncio and uvloop
servers drain the backlog in a loop. Here a listener waits until its socket is
readable, then accepts without awaiting until the backlog is empty or a batch is
done.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

__all__ = ["ACCEPT_BATCH", "Listener", "accept_loop"]

log = logging.getLogger("canopy.http")

ACCEPT_BATCH = 256
# Out of descriptors or memory: back off instead of spinning (as trio.serve_listeners does).
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_CAPACITY_SLEEP = 0.1


@dataclass
class Listener:
    """A bound, listening socket; TLS when ``ssl_context`` is set."""

    sock: socket.socket
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self.sock.setblocking(False)

    def wrap(self, conn: socket.socket) -> trio.abc.Stream:
        stream: trio.abc.Stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
        if self.ssl_context is not None:
            stream = trio.SSLStream(
                stream, self.ssl_context, server_side=True, https_compatible=True
            )
        return stream


async def accept_loop(
    listener: Listener,
    handler: Callable[[trio.abc.Stream], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept into ``nursery`` until cancelled; closes the listening socket on the way out.

    Closing it at once is what makes a draining server refuse new connections
    immediately rather than leave them in the backlog.
    """
    try:
        while True:
            await trio.lowlevel.wait_readable(listener.sock)
            for _ in range(ACCEPT_BATCH):
                try:
                    conn, _ = listener.sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno not in _CAPACITY_ERRNOS:
                        raise
                    log.error("cannot accept: %s; retrying", exc.strerror)
                    await trio.sleep(_CAPACITY_SLEEP)
                    break
                nursery.start_soon(handler, listener.wrap(conn))
    finally:
        trio.lowlevel.notify_closing(listener.sock)
        listener.sock.close()
