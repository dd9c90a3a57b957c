"""Support chat as data: conversations, agents, messages, and the checks on what clients send.

A conversation is ``waiting`` until the assigner gives it to an agent (``assigned``),
goes back to ``waiting`` when that agent is gone for good, and ends ``closed``.
Identifiers become parts of topic names (``support.{conversation}``,
``support.agents.{agent}``), so they use the topic segment alphabet.
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass, field
from typing import Any

from canopy.nurseries import random_hex

from .._invalid import InvalidInput

__all__ = [
    "MAX_TEXT",
    "Agent",
    "ChatMessage",
    "Conversation",
    "ConversationState",
    "InvalidField",
    "agent_topic",
    "check_id",
    "check_text",
    "typing_topic",
]

MAX_TEXT = 4000
_ID = re.compile(r"[A-Za-z0-9_\-@]{1,64}")


class InvalidField(InvalidInput):
    """A support request field that is refused."""


class ConversationState(enum.StrEnum):
    WAITING = "waiting"
    ASSIGNED = "assigned"
    CLOSED = "closed"


def check_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidField(field, "1-64 letters, digits, '_', '-' or '@'")
    return value


def check_text(value: Any, field: str = "text") -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(field, "a non-empty string")
    if len(value) > MAX_TEXT:
        raise InvalidField(field, f"at most {MAX_TEXT} characters")
    return value


def agent_topic(agent: str) -> str:
    """Where an agent hears of assignments; its presence there is the agent's connection."""
    return f"support.agents.{agent}"


def typing_topic(conversation: str) -> str:
    """Typing indicators: a topic of their own, conflated (``typing.*`` is ``latest``)."""
    return f"typing.support.{conversation}"


@dataclass
class Conversation:
    customer: str
    subject: str = ""
    id: str = field(default_factory=lambda: f"c-{random_hex(8)}")
    state: ConversationState = ConversationState.WAITING
    agent: str | None = None
    created_at: float = field(default_factory=time.time)
    assigned_at: float | None = None
    closed_at: float | None = None

    @property
    def topic(self) -> str:
        return f"support.{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer": self.customer,
            "subject": self.subject,
            "state": self.state.value,
            "agent": self.agent,
            "topic": self.topic,
            "typing_topic": typing_topic(self.id),
            "created_at": self.created_at,
            "assigned_at": self.assigned_at,
            "closed_at": self.closed_at,
        }


@dataclass
class Agent:
    id: str
    name: str = ""
    capacity: int = 3
    available: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "capacity": self.capacity,
            "available": self.available,
            "topic": agent_topic(self.id),
        }


@dataclass(frozen=True)
class ChatMessage:
    conversation: str
    seq: int  # 1, 2, 3, ... within the conversation: the transcript's order
    sender: str
    role: str  # "customer", "agent" or "system"
    text: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "message",
            "conversation": self.conversation,
            "seq": self.seq,
            "from": self.sender,
            "role": self.role,
            "text": self.text,
            "at": self.at,
        }
