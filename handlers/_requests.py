"""Reading what an HTTP request carries, with the same 4xx for the same mistake everywhere."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

from quart import request

from canopy.nurseries import strict_json_loads

from ._errors import ApiError
from ._headers import bearer_token_of, first_header
from .grants import Grants, InvalidToken, TokenIssuer

__all__ = [
    "bad_parameter",
    "bearer_token",
    "caller_grants",
    "header",
    "int_arg",
    "json_body",
    "json_object",
    "read_json",
    "require",
    "verified_grants",
]


T = TypeVar("T", int, None)


def _current() -> Any:
    """The request behind Quart's ``request`` proxy. Each attribute read through the
    proxy first fails on the proxy itself (formatting an AttributeError) before the
    proxy forwards it; a helper that reads several attributes takes the object once."""
    return request._get_current_object()  # type: ignore[attr-defined]


async def read_json() -> Any:
    """The body as JSON, whatever its Content-Type, or 400 ``invalid_json``.

    Not ``request.get_json(force=True, silent=True)``: that decodes the bytes as
    UTF-8 before its silent parse, so a body that is not UTF-8 raised (a 500). Also
    refused: ``NaN`` and ``Infinity`` (Python's json takes them; JSON has neither),
    and nesting too deep to parse. A body over the limit is still 413.
    """
    data = cast(bytes, await _current().get_data(as_text=False))
    try:
        return strict_json_loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the body must be JSON (UTF-8)") from None


def header(name: bytes) -> str | None:
    """The current request's first ``name`` header (see ``first_header``)."""
    value = first_header(_current().scope["headers"], name)
    return None if value is None else value.decode("latin-1")


def bearer_token(current: Any) -> str | None:
    """The token of a request or WebSocket (the object, not Quart's proxy): see
    ``bearer_token_of``."""
    scope = current.scope
    return bearer_token_of(scope["headers"], scope.get("query_string", b""))


def verified_grants(issuer: TokenIssuer, missing: str) -> Grants:
    """What the request's token grants, where a token is required: 401
    ``invalid_token`` saying ``missing`` without one, or why it is refused."""
    token = bearer_token(_current())
    if token is None:
        raise ApiError(401, "invalid_token", missing)
    try:
        return issuer.verify(token)
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", str(exc)) from None


def caller_grants(issuer: TokenIssuer) -> Grants:
    """What the caller may do: its token's grants, or the anonymous ones without a
    token; 401 ``invalid_token`` for a token that does not verify. What anyone may do
    a token's holder may do too: the anonymous operations are added to its own."""
    token = bearer_token(_current())
    if token is None:
        return issuer.operator
    try:
        grants = issuer.verify(token)
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", str(exc)) from None
    if issuer.anonymous_operations:
        operations = grants.operations + issuer.anonymous_operations
        grants = dataclasses.replace(grants, operations=operations)
    return grants


def require(grants: Grants, operation: str) -> None:
    """An operator's ``operation`` (``jobs:admin``), if ``grants`` allow it: else 401
    ``invalid_token`` for a caller without a token, 403 ``forbidden`` for one whose
    token does not grant it."""
    if grants.may(operation):
        return
    if grants.anonymous:
        raise ApiError(401, "invalid_token", f"a token that grants {operation} is required")
    raise ApiError(403, "forbidden", f"the token does not grant {operation}")


async def json_body() -> Any:
    """The body as any JSON value but ``null``, or 400."""
    body = await read_json()
    if body is None:
        raise ApiError(400, "invalid_json", "the body must be JSON")
    return body


async def json_object() -> dict[str, Any]:
    """The body as a JSON object, or 400."""
    body = await read_json()
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


def int_arg(name: str, default: T, low: int, high: int) -> int | T:
    """A whole-number query argument in [low, high], ``default`` when it is absent, or
    422 ``invalid_parameter`` naming it. Every route's integers are read here, so the
    same mistake gets the same answer everywhere."""
    raw = _current().args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise bad_parameter(name, f"a whole number {low}-{high}")
    return int(raw)


def bad_parameter(name: str, expected: str) -> ApiError:
    """422 ``invalid_parameter``: the query argument ``name`` is not what ``expected`` says."""
    return ApiError(422, "invalid_parameter", f"{name}: {expected}", field=name)
