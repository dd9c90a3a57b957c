"""Where Canopy's transport reaches into Hypercorn: each of its internals that Canopy
changes, in this one module, written against Hypercorn 0.18.0.

Canopy's transport (``_connection``) drives Hypercorn's protocol classes (HTTP/1.1,
HTTP/2, WebSocket streams) from a Trio task of its own per connection. It changes
them in two ways. HTTP/2 data for a stream that was answered and closed before its
body ended is dropped, not a ``KeyError`` that ends the connection
(``CanopyH2Protocol._handle_events``). And a WebSocket stream offers the app one
more ASGI extension, ``canopy.websocket.frames``. A broadcast to a thousand
subscribers sends the same frame a thousand times; with the extension the app
passes the frame bytes it built once, and a batch of them goes out in one write,
instead of wsproto encoding each message per subscriber. When the connection
negotiated an extension that changes frames (permessage-deflate), the texts are sent
the usual way.

Hypercorn's protocols make their streams from the module-level name ``WSStream``, and
its protocol wrapper makes the protocols from ``H11Protocol`` and ``H2Protocol``.
Nothing in Hypercorn's modules is replaced: the subclasses below run upstream's own
methods with this module's classes in place of those names (:func:`_rebound`), so
only connections made by Canopy's transport get them. Under Hypercorn's own worker
(``hypercorn --config hypercorn.toml shop:app``) the app finds no frames extension
and the topics send a message per frame, as under any other server.

A WebSocket handshake accepts permessage-deflate only when the setting
``websocket_compression`` is on, and then without context takeover
(``CanopyWSStream.handle``, with ``Handshake`` and ``Handshake.accept`` rebound).

When a WebSocket stream closes, it closes its wsproto parser, a generator that would
otherwise keep the connection's frame protocol in a reference cycle
(``CanopyWSStream._release_parser``).

The transport also relies on how ``H11Protocol`` waits for its reader
(``context.event_class``), on its ``keep_alive_requests`` and ``stream`` (the
drain) and on ``WSStream``'s state. tests/unit/server/test_hypercorn_overrides.py pins the
source of every upstream function named here, so a Hypercorn release that changes
one fails a test before it changes the transport.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, TypeVar

import h2.events as h2_events
import h2.settings as h2_settings
from hypercorn.events import Closed, Updated
from hypercorn.protocol import ProtocolWrapper, h2, h11
from hypercorn.protocol.events import Body, Data, EndBody, StreamClosed
from hypercorn.protocol.ws_stream import ASGIWebsocketState, Handshake, WSStream
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage
from wsproto.extensions import PerMessageDeflate

from canopy.handlers.topics import FRAMES_EXTENSION

__all__ = ["CanopyProtocolWrapper", "CanopyWSStream"]

F = TypeVar("F", bound=Callable[..., Any])


def _rebound(function: F, **names: object) -> F:
    """``function``'s own code, reading ``names`` where it reads those globals."""
    code = function.__code__
    if code.co_freevars or not set(names) <= set(code.co_names):
        raise TypeError(f"{function.__qualname__} no longer reads {sorted(names)} as globals")
    rebound = types.FunctionType(
        code, {**function.__globals__, **names}, function.__name__, function.__defaults__
    )
    rebound.__kwdefaults__ = function.__kwdefaults__
    rebound.__qualname__ = function.__qualname__
    return rebound  # type: ignore[return-value]


class _Advertising:
    """A task group that adds the frames extension to a WebSocket scope before the
    app is spawned with it (Hypercorn builds the scope inside ``WSStream.handle``)."""

    def __init__(self, task_group: Any) -> None:
        self._task_group = task_group

    async def spawn_app(self, app: Any, config: Any, scope: Any, send: Any) -> Any:
        scope["extensions"][FRAMES_EXTENSION] = {}
        return await self._task_group.spawn_app(app, config, scope, send)

    def spawn(self, func: Any, *args: Any) -> None:
        self._task_group.spawn(func, *args)


class _Uncompressed(Handshake):
    """Upstream's handshake, as if the client had offered no extension: upstream
    accepts permessage-deflate whenever it is offered, as every browser does."""

    def __init__(self, headers: list[tuple[bytes, bytes]], http_version: str) -> None:
        super().__init__(headers, http_version)
        self.extensions = None


def _deflate_without_context() -> PerMessageDeflate:
    # Neither side keeps a compression context between messages: wsproto then makes
    # its compressor and decompressor per message and drops them after, so an idle
    # connection holds no zlib state (with zlib's defaults, upstream's compressor alone
    # holds a quarter of a MiB per connection).
    return PerMessageDeflate(client_no_context_takeover=True, server_no_context_takeover=True)


class _DeflateWithoutContext(Handshake):
    accept = _rebound(Handshake.accept, PerMessageDeflate=_deflate_without_context)


