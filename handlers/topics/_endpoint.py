"""The ``/ws`` endpoint over any socket: who the client is, then a :class:`Session`.

Both ways a WebSocket reaches the topics share this: Quart's route (under any ASGI
server) and the session Canopy's transport runs itself, with no ASGI app call
(``canopy.server.transport``). Pure Trio: the caller reads the token from the
handshake (``canopy.handlers.bearer_token_of``).
"""

from __future__ import annotations

from canopy.nurseries.fanout import SubscriberGone

from ..grants import InvalidToken
from ._protocol import error_frame
from ._service import TopicsService
from ._session import Session, Socket

__all__ = ["serve_socket"]


async def serve_socket(service: TopicsService, token: str | None, socket: Socket) -> None:
    """Run the topics protocol on ``socket`` until the client leaves or the session
    ends. A token that does not verify connects anonymously, told so in an error
    frame, so that a client with an expired token still gets what anyone may see."""
    try:
        grants, problem = service.grants(token), None
    except InvalidToken as exc:
        grants, problem = service.issuer.anonymous(), str(exc)
    try:
        if problem is not None:
            notice = f"{problem}; connected anonymously"
            await socket.send([error_frame("invalid_token", notice)])
        await Session(service, socket, grants).run()
    except SubscriberGone:
        pass  # the client left while we answered it: nobody to tell
