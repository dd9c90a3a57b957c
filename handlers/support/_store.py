"""Conversations, transcripts and agents in SQLite (``nurseries.SqliteDatabase``).

The invariants are in the schema and in single-statement updates: a message's place
in its transcript is (conversation, seq), unique, taken from the conversation's
``next_seq`` in the same transaction; an idempotency key names one conversation,
and one message within a conversation; a conversation is assigned only while it is
``waiting`` (``UPDATE ... WHERE state = 'waiting'``), so two assigners cannot both
take it, and a closed one takes no more messages.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import trio

from canopy.nurseries import SqliteDatabase

from ._model import Agent, ChatMessage, Conversation, ConversationState

__all__ = ["ConversationClosed", "SupportStore", "SupportStoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    subject TEXT NOT NULL,
    state TEXT NOT NULL,
    agent TEXT,
    idempotency_key TEXT UNIQUE,
    next_seq INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    assigned_at REAL,
    closed_at REAL
);
CREATE INDEX IF NOT EXISTS conversations_by_state ON conversations (state, created_at);
CREATE INDEX IF NOT EXISTS conversations_by_agent ON conversations (agent, state);
CREATE TABLE IF NOT EXISTS messages (
    conversation TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sender TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    idempotency_key TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (conversation, seq),
    UNIQUE (conversation, idempotency_key)
);
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    capacity INTEGER NOT NULL CHECK (capacity > 0),
    available INTEGER NOT NULL
);
"""


class SupportStoreError(Exception):
    """The database failed; nothing in the failed call was written."""


class ConversationClosed(Exception):
    pass


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        customer=row["customer"],
        subject=row["subject"],
        state=ConversationState(row["state"]),
        agent=row["agent"],
        created_at=row["created_at"],
        assigned_at=row["assigned_at"],
        closed_at=row["closed_at"],
    )


def _message(row: sqlite3.Row) -> ChatMessage:
    return ChatMessage(
        row["conversation"], row["seq"], row["sender"], row["role"], row["text"], row["at"]
    )


