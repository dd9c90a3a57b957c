"""Customer-service chat: a pure-Trio service (:class:`SupportService`, usable from any
``trio.run`` program with a hub) and a thin Quart blueprint over it.

Customers open conversations; agents mark themselves available and keep a WebSocket
subscribed to their topic; the service's assigner gives waiting conversations to
connected agents in order, and gives them back to the queue when an agent is gone.
Messages are kept in a transcript and published on ``support.{conversation}``
(history, presence, resume), typing indicators on ``typing.support.{conversation}``.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from ._assign import AgentLoad, plan_assignments
from ._model import (
    MAX_TEXT,
    Agent,
    ChatMessage,
    Conversation,
    ConversationState,
    InvalidField,
    agent_topic,
    check_id,
    check_text,
    typing_topic,
)
from ._service import ConversationNotFound, SupportService
from ._store import ConversationClosed, SupportStore, SupportStoreError

if TYPE_CHECKING:  # create_blueprint imports Quart: only when asked for
    from ._blueprint import create_blueprint

__all__ = [
    "MAX_TEXT",
    "Agent",
    "AgentLoad",
    "ChatMessage",
    "Conversation",
    "ConversationClosed",
    "ConversationNotFound",
    "ConversationState",
    "InvalidField",
    "SupportService",
    "SupportStore",
    "SupportStoreError",
    "agent_topic",
    "check_id",
    "check_text",
    "create_blueprint",
    "plan_assignments",
    "typing_topic",
]

__getattr__, __dir__ = lazy_attributes(__name__, {"create_blueprint": "._blueprint"})
