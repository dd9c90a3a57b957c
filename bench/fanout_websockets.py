"""Baseline for bench/fanout.py: the ``websockets`` library's own ``broadcast()``.

Usage: ``python fanout_websockets.py PORT [deflate]``; without ``deflate`` it
negotiates no compression. Same behaviour as fanout_starlette.py: subscribers are
sent "ready" once registered, and a frame from any connection goes to every
subscriber, through ``broadcast()``, which writes to each connection without
waiting for it (the library's documented way to fan out, and the strongest Python
peer we know of).
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

subscribers: set[ServerConnection] = set()


async def handler(websocket: ServerConnection) -> None:
    publisher = "role=publisher" in (websocket.request.path if websocket.request else "")
    if not publisher:
        subscribers.add(websocket)
    try:
        await websocket.send('{"type":"ready"}')
        async for message in websocket:
            broadcast(subscribers, message)
    finally:
        subscribers.discard(websocket)


async def main(port: int, compression: str | None) -> None:
    async with serve(handler, "127.0.0.1", port, compression=compression) as server:
        await server.serve_forever()


if __name__ == "__main__":
    # ``deflate`` (the library's default) for the idle memory with a browser's offer.
    asyncio.run(main(int(sys.argv[1]), "deflate" if sys.argv[2:] == ["deflate"] else None))
