"""Reading an ASGI scope's raw headers and query string."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qs

__all__ = ["bearer_token_of", "first_header"]


def first_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of the first ``name`` header (lower-case bytes, as ASGI spells it).

    For the hot path's optional headers (a request id, an idempotency key, the body's
    length): werkzeug's ``Headers.get`` builds a ``KeyError`` for every absent header,
    which is what most requests send.
    """
    for key, value in headers:
        if key == name:
            return value
    return None


def bearer_token_of(headers: Iterable[tuple[bytes, bytes]], query_string: bytes) -> str | None:
    """``Authorization: Bearer ...``, else ``?token=`` (for clients that cannot set
    headers, as a browser's WebSocket cannot), of a request or a WebSocket handshake.

    Read from the raw headers: every enqueue asks, and werkzeug's ``Headers.get``
    builds an exception for an absent header; the query string is parsed only when
    there is one."""
    raw = first_header(headers, b"authorization")
    if raw is not None:
        value = raw.decode("latin-1")
        if value.lower().startswith("bearer "):
            return value[7:].strip() or None
    if query_string:
        tokens = parse_qs(query_string.decode("latin-1")).get("token")
        return tokens[0] if tokens else None
    return None
