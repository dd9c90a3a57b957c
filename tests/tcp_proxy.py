"""A TCP proxy on 127.0.0.1 that a test can make misbehave like a network: ``hold()``
stops forwarding on the connections open now without closing them (packets dropped,
no FIN, no RST), ``cut()`` closes them. New connections are forwarded, or closed at
once while ``refusing`` is set (a server out of reach)."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

__all__ = ["Proxy"]


@dataclass(eq=False)
class _Link:
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    held: bool = False


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self.refusing = False
        self._links: set[_Link] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._forward, listeners)

    def hold(self) -> None:
        for link in self._links:
            link.held = True

    def cut(self) -> None:
        for link in self._links:
            link.scope.cancel()

    async def _forward(self, client: trio.SocketStream) -> None:
        if self.refusing:
            await client.aclose()
            return
        self.accepted += 1
        link = _Link()
        self._links.add(link)
        try:
            async with client, await trio.open_tcp_stream("127.0.0.1", self.target_port) as server:
                with link.scope:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, server, link, nursery.cancel_scope)
                        nursery.start_soon(self._pump, server, client, link, nursery.cancel_scope)
        except (OSError, trio.BrokenResourceError):
            pass  # the server is gone or refused: the client sees its connection close
        finally:
            self._links.discard(link)

    @staticmethod
    async def _pump(
        source: trio.SocketStream, sink: trio.SocketStream, link: _Link, done: trio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                if not link.held:
                    await sink.send_all(chunk)
        except trio.BrokenResourceError:
            pass
        if not link.held:
            done.cancel()  # one side closed: close the other
