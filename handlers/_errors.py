"""Turning request problems into JSON error responses, in one place.

Handlers raise :class:`ApiError` (or a werkzeug ``HTTPException``); the server's
error handlers render both as ``{"error": code, "message": text}`` with the status.
"""

from __future__ import annotations

from typing import Any

from werkzeug.exceptions import HTTPException

__all__ = ["ApiError", "error_body", "store_unavailable"]


class ApiError(HTTPException):
    """A client-facing error with a machine-readable code and a human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(description=message)
        self.code = status
        self.error_code = code
        self.extra_headers = headers or {}
        self.details = details


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": code, "message": message, **details}


def store_unavailable(store: str, exc: Exception) -> ApiError:
    """503 for a store that failed (its database away, its disk full): nothing was
    done, and the client may try again in a second, when it may have recovered."""
    return ApiError(
        503, "store_unavailable", f"the {store} store failed: {exc}", headers={"Retry-After": "1"}
    )
