"""Baseline for bench/fanout.py: a bare trio-websocket server, the Trio ceiling.

Same behaviour as fanout_starlette.py: subscribers are sent "ready" once registered,
and a frame from any connection is sent to every subscriber in turn.
"""

from __future__ import annotations

import sys

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

subscribers: set[WebSocketConnection] = set()


async def handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    publisher = "role=publisher" in request.path
    if not publisher:
        subscribers.add(ws)
    try:
        await ws.send_message('{"type":"ready"}')
        while True:
            text = await ws.get_message()
            for subscriber in list(subscribers):
                try:
                    await subscriber.send_message(text)
                except ConnectionClosed:
                    subscribers.discard(subscriber)
    except ConnectionClosed:
        pass
    finally:
        subscribers.discard(ws)


async def main(port: int) -> None:
    await serve_websocket(handler, "127.0.0.1", port, ssl_context=None)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