class SupportStore:
    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.db = SqliteDatabase(path, _SCHEMA, error=SupportStoreError, synchronous=synchronous)
        self._conn = self.db.connection

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.db.run(task_status=task_status)

    # -- conversations -------------------------------------------------------------------

    async def open(self, conversation: Conversation, key: str | None) -> tuple[Conversation, bool]:
        """Store a new conversation; with a used key, (the original, False)."""
        return await self.db.write(self._open, conversation, key)

    def _open(self, conversation: Conversation, key: str | None) -> tuple[Conversation, bool]:
        if key is not None:
            row = (
                self._conn()
                .execute("SELECT * FROM conversations WHERE idempotency_key = ?", (key,))
                .fetchone()
            )
            if row is not None:
                return _conversation(row), False
        self._conn().execute(
            "INSERT INTO conversations (id, customer, subject, state, idempotency_key, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                conversation.id, conversation.customer, conversation.subject,
                conversation.state.value, key, conversation.created_at,
            ),
        )  # fmt: skip
        return conversation, True

    async def get(self, conversation_id: str) -> Conversation | None:
        return await self.db.read(self._get, conversation_id)

    def _get(self, conversation_id: str) -> Conversation | None:
        row = (
            self._conn()
            .execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
            .fetchone()
        )
        return _conversation(row) if row else None

    async def waiting(self, limit: int) -> list[Conversation]:
        """The oldest waiting conversations first: the order they are served in."""
        return await self.db.read(self._waiting, limit)

    def _waiting(self, limit: int) -> list[Conversation]:
        rows = self._conn().execute(
            "SELECT * FROM conversations WHERE state = 'waiting' ORDER BY created_at LIMIT ?",
            (limit,),
        )
        return [_conversation(row) for row in rows]

    async def load(self) -> dict[str, int]:
        """Open conversations per agent."""
        return await self.db.read(self._load)

    def _load(self) -> dict[str, int]:
        rows = self._conn().execute(
            "SELECT agent, COUNT(*) FROM conversations WHERE state = 'assigned' GROUP BY agent"
        )
        return {agent: count for agent, count in rows}

    async def assign(self, pairs: list[tuple[str, str]]) -> list[Conversation]:
        """(conversation, agent) each, if still waiting: the ones that were assigned."""
        return await self.db.write(self._assign, pairs)

    def _assign(self, pairs: list[tuple[str, str]]) -> list[Conversation]:
        done = []
        now = time.time()
        for conversation_id, agent in pairs:
            changed = (
                self._conn()
                .execute(
                    "UPDATE conversations SET state = 'assigned', agent = ?, assigned_at = ? "
                    "WHERE id = ? AND state = 'waiting'",
                    (agent, now, conversation_id),
                )
                .rowcount
            )
            if changed and (conversation := self._get(conversation_id)) is not None:
                done.append(conversation)
        return done

    async def requeue(self, agent: str) -> list[Conversation]:
        """The agent's open conversations go back to waiting (in their original order,
        so ahead of newer ones)."""
        return await self.db.write(self._requeue, agent)

    def _requeue(self, agent: str) -> list[Conversation]:
        rows = (
            self._conn()
            .execute(
                "UPDATE conversations SET state = 'waiting', agent = NULL, assigned_at = NULL "
                "WHERE agent = ? AND state = 'assigned' RETURNING *",
                (agent,),
            )
            .fetchall()
        )
        return [_conversation(row) for row in rows]

    async def close(self, conversation_id: str) -> Conversation | None:
        """Closed now, or None if it already was (or does not exist)."""
        return await self.db.write(self._close, conversation_id)

    def _close(self, conversation_id: str) -> Conversation | None:
        changed = (
            self._conn()
            .execute(
                "UPDATE conversations SET state = 'closed', closed_at = ? "
                "WHERE id = ? AND state != 'closed'",
                (time.time(), conversation_id),
            )
            .rowcount
        )
        return self._get(conversation_id) if changed else None

    # -- transcripts -----------------------------------------------------------------

    async def append(
        self, conversation_id: str, sender: str, role: str, text: str, key: str | None
    ) -> tuple[ChatMessage, bool]:
        """Add to the transcript: (the message, whether it is new). A used key gives
        back the original; a closed conversation raises ConversationClosed."""
        return await self.db.write(self._append, conversation_id, sender, role, text, key)

    def _append(
        self, conversation_id: str, sender: str, role: str, text: str, key: str | None
    ) -> tuple[ChatMessage, bool]:
        conn = self._conn()
        if key is not None:
            row = conn.execute(
                "SELECT * FROM messages WHERE conversation = ? AND idempotency_key = ?",
                (conversation_id, key),
            ).fetchone()
            if row is not None:
                return _message(row), False
        row = conn.execute(
            "UPDATE conversations SET next_seq = next_seq + 1 "
            "WHERE id = ? AND state != 'closed' RETURNING next_seq - 1",
            (conversation_id,),
        ).fetchone()
        if row is None:
            raise ConversationClosed(f"conversation {conversation_id} is closed")
        message = ChatMessage(conversation_id, row[0], sender, role, text, time.time())
        conn.execute(
            "INSERT INTO messages (conversation, seq, sender, role, text, idempotency_key, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, message.seq, sender, role, text, key, message.at),
        )
        return message, True

    async def transcript(self, conversation_id: str, after: int, limit: int) -> list[ChatMessage]:
        return await self.db.read(self._transcript, conversation_id, after, limit)

    def _transcript(self, conversation_id: str, after: int, limit: int) -> list[ChatMessage]:
        rows = self._conn().execute(
            "SELECT * FROM messages WHERE conversation = ? AND seq > ? ORDER BY seq LIMIT ?",
            (conversation_id, after, limit),
        )
        return [_message(row) for row in rows]

    # -- agents ------------------------------------------------------------------------

    async def put_agent(self, agent: Agent) -> None:
        await self.db.write(self._put_agent, agent)

    def _put_agent(self, agent: Agent) -> None:
        self._conn().execute(
            "INSERT INTO agents (id, name, capacity, available) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
            "capacity = excluded.capacity, available = excluded.available",
            (agent.id, agent.name, agent.capacity, int(agent.available)),
        )

    async def agents(self) -> list[Agent]:
        return await self.db.read(self._agents)

    def _agents(self) -> list[Agent]:
        rows = self._conn().execute("SELECT * FROM agents ORDER BY id")
        return [
            Agent(row["id"], row["name"], row["capacity"], bool(row["available"])) for row in rows
        ]
