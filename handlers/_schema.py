"""Request and response schemas: declared once, in the OpenAPI document and in validation.

``@body(Model)`` documents the request body (quart-schema's ``document_request``) and
validates it with the same pydantic model, the way the rest of the API answers: a
body that is not JSON is 400 ``invalid_json``, one the model refuses is 422
``invalid_field`` naming the first field (``items[0].quantity``). The view gets the
model as ``data``. (quart-schema's own ``validate_request`` reads the body only when
it is sent as ``application/json``, so ``curl -d`` would get a 422, and it answers
malformed JSON with a plain 400.)
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart_schema import document_request

from ._errors import ApiError
from ._invalid import field_of
from ._requests import json_body

__all__ = ["ErrorBody", "body", "field_of"]

M = TypeVar("M", bound=BaseModel)


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    error: str
    message: str
    field: str | None = None


def body(
    model: type[M], *, auth: Callable[[], Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``auth``, if given, runs before the body is read and its result reaches the view
    as ``who``: a caller without a valid token hears 401 (or 403, or 503 when tokens
    are not configured), not what was wrong with a body it may not send at all."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        async def validated(*args: Any, **kwargs: Any) -> Any:
            if auth is not None:
                kwargs["who"] = auth()
            try:
                data = model.model_validate(await json_body())
            except ValidationError as exc:
                field, problem = field_of(exc)
                raise ApiError(422, "invalid_field", f"{field}: {problem}", field=field) from None
            return await view(*args, data=data, **kwargs)

        return document_request(model)(validated)

    return decorator
