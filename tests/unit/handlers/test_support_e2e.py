"""Support chat served as a user's app would serve it (canopy.testing, a real socket): an
agent and a customer on two WebSockets, the customer drops and comes back, and the
conversation resumes without a gap; and the errors a client meets."""

from __future__ import annotations

from typing import Any

import httpx
import trio

import canopy
from canopy import capabilities, reference
from canopy.handlers.topics import TokenIssuer
from canopy.handlers.topics.client import (
    ClientSubscription,
    PresenceEvent,
    TopicMessage,
    connect_topics,
)
from canopy.testing import serve_app

SECRET = "support-e2e-secret-".ljust(40, "x")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def next_message(sub: ClientSubscription, kind: str = "message") -> dict[str, Any]:
    """The next message of ``kind`` (skipping presence and other kinds)."""
    with trio.fail_after(10):
        while True:
            event = await sub.receive()
            if isinstance(event, TopicMessage) and event.data.get("kind", kind) == kind:
                return dict(event.data)


async def next_presence(sub: ClientSubscription) -> tuple[str, str]:
    with trio.fail_after(10):
        while True:
            event = await sub.receive()
            if isinstance(event, PresenceEvent):
                return event.event, event.client


async def test_a_conversation_between_two_websocket_clients_across_a_disconnect() -> None:
    async with serve_app(support_app(), topics_secret=SECRET) as served:
        base = served.base_url
        ws_url = f"ws://127.0.0.1:{served.port}/ws"
        # What the staff login would hand agent Ana:
        agent_token = TokenIssuer(SECRET).issue("agent:ana", subscribe=["support.agents.ana"])
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            opened = await http.post(
                "/support/conversations", json={"customer": "alice", "subject": "late parcel"}
            )
            assert opened.status_code == 201, opened.text
            conversation, customer_token = opened.json()["conversation"], opened.json()["token"]
            assert conversation["state"] == "waiting"
            topic = conversation["topic"]

            async def send(token: str, text: str) -> dict[str, Any]:
                sent = await http.post(
                    f"/support/conversations/{conversation['id']}/messages",
                    json={"text": text},
                    headers=bearer(token),
                )
                assert sent.status_code == 201, sent.text
                return dict(sent.json())

            async with (
                connect_topics(ws_url, token=agent_token) as agent,
                agent.subscribe("support.agents.ana") as inbox,
            ):
                put = await http.put(
                    "/support/agents/ana",
                    json={"available": True, "name": "Ana"},
                    headers=bearer(agent_token),
                )
                assert put.status_code == 200, put.text
                assigned = await next_message(inbox, "assigned")
                assert assigned["conversation"]["id"] == conversation["id"]
                room_token = assigned["token"]
                async with (
                    agent.subscribe(topic, token=room_token, presence=True) as agent_room,
                    agent.subscribe(conversation["typing_topic"], token=room_token) as typing,
                ):
                    assert await next_presence(agent_room) == ("join", "agent:ana")  # itself
                    last = await _customer_talks(
                        ws_url, customer_token, conversation, agent_room, typing, send, room_token
                    )

                    # Alice is gone; Ana sees her leave and goes on writing.
                    assert await next_presence(agent_room) == ("leave", "customer:alice")
                    await send(room_token, "found it")
                    await send(room_token, "it arrives tomorrow")

                    # Alice is back on a new connection, resuming from her last offset.
                    async with (
                        connect_topics(ws_url, token=customer_token) as customer,
                        customer.subscribe(topic, since=last.offset, epoch=last.epoch) as room,
                    ):
                        missed = [await room.receive() for _ in range(2)]
                        assert all(isinstance(m, TopicMessage) for m in missed)
                        assert [m.offset for m in missed] == [last.offset + 1, last.offset + 2]  # type: ignore[union-attr]
                        texts = [m.data["text"] for m in missed]  # type: ignore[union-attr]
                        assert texts == ["found it", "it arrives tomorrow"]
                        assert await next_presence(agent_room) == ("join", "customer:alice")

            transcript = await http.get(
                f"/support/conversations/{conversation['id']}/transcript",
                headers=bearer(customer_token),
            )
            assert transcript.status_code == 200
            assert [(m["seq"], m["role"], m["text"]) for m in transcript.json()["messages"]] == [
                (1, "customer", "my parcel is late"),
                (2, "agent", "let me check"),
                (3, "agent", "found it"),
                (4, "agent", "it arrives tomorrow"),
            ]


