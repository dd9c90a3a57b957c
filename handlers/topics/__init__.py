"""Topics: publish once, deliver to many, over WebSocket (``/ws``) and HTTP (``/topics``).

A pure-Trio :class:`TopicsService` (the hub plus grants) with a protocol
:class:`Session` that runs over any :class:`Socket`, and a thin Quart blueprint.
The wire protocol is documented in docs/PROTOCOL.md.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from ..grants import Grants, InvalidToken, TokenIssuer, covers
from ._endpoint import serve_socket
from ._protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_BIG,
    FRAMES_EXTENSION,
    OPERATIONS,
    ProtocolError,
    encode_frames,
)
from ._service import Forbidden, TopicsService
from ._session import DirectSocket, Session, Socket

if TYPE_CHECKING:  # create_blueprint imports Quart: only when asked for
    from ._blueprint import create_blueprint

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_POLICY",
    "CLOSE_SLOW_CONSUMER",
    "CLOSE_TOO_BIG",
    "FRAMES_EXTENSION",
    "OPERATIONS",
    "DirectSocket",
    "Forbidden",
    "Grants",
    "InvalidToken",
    "ProtocolError",
    "Session",
    "Socket",
    "TokenIssuer",
    "TopicsService",
    "covers",
    "create_blueprint",
    "encode_frames",
    "serve_socket",
]

__getattr__, __dir__ = lazy_attributes(__name__, {"create_blueprint": "._blueprint"})
