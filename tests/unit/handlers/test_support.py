"""The support service with a real hub and a real SQLite store, on a virtual clock.

The store works in a thread: a clock that jumped as soon as every task waited would
jump during a query, so this one jumps only after 20 ms of real idleness."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from canopy.handlers.support import (
    Agent,
    AgentLoad,
    ConversationClosed,
    ConversationState,
    SupportService,
    SupportStore,
    agent_topic,
    plan_assignments,
)
from canopy.handlers.topics import Forbidden, Grants, TokenIssuer
from canopy.nurseries import Supervisor
from canopy.nurseries.fanout import CloseReason, Hub, Subscription
from tests.fanout_sinks import RecordingSink

SECRET = "s" * 32
REASSIGN = 15.0


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)


def test_waiting_customers_go_in_order_to_the_least_loaded_agent_with_room() -> None:
    agents = [AgentLoad("ana", 2, 1), AgentLoad("bob", 1, 0), AgentLoad("cy", 3, 3)]
    assert plan_assignments(["c1", "c2", "c3", "c4"], agents, now=5.0) == [
        ("c1", "bob"),  # fewest open
        ("c2", "ana"),  # bob is full now; cy was full from the start
    ]
    tied = [AgentLoad("b", 2, 0, last_assigned=1.0), AgentLoad("a", 2, 0, last_assigned=2.0)]
    assert plan_assignments(["x"], tied) == [("x", "b")]  # longest since their last
    assert plan_assignments(["x"], []) == []


@dataclass
class Desk:
    service: SupportService
    hub: Hub
    issuer: TokenIssuer

    def grants(self, token: str) -> Grants:
        return self.issuer.verify(token)

    async def connect_agent(self, agent: str) -> tuple[Subscription, RecordingSink]:
        """An agent's WebSocket, as the hub sees it: a subscriber named agent:{id}."""
        sink = RecordingSink()
        sub = await self.hub.subscribe(agent_topic(agent), sink, client=f"agent:{agent}")
        return sub, sink

    async def watch(self, topic: str) -> RecordingSink:
        sink = RecordingSink()
        await self.hub.subscribe(topic, sink)
        return sink