class CanopyWSStream(WSStream):
    """WSStream plus the frames extension: advertised in the scope, and a message of
    pre-encoded frames (its ``type`` is the extension's name) written as it is.

    Compression is the config's ``websocket_compression`` (from Canopy's setting
    ``ws_compression``): off, the handshake accepts no extension; on, permessage-deflate
    without context takeover."""

    def __init__(self, app: Any, config: Any, context: Any, task_group: Any, *args: Any) -> None:
        # The stream only spawns into its task group; it never enters or exits it.
        super().__init__(app, config, context, _Advertising(task_group), *args)  # type: ignore[arg-type]

    _handle_uncompressed = _rebound(WSStream.handle, Handshake=_Uncompressed)
    _handle_deflate = _rebound(WSStream.handle, Handshake=_DeflateWithoutContext)

    async def handle(self, event: Any) -> None:
        try:
            if getattr(self.config, "websocket_compression", False):
                await self._handle_deflate(event)
            else:
                await self._handle_uncompressed(event)
        finally:
            if isinstance(event, StreamClosed):
                self._release_parser()

    def _release_parser(self) -> None:
        """wsproto's ``FrameProtocol`` keeps its parser as a generator whose frame
        holds the protocol: a reference cycle. A connection that ends with a close
        frame finishes the generator; one that is dropped leaves it suspended, so
        the protocol and its buffers wait for the cyclic collector, and a connection
        that outlived a middle collection has been frozen (``CollectorPacer``): never
        freed at all. Closing the generator when the stream closes breaks the cycle,
        and refcounting frees the rest."""
        protocol = getattr(getattr(self, "connection", None), "_proto", None)
        parser = getattr(protocol, "_parse_more", None)
        if parser is not None:
            parser.close()

    async def app_send(self, message: Any) -> None:
        if message is None or message["type"] != FRAMES_EXTENSION:
            await super().app_send(message)
            return
        if self.closed or self.state != ASGIWebsocketState.CONNECTED:
            return
        if self.connection.state != ConnectionState.OPEN:
            return
        if getattr(getattr(self.connection, "_proto", None), "extensions", None):
            for text in message["texts"]:
                await self._send_wsproto_event(TextMessage(data=text))
        else:
            await self.send(Data(stream_id=self.stream_id, data=message["bytes"]))


class CanopyH11Protocol(h11.H11Protocol):
    _create_stream = _rebound(h11.H11Protocol._create_stream, WSStream=CanopyWSStream)


class CanopyH2Protocol(h2.H2Protocol):
    _create_stream = _rebound(h2.H2Protocol._create_stream, WSStream=CanopyWSStream)

    async def _handle_events(self, events: list[h2_events.Event]) -> None:
        """Upstream's (Hypercorn 0.18.0), but for data on a stream that is closed
        already. An app may answer before the request's body has all arrived (413 to
        a body over the limit), and its stream is then gone while the client is still
        sending: upstream's lookup raised ``KeyError`` and took the connection down
        with every other stream on it, where it ignores the ``StreamEnded`` of such a
        stream. That data is dropped and its flow-control credit given back, or the
        client's window for the whole connection would shrink by it."""
        for event in events:
            if isinstance(event, h2_events.RequestReceived):
                if self.context.terminated.is_set():
                    self.connection.reset_stream(event.stream_id)
                    self.connection.update_settings(
                        {h2_settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0}
                    )
                else:
                    await self._create_stream(event)
                    await self.send(Updated(idle=False))

                if self.keep_alive_requests > self.config.keep_alive_max_requests:
                    self.connection.close_connection()
            elif isinstance(event, h2_events.DataReceived):
                stream = self.streams.get(event.stream_id)  # upstream: self.streams[...]
                if stream is not None:
                    await stream.handle(Body(stream_id=event.stream_id, data=event.data))
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
            elif isinstance(event, h2_events.StreamEnded):
                try:
                    await self.streams[event.stream_id].handle(EndBody(stream_id=event.stream_id))
                except KeyError:
                    # Response sent before full request received,
                    # nothing to do already closed.
                    pass
            elif isinstance(event, h2_events.StreamReset):
                await self._close_stream(event.stream_id)
                await self._window_updated(event.stream_id)
            elif isinstance(event, h2_events.WindowUpdated):
                await self._window_updated(event.stream_id)
            elif isinstance(event, h2_events.PriorityUpdated):
                await self._priority_updated(event)
            elif isinstance(event, h2_events.RemoteSettingsChanged):
                if h2_settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                    await self._window_updated(None)
            elif isinstance(event, h2_events.ConnectionTerminated):
                await self.send(Closed())
        await self._flush()


class CanopyProtocolWrapper(ProtocolWrapper):
    """Hypercorn's wrapper (HTTP/1.1, upgraded to HTTP/2 when asked), making the two
    protocols above."""

    __init__ = _rebound(
        ProtocolWrapper.__init__, H11Protocol=CanopyH11Protocol, H2Protocol=CanopyH2Protocol
    )
    handle = _rebound(ProtocolWrapper.handle, H2Protocol=CanopyH2Protocol)
