"""Customer-service chat as a pure-Trio service: conversations, agents and the assigner.

Shape (a supervised service; the hub and the store are started before it)::

    SupportService.run          nursery
      assigner                  one loop: requeue gone agents' chats, assign waiting ones
    hub (not ours)              one presence watch per available agent, on
                                support.agents.{agent}; unsubscribed when we stop

A message is written to the transcript first and published on ``support.{id}``
after, so what a sender was told is accepted is never lost: a client that cannot
resume the topic (``recovered: false``) reloads the transcript. Typing indicators
go straight from the clients to ``typing.support.{id}`` over the WebSocket.

An agent is *connected* while some client of theirs is subscribed to their topic
(hub presence). An agent gone longer than ``reassign_after`` seconds has their open
conversations put back at the head of the queue; one who returns in time keeps them.
Presence is per process, so the assigner serves agents connected to this process
(docs/API.md, "Support").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from canopy.nurseries.fanout import Hub, HubError, Item, Presence, Subscription

from ..grants import Forbidden, Grants, TokenIssuer
from ._assign import AgentLoad, plan_assignments
from ._model import (
    Agent,
    ChatMessage,
    Conversation,
    agent_topic,
    check_id,
    check_text,
    typing_topic,
)
from ._store import SupportStore

__all__ = ["ConversationNotFound", "SupportService"]

log = logging.getLogger("canopy.support")


class ConversationNotFound(LookupError):
    pass


@dataclass
class _AgentState:
    agent: Agent
    connected: bool = False
    gone_since: float | None = None  # trio time; None while connected or handled
    last_assigned: float = 0.0
    watch: Subscription | None = None


class _PresenceWatch:
    """A hub sink that only tells the service when an agent's presence may have changed."""

    def __init__(self, service: SupportService, agent: str) -> None:
        self.service = service
        self.agent = agent

    async def opened(self, subscription: Subscription) -> None:
        self.service._presence_changed(self.agent)

    async def deliver(self, subscription: Subscription, items: Sequence[Item]) -> None:
        if any(isinstance(item, Presence) for item in items):
            self.service._presence_changed(self.agent)

    async def closed(self, subscription: Subscription, reason: Any) -> None:
        self.service._watch_ended(self.agent, subscription)


