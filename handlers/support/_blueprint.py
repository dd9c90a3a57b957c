"""The support API over :class:`SupportService` (docs/API.md, "Support")."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint
from quart_schema import document_response

from .._errors import ApiError, store_unavailable
from .._requests import header, int_arg, verified_grants
from .._schema import ErrorBody, body
from ..grants import Forbidden, Grants
from ._model import MAX_TEXT, Agent, ConversationState, InvalidField
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
        raise store_unavailable("support", exc) from None


def _key() -> str | None:
    key = header(b"idempotency-key")
    if key is not None and not 0 < len(key) <= 200:
        raise ApiError(
            422, "invalid_field", "Idempotency-Key: 1-200 characters", field="Idempotency-Key"
        )
    return key


ID = r"^[A-Za-z0-9_\-@]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True)


class OpenConversation(_Strict):
    customer: str = Field(pattern=ID, description="the customer's id")
    subject: str = Field("", max_length=200)


class SendMessage(_Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT)


class PutAgent(_Strict):
    available: bool
    name: str | None = Field(None, min_length=1, max_length=100)
    capacity: int = Field(3, ge=1, le=MAX_CAPACITY, description="open conversations at once")


class ConversationOut(BaseModel):
    id: str
    customer: str
    subject: str
    state: ConversationState
    agent: str | None
    topic: str
    typing_topic: str
    created_at: float
    assigned_at: float | None
    closed_at: float | None


class Opened(BaseModel):
    conversation: ConversationOut
    token: str


class MessageOut(BaseModel):
    kind: str
    conversation: str
    seq: int
    sender: str = Field(alias="from")
    role: str
    text: str
    at: float


class Transcript(BaseModel):
    conversation: str
    messages: list[MessageOut]


class AgentOut(BaseModel):
    id: str
    name: str
    capacity: int
    available: bool
    topic: str


class AgentListed(AgentOut):
    connected: bool


class Agents(BaseModel):
    agents: list[AgentListed]


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
        return verified_grants(service.issuer, "a conversation token is required (Bearer)")

    @blueprint.post("/conversations")
    @body(OpenConversation)
    @document_response(Opened, 201)
    @document_response(ErrorBody, 422)
    async def open_conversation(data: OpenConversation) -> Any:
        """Open a conversation; its token lets the customer in (and only them)."""
        conversation, created, token = await _call(
            service.open_conversation(data.customer, data.subject, _key())
        )
        headers = {"Location": f"/support/conversations/{conversation.id}"}
        return (
            {"conversation": conversation.to_dict(), "token": token},
            (201 if created else 200),
            headers,
        )

    @blueprint.get("/conversations/<conversation_id>")
    @document_response(ConversationOut, 200)
    @document_response(ErrorBody, 404)
    async def get_conversation(conversation_id: str) -> Any:
        """One conversation, for its participants."""
        conversation = await _call(service.conversation(conversation_id, grants()))
        return conversation.to_dict()

    @blueprint.post("/conversations/<conversation_id>/messages")
    @body(SendMessage, auth=grants)
    @document_response(MessageOut, 201)
    @document_response(ErrorBody, 409)
    async def send(conversation_id: str, data: SendMessage, who: Grants) -> Any:
        """Send: kept in the transcript, then published on the conversation's topic."""
        message, created = await _call(service.send(conversation_id, who, data.text, _key()))
        return message.to_dict(), 201 if created else 200

    @blueprint.get("/conversations/<conversation_id>/transcript")
    @document_response(Transcript, 200)
    async def transcript(conversation_id: str) -> Any:
        """The messages after ``after`` (a ``seq``), in order."""
        after = int_arg("after", 0, 0, 2**62)
        limit = int_arg("limit", 100, 1, MAX_TRANSCRIPT)
        messages = await _call(service.transcript(conversation_id, grants(), after, limit))
        return {"conversation": conversation_id, "messages": [m.to_dict() for m in messages]}

    @blueprint.post("/conversations/<conversation_id>/close")
    @document_response(ConversationOut, 200)
    async def close(conversation_id: str) -> Any:
        """Close it; closing again gives the same answer."""
        conversation = await _call(service.close(conversation_id, grants()))
        return conversation.to_dict()

    def agent_grants() -> Grants:
        who = grants()
        if not who.client.startswith("agent:"):
            raise ApiError(403, "forbidden", "an agent's token is required")
        return who

    @blueprint.put("/agents/<agent_id>")
    @body(PutAgent, auth=agent_grants)
    @document_response(AgentOut, 200)
    @document_response(ErrorBody, 403)
    async def put_agent(agent_id: str, data: PutAgent, who: Grants) -> Any:
        """An agent marks themselves available or away (with their own token)."""
        if who.client != f"agent:{agent_id}":
            raise ApiError(403, "forbidden", f"this token does not name agent {agent_id}")
        agent = Agent(agent_id, data.name or agent_id, data.capacity, data.available)
        await _call(service.set_agent(agent))
        return agent.to_dict()

    @blueprint.get("/agents")
    @document_response(Agents, 200)
    async def agents() -> Any:
        """Agents, and whether each is connected (for agents)."""
        agent_grants()
        return {"agents": service.agents()}

    return blueprint