async def _customer_talks(
    ws_url: str,
    customer_token: str,
    conversation: dict[str, Any],
    agent_room: ClientSubscription,
    typing: ClientSubscription,
    send: Any,
    room_token: str,
) -> TopicMessage:
    """Alice joins, types, writes, gets an answer, and drops: her last message seen."""
    async with (
        connect_topics(ws_url, token=customer_token) as customer,
        customer.subscribe(conversation["topic"], presence=True) as room,
    ):
        assert await next_presence(agent_room) == ("join", "customer:alice")
        clients = {c["client"] for c in await customer.presence(conversation["topic"])}
        assert clients == {"customer:alice", "agent:ana"}
        await customer.publish(conversation["typing_topic"], {"typing": True}, key="alice")
        typed = await typing.receive()
        assert isinstance(typed, TopicMessage) and typed.data == {"typing": True}

        await send(customer_token, "my parcel is late")
        heard = await next_message(agent_room)
        assert (heard["from"], heard["text"]) == ("customer:alice", "my parcel is late")
        await send(room_token, "let me check")
        with trio.fail_after(10):
            while True:
                event = await room.receive()
                if isinstance(event, TopicMessage) and event.data.get("text") == "let me check":
                    return event
    raise AssertionError("unreachable")


def support_app() -> canopy.App:
    """An app with support chat and the topics endpoint it talks over, as a user's app
    would include them."""
    app = canopy.App("desk")
    app.include(capabilities.topics_api)
    app.include(reference.support)
    return app


async def test_bad_requests_get_clear_errors() -> None:
    async with serve_app(support_app(), topics_secret=SECRET) as served:
        http = served.http
        opened = await http.post("/support/conversations", json={"customer": "bob"})
        conversation, token = opened.json()["conversation"], opened.json()["token"]
        messages = f"/support/conversations/{conversation['id']}/messages"
        stranger = TokenIssuer(SECRET).issue("customer:eve", subscribe=["support.*"])
        cases = [
            (await http.post("/support/conversations", content=b"{nope"), 400, "invalid_json"),
            (
                await http.post("/support/conversations", json={"customer": "a b"}),
                422,
                "invalid_field",
            ),
            (await http.post(messages, json={"text": "hi"}), 401, "invalid_token"),
            (await http.post(messages, json={"text": ""}), 401, "invalid_token"),
            (await http.put("/support/agents/ana", content=b"{"), 401, "invalid_token"),
            (
                await http.post(messages, json={"text": "hi"}, headers=bearer("x.y.z")),
                401,
                "invalid_token",
            ),
            (
                await http.post(messages, json={"text": "hi"}, headers=bearer(stranger)),
                403,
                "forbidden",
            ),
            (await http.post(messages, json={"text": ""}, headers=bearer(token)), 422, None),
            (
                await http.get("/support/conversations/c-none", headers=bearer(token)),
                404,
                "not_found",
            ),
            (
                await http.put(
                    "/support/agents/ana", json={"available": True}, headers=bearer(token)
                ),
                403,
                "forbidden",
            ),
        ]
        for response, status, code in cases:
            assert response.status_code == status, (response.request.url, response.text)
            assert code is None or response.json()["error"] == code
        closed = await http.post(
            f"/support/conversations/{conversation['id']}/close", headers=bearer(token)
        )
        assert closed.json()["state"] == "closed"
        late = await http.post(messages, json={"text": "hello?"}, headers=bearer(token))
        assert (late.status_code, late.json()["error"]) == (409, "conversation_closed")


async def test_without_a_topics_secret_support_says_what_it_needs() -> None:
    async with serve_app(support_app()) as served:
        response = await served.http.post("/support/conversations", json={"customer": "bob"})
    assert response.status_code == 503
    assert "CANOPY_TOPICS_SECRET" in response.json()["message"]
