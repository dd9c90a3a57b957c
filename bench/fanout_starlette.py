"""Baseline for bench/fanout.py: Starlette on Uvicorn with a broadcast loop over its WebSockets.

A subscriber connects to /ws and is sent "ready" once registered; a frame received
from any connection is broadcast to every subscriber, one ``send_text`` at a time.
"""

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

subscribers: set[WebSocket] = set()


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    publisher = websocket.query_params.get("role") == "publisher"
    if not publisher:
        subscribers.add(websocket)
    await websocket.send_text('{"type":"ready"}')
    try:
        while True:
            text = await websocket.receive_text()
            for subscriber in list(subscribers):
                try:
                    await subscriber.send_text(text)
                except Exception:
                    subscribers.discard(subscriber)
    except WebSocketDisconnect:
        pass
    finally:
        subscribers.discard(websocket)


app = Starlette(routes=[WebSocketRoute("/ws", ws)])
