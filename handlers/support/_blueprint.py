"""The support API over :class:`SupportService` (docs/API.md, "Support")."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from quart import Blueprint, request

from .._errors import ApiError
from .._requests import bearer_token, int_arg, json_object
from ..topics import Forbidden, Grants, InvalidToken
from ._model import Agent, InvalidField, check_id, check_text
from ._service import ConversationNotFound, SupportService
from ._store import ConversationClosed, SupportStoreError

__all__ = ["create_blueprint"]

T = TypeVar("T")
MAX_TRANSCRIPT = 1000
MAX_CAPACITY = 100


async def _call(call: Awaitable[T]) -> T:
    """The service's errors as the API's."""
    try:
        return await call
    except ConversationNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except Forbidden as exc:
        raise ApiError(403, "forbidden", str(exc)) from None
    except ConversationClosed as exc:
        raise ApiError(409, "conversation_closed", str(exc)) from None
    except InvalidField as exc:
        raise ApiError(422, "invalid_field", str(exc), field=exc.field) from None
    except SupportStoreError as exc:
        raise ApiError(503, "store_unavailable", f"the support store failed: {exc}") from None


def _key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 200:
        raise ApiError(
            422, "invalid_field", "Idempotency-Key: 1-200 characters", field="Idempotency-Key"
        )
    return key


def _agent(agent_id: str, body: dict[str, Any]) -> Agent:
    available = body.get("available")
    if not isinstance(available, bool):
        raise InvalidField("available", "true or false")
    capacity = body.get("capacity", 3)
    if not isinstance(capacity, int) or isinstance(capacity, bool):
        raise InvalidField("capacity", f"a whole number 1-{MAX_CAPACITY}")
    if not 0 < capacity <= MAX_CAPACITY:
        raise InvalidField("capacity", f"a whole number 1-{MAX_CAPACITY}")
    name = body.get("name", agent_id)
    if not isinstance(name, str) or not 0 < len(name) <= 100:
        raise InvalidField("name", "1-100 characters")
    return Agent(check_id(agent_id, "agent"), name, capacity, available)


def create_blueprint(service: SupportService) -> Blueprint:
    blueprint = Blueprint("support", __name__, url_prefix="/support")

    @blueprint.before_request
    async def _configured() -> None:
        if not service.configured:
            raise ApiError(
                503,
                "not_configured",
                "support chat needs CANOPY_TOPICS_SECRET: its tokens guard each conversation",
            )

    def grants() -> Grants:
        token = bearer_token(request.headers, request.args)
        if token is None:
            raise ApiError(401, "invalid_token", "a conversation token is required (Bearer)")
        try:
            return service.issuer.verify(token)
        except InvalidToken as exc:
            raise ApiError(401, "invalid_token", str(exc)) from None

    @blueprint.post("/conversations")
    async def open_conversation() -> Any:
        body = await json_object()
        key = _key()

        async def open_() -> Any:
            customer = check_id(body.get("customer"), "customer")
            subject = body.get("subject", "")
            if not isinstance(subject, str) or len(subject) > 200:
                raise InvalidField("subject", "at most 200 characters")
            return await service.open_conversation(customer, subject, key)

        conversation, created, token = await _call(open_())
        headers = {"Location": f"/support/conversations/{conversation.id}"}
        return (
            {"conversation": conversation.to_dict(), "token": token},
            (201 if created else 200),
            headers,
        )

    @blueprint.get("/conversations/<conversation_id>")
    async def get_conversation(conversation_id: str) -> Any:
        conversation = await _call(service.conversation(conversation_id, grants()))
        return conversation.to_dict()

    @blueprint.post("/conversations/<conversation_id>/messages")
    async def send(conversation_id: str) -> Any:
        who, body, key = grants(), await json_object(), _key()

        async def send_() -> Any:
            return await service.send(conversation_id, who, check_text(body.get("text")), key)

        message, created = await _call(send_())
        return message.to_dict(), 201 if created else 200

    @blueprint.get("/conversations/<conversation_id>/transcript")
    async def transcript(conversation_id: str) -> Any:
        after = int_arg("after", 0, 0, 2**62)
        limit = int_arg("limit", 100, 1, MAX_TRANSCRIPT)
        messages = await _call(service.transcript(conversation_id, grants(), after, limit))
        return {"conversation": conversation_id, "messages": [m.to_dict() for m in messages]}

    @blueprint.post("/conversations/<conversation_id>/close")
    async def close(conversation_id: str) -> Any:
        conversation = await _call(service.close(conversation_id, grants()))
        return conversation.to_dict()

    def agent_grants() -> Grants:
        who = grants()
        if not who.client.startswith("agent:"):
            raise ApiError(403, "forbidden", "an agent's token is required")
        return who

    @blueprint.put("/agents/<agent_id>")
    async def put_agent(agent_id: str) -> Any:
        if agent_grants().client != f"agent:{agent_id}":
            raise ApiError(403, "forbidden", f"this token does not name agent {agent_id}")
        body = await json_object()

        async def put() -> Agent:
            agent = _agent(agent_id, body)
            await service.set_agent(agent)
            return agent

        return (await _call(put())).to_dict()

    @blueprint.get("/agents")
    async def agents() -> Any:
        agent_grants()
        return {"agents": service.agents()}

    return blueprint
