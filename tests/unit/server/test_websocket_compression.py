"""permessage-deflate is Canopy's choice, not the client's: off by default (a browser
offers it on every connection, and upstream accepted it with a compressor and a
decompressor kept per connection), and when ``ws_compression`` is on, negotiated
without context takeover, so an idle connection holds no zlib state."""

from __future__ import annotations

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from canopy.showcase import create_app
from canopy.testing import serve_app

MESSAGE = '{"text": "' + "compressible " * 200 + '"}'


async def _echo_once(stream: trio.SocketStream) -> tuple[AcceptConnection, str, int]:
    """Open /demo/echo offering permessage-deflate as a browser does, send one text,
    and return the handshake's answer, the echo, and the bytes it took on the wire."""
    client = WSConnection(ConnectionType.CLIENT)
    offer = PerMessageDeflate(client_max_window_bits=15, server_max_window_bits=15)
    await stream.send_all(
        client.send(Request(host="127.0.0.1", target="/demo/echo", extensions=[offer]))
    )
    accepted: AcceptConnection | None = None
    texts: list[str] = []
    wire = 0
    while True:
        data = await stream.receive_some(65536)
        assert data, "the server closed the connection"
        if accepted is not None:
            wire += len(data)
        client.receive_data(data)
        for event in client.events():
            if isinstance(event, AcceptConnection):
                accepted = event
                await stream.send_all(client.send(TextMessage(data=MESSAGE)))
            elif isinstance(event, TextMessage):
                texts.append(event.data)
                if event.message_finished:
                    await stream.send_all(client.send(CloseConnection(code=1000)))
                    return accepted, "".join(texts), wire  # type: ignore[return-value]
            else:
                pytest.fail(f"unexpected {event!r}")


async def test_off_by_default_even_when_offered() -> None:
    async with serve_app(create_app()) as served:
        async with await served.connect() as stream:
            with trio.fail_after(5):
                accepted, echoed, wire = await _echo_once(stream)
    assert accepted.extensions == []
    assert echoed == MESSAGE
    assert wire > len(MESSAGE)  # sent as it is


async def test_on_it_is_negotiated_without_context_takeover() -> None:
    async with serve_app(create_app(), ws_compression=True) as served:
        async with await served.connect() as stream:
            with trio.fail_after(5):
                accepted, echoed, wire = await _echo_once(stream)
    [deflate] = accepted.extensions
    assert isinstance(deflate, PerMessageDeflate)
    assert deflate.client_no_context_takeover and deflate.server_no_context_takeover
    assert echoed == MESSAGE
    assert wire < len(MESSAGE) // 4  # compressed on the way back