class SupportService:
    def __init__(
        self,
        store: SupportStore,
        hub: Hub,
        issuer: TokenIssuer,
        *,
        reassign_after: float = 15.0,
        token_ttl: float = 8 * 3600.0,
        batch: int = 100,
    ) -> None:
        self.store = store
        self.hub = hub
        self.issuer = issuer
        self.reassign_after = reassign_after
        self.token_ttl = token_ttl
        self.batch = batch
        self._agents: dict[str, _AgentState] = {}
        self._changed = trio.Event()

    @property
    def configured(self) -> bool:
        """Tokens can be issued (CANOPY_TOPICS_SECRET is set): without them nobody
        could read a conversation's topic or prove who sends."""
        return bool(self.issuer.secret)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            now = trio.current_time()
            for agent in await self.store.agents():
                self._agents[agent.id] = _AgentState(agent, gone_since=now)
            await self._rewatch()
            task_status.started()
            await self._assign_forever()
        finally:
            for state in self._agents.values():
                if state.watch is not None:
                    self.hub.unsubscribe(state.watch)
            self._agents.clear()

    # -- customers -------------------------------------------------------------------

    async def open_conversation(
        self, customer: str, subject: str = "", key: str | None = None
    ) -> tuple[Conversation, bool, str]:
        """(the conversation, whether it is new, the customer's token for it)."""
        check_id(customer, "customer")
        conversation, created = await self.store.open(Conversation(customer, subject), key)
        if created:
            self._changed.set()
        token = self._token(conversation, f"customer:{customer}", {"role": "customer"})
        return conversation, created, token

    async def conversation(self, conversation_id: str, grants: Grants) -> Conversation:
        conversation = await self._find(conversation_id)
        self._role(conversation, grants)
        return conversation

    async def send(
        self, conversation_id: str, grants: Grants, text: str, key: str | None = None
    ) -> tuple[ChatMessage, bool]:
        """Add to the transcript, then publish: (the message, whether it is new).
        Only the customer and the assigned agent may send."""
        check_text(text)
        conversation = await self._find(conversation_id)
        role = self._role(conversation, grants, sending=True)
        message, created = await self.store.append(conversation.id, grants.client, role, text, key)
        if created:
            await self._publish(conversation.topic, message.to_dict())
        return message, created

    async def transcript(
        self, conversation_id: str, grants: Grants, after: int = 0, limit: int = 100
    ) -> list[ChatMessage]:
        conversation = await self._find(conversation_id)
        self._role(conversation, grants)
        return await self.store.transcript(conversation.id, after, limit)

    async def close(self, conversation_id: str, grants: Grants) -> Conversation:
        conversation = await self._find(conversation_id)
        self._role(conversation, grants)
        closed = await self.store.close(conversation.id)
        if closed is None:
            return await self._find(conversation_id)  # already closed: the same answer
        await self._publish(closed.topic, {"kind": "closed", "by": grants.client})
        if closed.agent is not None:
            await self._publish(agent_topic(closed.agent), _unassigned(closed))
        self._changed.set()  # the agent has room again
        return closed

    # -- agents ----------------------------------------------------------------------

    async def set_agent(self, agent: Agent) -> None:
        """Store the agent, available or away, and watch their presence."""
        check_id(agent.id, "agent")
        await self.store.put_agent(agent)
        state = self._agents.get(agent.id)
        if state is None:
            state = self._agents[agent.id] = _AgentState(agent, gone_since=trio.current_time())
        state.agent = agent
        self._changed.set()  # the assigner's next round watches them if they are available

    def agent_token(self, agent: str, name: str = "") -> str:
        """What your staff login hands an agent: it names them (``agent:{id}``) and
        lets them hear their assignments."""
        return self.issuer.issue(
            f"agent:{agent}",
            subscribe=[agent_topic(agent)],
            ttl=self.token_ttl,
            info={"role": "agent", "name": name or agent},
        )

    def agents(self) -> list[dict[str, Any]]:
        return [
            {**state.agent.to_dict(), "connected": state.connected}
            for state in self._agents.values()
        ]

    # -- the assigner ----------------------------------------------------------------

    async def _assign_forever(self) -> None:
        while True:
            with trio.move_on_at(self._next_requeue()):
                await self._changed.wait()
            self._changed = trio.Event()  # a change while we work brings another round
            await self._rewatch()
            await self._requeue_gone()
            await self._assign_waiting()

    async def _rewatch(self) -> None:
        """Watch every available agent not watched yet: new ones, and those whose watch
        the hub closed."""
        for state in self._agents.values():
            if state.agent.available and state.watch is None:
                try:
                    await self._watch(state.agent.id)
                except HubError as exc:  # the hub is stopping: so are we
                    log.warning("cannot watch agent %s: %s", state.agent.id, exc)

    def _next_requeue(self) -> float:
        times = [s.gone_since for s in self._agents.values() if s.gone_since is not None]
        return min(times) + self.reassign_after if times else float("inf")

    async def _requeue_gone(self) -> None:
        now = trio.current_time()
        for state in list(self._agents.values()):
            if state.gone_since is None or now < state.gone_since + self.reassign_after:
                continue
            state.gone_since = None  # handled until they next go
            for conversation in await self.store.requeue(state.agent.id):
                log.info("conversation %s back in the queue", conversation.id)
                await self._publish(conversation.topic, {"kind": "requeued"})
                await self._publish(agent_topic(state.agent.id), _unassigned(conversation))

    async def _assign_waiting(self) -> None:
        load = await self.store.load()
        agents = [
            AgentLoad(s.agent.id, s.agent.capacity, load.get(s.agent.id, 0), s.last_assigned)
            for s in self._agents.values()
            if s.agent.available and s.connected
        ]
        if not agents:
            return
        waiting = await self.store.waiting(self.batch)
        now = trio.current_time()
        pairs = plan_assignments([c.id for c in waiting], agents, now)
        if not pairs:
            return
        for conversation in await self.store.assign(pairs):
            assert conversation.agent is not None
            state = self._agents[conversation.agent]
            state.last_assigned = now
            await self._announce(conversation, state.agent)
        if len(waiting) == self.batch:
            self._changed.set()  # more may wait behind this batch

    async def _announce(self, conversation: Conversation, agent: Agent) -> None:
        token = self._token(
            conversation, f"agent:{agent.id}", {"role": "agent", "name": agent.name}
        )
        await self._publish(
            agent_topic(agent.id),
            {"kind": "assigned", "conversation": conversation.to_dict(), "token": token},
        )
        await self._publish(
            conversation.topic, {"kind": "assigned", "agent": agent.id, "name": agent.name}
        )

    # -- presence --------------------------------------------------------------------

    async def _watch(self, agent: str) -> None:
        state = self._agents[agent]
        state.watch = await self.hub.subscribe(
            agent_topic(agent), _PresenceWatch(self, agent), presence=True
        )

    def _presence_changed(self, agent: str) -> None:
        state = self._agents.get(agent)
        if state is None:
            return
        connected = bool(self.hub.presence(agent_topic(agent)))
        if connected == state.connected:
            return
        state.connected = connected
        state.gone_since = None if connected else trio.current_time()
        self._changed.set()

    def _watch_ended(self, agent: str, subscription: Subscription) -> None:
        """The hub closed our watch (it is stopping, or we were slow): not watched now,
        so treated as gone until the assigner's next round watches again."""
        state = self._agents.get(agent)
        if state is not None and state.watch is subscription:
            state.watch = None
            if state.connected:
                state.connected = False
                state.gone_since = trio.current_time()
            self._changed.set()

    # -- helpers ---------------------------------------------------------------------

    async def _find(self, conversation_id: str) -> Conversation:
        conversation = await self.store.get(conversation_id)
        if conversation is None:
            raise ConversationNotFound(f"no conversation {conversation_id}")
        return conversation

    def _role(self, conversation: Conversation, grants: Grants, *, sending: bool = False) -> str:
        """The caller's role in the conversation, or Forbidden."""
        if grants.may_subscribe(conversation.topic):
            if grants.client == f"customer:{conversation.customer}":
                return "customer"
            agent = grants.client.removeprefix("agent:")
            if agent == conversation.agent:
                return "agent"
            if not sending and grants.client.startswith("agent:"):
                return "agent"  # an earlier agent may still read what they took part in
        raise Forbidden(f"not a participant of conversation {conversation.id}")

    def _token(self, conversation: Conversation, client: str, info: dict[str, Any]) -> str:
        return self.issuer.issue(
            client,
            subscribe=[conversation.topic, typing_topic(conversation.id)],
            publish=[typing_topic(conversation.id)],
            ttl=self.token_ttl,
            info=info,
        )

    async def _publish(self, topic: str, data: dict[str, Any]) -> None:
        """An event to the hub; a hub that refuses it (its broker is away) costs the
        live event, never what the store already holds."""
        try:
            await self.hub.publish(topic, data)
        except HubError as exc:
            log.warning("support event to %s not published: %s", topic, exc)


def _unassigned(conversation: Conversation) -> dict[str, Any]:
    return {"kind": "unassigned", "conversation": conversation.id}
