"""Canopy's overrides of Hypercorn (server/transport/_hypercorn.py) hold for the Hypercorn
installed: the upstream code they run or rely on is the code they were written against,
they reach only Canopy's own connections, and they do what they are for."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from hypercorn.protocol import h2, h11
from hypercorn.protocol.ws_stream import WSStream
from trio_websocket import wrap_client_stream

import canopy
from canopy.handlers.topics import FRAMES_EXTENSION
from canopy.server.transport._hypercorn import _rebound
from canopy.testing import serve_app
from tests.upstream import digest, resolve

# Hypercorn 0.18.0's (and wsproto's) source of each function the overrides run as their
# own or rely on (see the module's docstring); a new release that changes one must be
# read first.
UPSTREAM = {
    "hypercorn.protocol.h11.H11Protocol.__init__": "c7c989fd6a352626",
    "hypercorn.protocol.h11.H11Protocol._create_stream": "a2338a57ab343908",
    "hypercorn.protocol.h11.H11Protocol._handle_events": "bd4a76b2837e8722",
    "hypercorn.protocol.h11.H11Protocol._maybe_recycle": "3ac53f52bc4e65de",
    "hypercorn.protocol.h11.H11Protocol.stream_send": "56a36254a368d71a",
    "hypercorn.protocol.h2.H2Protocol._create_stream": "91eb123ddf247ede",
    "hypercorn.protocol.h2.H2Protocol._handle_events": "3378aef0a2348f0d",
    "hypercorn.protocol.ProtocolWrapper.__init__": "df25e181b9e2e64d",
    "hypercorn.protocol.ProtocolWrapper.handle": "b03e2962872c85e8",
    "hypercorn.protocol.ws_stream.WSStream.__init__": "3534d3ebe8f7a1a4",
    "hypercorn.protocol.ws_stream.WSStream.app_send": "a6dd1160bfc416e7",
    "hypercorn.protocol.ws_stream.WSStream._send_wsproto_event": "3a4df3f0d2dfd314",
    "hypercorn.protocol.ws_stream.WSStream.handle": "743209f49012b8c7",
    "hypercorn.protocol.ws_stream.Handshake.__init__": "2340bc6044f1de62",
    "hypercorn.protocol.ws_stream.Handshake.accept": "e163533bf7919793",
    # wsproto 1.3.2's: the parser generator that CanopyWSStream._release_parser closes.
    "wsproto.frame_protocol.FrameProtocol.__init__": "037e847db237d081",
    "wsproto.frame_protocol.FrameProtocol._parse_more_gen": "f3406393dd7097ce",
    "wsproto.connection.Connection.__init__": "2aa4c1439d32bd59",
}


@pytest.mark.parametrize("dotted", sorted(UPSTREAM))
def test_the_upstream_code_is_what_the_overrides_were_written_against(dotted: str) -> None:
    assert digest(resolve(dotted)) == UPSTREAM[dotted], (
        f"Hypercorn changed {dotted}: read it against server/transport/_hypercorn.py, "
        "then pin its new source here"
    )


def test_a_rebound_function_refuses_a_global_it_does_not_read() -> None:
    with pytest.raises(TypeError, match="no longer reads"):
        _rebound(h11.H11Protocol._create_stream, NoSuchName=object)


def _probe_app() -> canopy.App:
    app = canopy.App("probe")

    @app.websocket("/extensions")
    async def extensions() -> None:
        from quart import websocket

        await websocket.send(json.dumps(sorted(websocket.scope.get("extensions", {}))))

    return app


async def test_canopys_connections_offer_frames_and_hypercorns_modules_stay_as_they_are() -> None:
    async with serve_app(_probe_app()) as served:
        stream = await served.connect()
        async with stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, "127.0.0.1", "/extensions")
            with trio.fail_after(5):
                offered = json.loads(await ws.get_message())
            await ws.aclose()
    assert FRAMES_EXTENSION in offered
    # Nothing patched process-wide: Hypercorn's own worker keeps its classes.
    assert h11.WSStream is WSStream and h2.WSStream is WSStream


async def test_a_body_over_the_limit_on_http2_gets_its_413_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The app answers 413 while the client is still sending; the rest of the body
    arrives for a stream that is closed. Upstream raised KeyError there and ended the
    connection, so the client saw a broken pipe instead of the answer."""
    app = canopy.App("h2")
    app.include(canopy.capabilities.jobs_api)
    async with serve_app(app, max_body_size=1024) as served:
        async with httpx.AsyncClient(
            http1=False, http2=True, base_url=served.base_url, timeout=10
        ) as client:
            refused = await client.post("/jobs", content=b"x" * 200_000)
            again = await client.get("/healthz")
    assert (refused.http_version, refused.status_code) == ("HTTP/2", 413)
    assert refused.json()["error"] == "body_too_large"
    assert (again.http_version, again.status_code) == ("HTTP/2", 200)
    assert "connection failed" not in caplog.text
