"""Reading one header from an ASGI scope's raw list."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["first_header"]


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