@asynccontextmanager
async def desk(tmp_path: Path) -> AsyncIterator[Desk]:
    hub = Hub(flush_interval=0)
    store = SupportStore(tmp_path / "support.db", synchronous="OFF")
    issuer = TokenIssuer(SECRET)
    service = SupportService(store, hub, issuer, reassign_after=REASSIGN)
    tree = Supervisor("desk")  # started in this order, stopped in reverse, as in the app
    tree.add("hub", hub, grace=1)
    tree.add("store", store, grace=1)
    tree.add("support", service, grace=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(tree.run)
        yield Desk(service, hub, issuer)
        tree.shutdown()


async def until(predicate: Any, seconds: float = 5.0) -> None:
    with trio.fail_after(seconds):
        while not await predicate():  # noqa: ASYNC110 (the store has no event to wait on)
            await trio.sleep(0.25)


async def state_of(d: Desk, conversation_id: str) -> tuple[ConversationState, str | None]:
    found = await d.service.store.get(conversation_id)
    assert found is not None
    return found.state, found.agent


def state_of_is(d: Desk, conversation_id: str, agent: str) -> Any:
    """For ``until``: the conversation is assigned to ``agent``."""

    async def check() -> bool:
        return await state_of(d, conversation_id) == (ConversationState.ASSIGNED, agent)

    return check


async def test_a_conversation_waits_for_a_connected_available_agent(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    async with desk(tmp_path) as d:
        conversation, created, _ = await d.service.open_conversation("alice", "refund")
        assert created and conversation.state is ConversationState.WAITING
        await d.service.set_agent(Agent("ana", "Ana", capacity=2, available=True))
        await trio.sleep(1)
        assert await state_of(d, conversation.id) == (ConversationState.WAITING, None)

        watcher = await d.watch(conversation.topic)
        _, inbox = await d.connect_agent("ana")

        await until(state_of_is(d, conversation.id, "ana"))
        await trio.sleep(0.1)
        (event,) = [m.data for m in inbox.messages]
        assert event["kind"] == "assigned" and event["conversation"]["id"] == conversation.id
        agent_grants = d.grants(event["token"])  # lets the agent into this conversation only
        assert agent_grants.client == "agent:ana"
        assert agent_grants.may_subscribe(conversation.topic)
        assert not agent_grants.may_subscribe("support.c-other")
        assert [m.data["kind"] for m in watcher.messages] == ["assigned"]


async def test_messages_go_to_the_transcript_then_the_topic_from_participants_only(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    async with desk(tmp_path) as d:
        conversation, _, customer_token = await d.service.open_conversation("alice")
        customer = d.grants(customer_token)
        watcher = await d.watch(conversation.topic)
        await d.service.set_agent(Agent("ana", available=True))
        _, inbox = await d.connect_agent("ana")
        await until(state_of_is(d, conversation.id, "ana"))
        await trio.sleep(0.1)
        agent = d.grants(inbox.messages[0].data["token"])

        first, new = await d.service.send(conversation.id, customer, "hello", key="k1")
        again, repeated = await d.service.send(conversation.id, customer, "hello", key="k1")
        assert new and not repeated and again == first  # a retried send is one message
        await d.service.send(conversation.id, agent, "hi, how can I help?")
        stranger = d.grants(d.issuer.issue("customer:mallory", subscribe=["support.*"]))
        with pytest.raises(Forbidden):
            await d.service.send(conversation.id, stranger, "let me in")
        other_agent = d.grants(d.issuer.issue("agent:bob", subscribe=[conversation.topic]))
        with pytest.raises(Forbidden):  # may read, not speak: not the assigned agent
            await d.service.send(conversation.id, other_agent, "me too")

        transcript = await d.service.transcript(conversation.id, customer)
        assert [(m.seq, m.role, m.text) for m in transcript] == [
            (1, "customer", "hello"),
            (2, "agent", "hi, how can I help?"),
        ]
        await trio.sleep(0.1)
        sent = [m.data for m in watcher.messages if m.data["kind"] == "message"]
        assert [(m["seq"], m["from"]) for m in sent] == [(1, "customer:alice"), (2, "agent:ana")]

        await d.service.close(conversation.id, customer)
        with pytest.raises(ConversationClosed):
            await d.service.send(conversation.id, customer, "one more thing")


async def test_an_agent_gone_past_the_grace_has_their_conversations_reassigned(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    async with desk(tmp_path) as d:
        await d.service.set_agent(Agent("ana", available=True))
        ana, _ = await d.connect_agent("ana")
        conversation, _, _ = await d.service.open_conversation("alice")
        await until(state_of_is(d, conversation.id, "ana"))

        # Gone for less than the grace: back in time, ana keeps it.
        d.hub.unsubscribe(ana)
        await trio.sleep(REASSIGN - 5)
        ana, _ = await d.connect_agent("ana")
        await trio.sleep(REASSIGN * 2)
        assert await state_of(d, conversation.id) == (ConversationState.ASSIGNED, "ana")

        # Gone for good: exactly one grace later the conversation is requeued, and bob,
        # connected meanwhile, takes it.
        await d.service.set_agent(Agent("bob", available=True))
        await d.connect_agent("bob")
        watcher = await d.watch(conversation.topic)
        d.hub.unsubscribe(ana)
        left = trio.current_time()
        await trio.sleep(REASSIGN - 1)
        assert await state_of(d, conversation.id) == (ConversationState.ASSIGNED, "ana")
        await until(state_of_is(d, conversation.id, "bob"), seconds=REASSIGN)
        assert REASSIGN <= trio.current_time() - left < REASSIGN + 1
        await trio.sleep(0.1)
        assert [m.data["kind"] for m in watcher.messages] == ["requeued", "assigned"]
        history = await d.hub.history(agent_topic("ana"), since=0)  # what ana finds on return
        assert [m.data["kind"] for m in history.messages] == ["assigned", "unassigned"]


async def test_an_agent_at_capacity_gets_the_next_customer_when_one_closes(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    async with desk(tmp_path) as d:
        await d.service.set_agent(Agent("ana", capacity=1, available=True))
        await d.connect_agent("ana")
        first, _, first_token = await d.service.open_conversation("alice")
        second, _, _ = await d.service.open_conversation("bruno")
        await until(state_of_is(d, first.id, "ana"))
        await trio.sleep(1)
        assert await state_of(d, second.id) == (ConversationState.WAITING, None)
        await d.service.close(first.id, d.grants(first_token))
        await until(state_of_is(d, second.id, "ana"))


async def test_an_agent_who_is_away_gets_no_new_conversations(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    async with desk(tmp_path) as d:
        await d.service.set_agent(Agent("ana", available=False))
        await d.connect_agent("ana")
        conversation, _, _ = await d.service.open_conversation("alice")
        await trio.sleep(REASSIGN * 2)
        assert await state_of(d, conversation.id) == (ConversationState.WAITING, None)
        await d.service.set_agent(Agent("ana", available=True))
        await until(state_of_is(d, conversation.id, "ana"))
        assert d.service.agents()[0]["connected"]


async def test_an_idempotency_key_opens_one_conversation(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    async with desk(tmp_path) as d:
        one, created, _ = await d.service.open_conversation("alice", key="k")
        two, again, _ = await d.service.open_conversation("alice", key="k")
        assert created and not again and one.id == two.id


async def test_a_watch_the_hub_closed_is_made_again_and_the_agent_keeps_her_chats(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    async with desk(tmp_path) as d:
        await d.service.set_agent(Agent("ana", available=True))
        await d.connect_agent("ana")
        conversation, _, _ = await d.service.open_conversation("alice")
        await until(state_of_is(d, conversation.id, "ana"))
        watch = d.service._agents["ana"].watch
        assert watch is not None
        d.hub._close(watch, CloseReason.SLOW_CONSUMER)  # as the hub would, were we slow
        await trio.sleep(REASSIGN * 2)
        assert await state_of(d, conversation.id) == (ConversationState.ASSIGNED, "ana")
        assert d.service.agents()[0]["connected"]
        assert d.service._agents["ana"].watch not in (None, watch)
