"""One WebSocket connection speaking the topics protocol, over any socket.

Resource handling: the session's receive loop runs in its own cancel scope; a
subscription the hub closes (slow consumer, hub stopping) ends the session through
:meth:`Session.end`, which records the close code and cancels that scope. Every
subscription is dropped when the session ends, however it ends, and the close frame
is sent within ``close_timeout``.

Error handling: a refused operation is answered with an ``error`` frame and the
connection stays open; only ``max_errors`` refusals in a row close it with 1008.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import trio
import trio.lowlevel

from canopy.nurseries.fanout import (
    BrokerUnavailable,
    CloseReason,
    HubError,
    InvalidTopic,
    Item,
    Message,
    Subscription,
    check_pattern,
    check_topic,
)

from ..grants import Grants, InvalidToken
from ._protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY,
    CLOSE_SLOW_CONSUMER,
    Operation,
    ProtocolError,
    dumps,
    error_frame,
    message_frame,
    parse,
    presence_frame,
)
from ._service import Forbidden, TopicsService

__all__ = ["Session", "Socket"]

MAX_QUEUED_PUBLISHES = 1000  # per connection, before it stops reading


class Socket(Protocol):
    async def receive(self) -> str | bytes: ...
    async def send(self, frames: Sequence[str]) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


class Session:
    def __init__(
        self,
        service: TopicsService,
        socket: Socket,
        grants: Grants,
        *,
        max_errors: int = 50,
        close_timeout: float = 1.0,
    ) -> None:
        self.service = service
        self.socket = socket
        self.grants = grants
        self.max_errors = max_errors
        self.close_timeout = close_timeout
        self.subscriptions: dict[str, Subscription] = {}
        self._pending: dict[int, Any] = {}  # subscription id -> request id of its subscribe
        self._scope = trio.CancelScope()
        self.close_code: int | None = None
        self.close_reason = ""
        # Created at the first publish, with the nursery its task runs in: a session
        # that only subscribes (most of them) pays for neither.
        self._publisher: _Publisher | None = None

    async def run(self) -> None:
        self.service.connections += 1
        try:
            with self._scope:
                await self._receive_loop()
                if self._publisher is not None:  # it stopped at the first publish
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._publisher.run)
                        await self._receive_loop()
                        with trio.move_on_after(self.close_timeout):
                            await self._publisher.published_all()  # read before a close
                        nursery.cancel_scope.cancel()
        finally:
            self.service.connections -= 1
            for sub in self.subscriptions.values():
                self.service.hub.unsubscribe(sub)
            self.subscriptions.clear()
        if self.close_code is not None:
            with trio.move_on_after(self.close_timeout):
                await self.socket.close(self.close_code, self.close_reason)

    def end(self, code: int, reason: str) -> None:
        if self.close_code is None:
            # A close frame's reason is at most 123 bytes of UTF-8.
            self.close_code = code
            self.close_reason = reason.encode()[:123].decode(errors="ignore")
        self._scope.cancel()

    async def _receive_loop(self) -> None:
        """Answer frames until the client leaves; without a publisher yet, return at
        the first publish, so that ``run`` opens the nursery its task needs."""
        errors = 0
        first_pass = self._publisher is None
        while not (first_pass and self._publisher is not None):
            frame = await self.socket.receive()
            try:
                reply = await self._handle(parse(frame))
                errors = 0
            except ProtocolError as exc:
                errors += 1
                if errors >= self.max_errors:
                    self.end(CLOSE_POLICY, f"{errors} refused frames in a row")
                    return
                reply = error_frame(exc.code, str(exc), exc.request_id)
            if reply is not None:
                await self.socket.send([reply])

    async def _handle(self, op: Operation) -> str | None:
        try:
            if op.op == "ping":
                return _reply(op, type="pong")
            if op.op == "subscribe":
                return await self._subscribe(op)
            if op.op == "unsubscribe":
                return self._unsubscribe(op)
            if op.op == "publish":
                await self._publish(op)  # answered by the publisher task
                return None
            return self._presence(op)
        except InvalidTopic as exc:
            raise op.error("invalid_topic", str(exc)) from None
        except InvalidToken as exc:
            raise op.error("invalid_token", str(exc)) from None
        except Forbidden as exc:
            raise op.error("forbidden", str(exc)) from None
        except BrokerUnavailable as exc:
            raise op.error("unavailable", str(exc)) from None
        except HubError as exc:
            raise op.error("limit_reached", str(exc)) from None

    async def _subscribe(self, op: Operation) -> str | None:
        pattern = check_pattern(op.text("topic"))
        grants = self._grants_for(op)
        if not grants.may_subscribe(pattern):
            raise op.error("forbidden", f"not allowed to subscribe to {pattern}")
        if pattern in self.subscriptions:
            raise op.error("already_subscribed", f"already subscribed to {pattern}")
        if len(self.subscriptions) >= self.service.max_subscriptions_per_connection:
            limit = self.service.max_subscriptions_per_connection
            raise op.error("limit_reached", f"at most {limit} subscriptions per connection")
        since, epoch = op.offset("since"), op.text("epoch", required=False)
        if since is not None and pattern.endswith("*"):
            raise op.error("invalid_field", "since: resuming needs an exact topic")
        if since is not None and since > 0 and epoch is None:
            raise op.error("invalid_field", "epoch: required with since > 0")
        sub = await self.service.hub.subscribe(
            pattern,
            _SessionSink(self),
            since=since,
            epoch=epoch,
            client=self.grants.client,
            info=self.grants.info,
            presence=op.body.get("presence") is True,
        )
        self.subscriptions[pattern] = sub
        self._pending[sub.id] = op.request_id
        return None  # the hub's pump sends "subscribed" before the first message

    def _unsubscribe(self, op: Operation) -> str:
        pattern = op.text("topic")
        sub = self.subscriptions.pop(pattern or "", None)
        if sub is None:
            raise op.error("not_subscribed", f"not subscribed to {pattern}")
        self.service.hub.unsubscribe(sub)
        return _reply(op, type="unsubscribed", topic=pattern)

    async def _publish(self, op: Operation) -> None:
        """Checked now (an error is answered at once); published by the publisher task,
        which answers ``published`` for each, in order."""
        topic = check_topic(op.text("topic"))
        if "data" not in op.body:
            raise op.error("invalid_field", "data: required")
        key = op.text("key", required=False)
        if not self._grants_for(op).may_publish(topic):
            raise op.error("forbidden", f"not allowed to publish to {topic}")
        if self._publisher is None:
            self._publisher = _Publisher(self)
        await self._publisher.add(op, topic, op.body["data"], key)

    def _presence(self, op: Operation) -> str:
        topic = check_topic(op.text("topic"))
        return _reply(
            op, type="presence", topic=topic, clients=self.service.presence(self.grants, topic)
        )

    def _grants_for(self, op: Operation) -> Grants:
        token = op.text("token", required=False)
        return self.service.issuer.verify(token) if token else self.grants


class _Publisher:
    """A session's publishes, in the order they came, handed to the hub together by
    one task: with a broker, a burst is one round trip instead of one each, and each
    is answered ``published`` in order."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.queue: deque[tuple[Operation, str, Any, str | None]] = deque()
        self.in_flight = 0  # handed to the hub, not yet answered
        self.work = trio.lowlevel.ParkingLot()  # the task waits here for publishes
        self.room = trio.lowlevel.ParkingLot()  # the reader waits here while it is full

    async def add(self, op: Operation, topic: str, data: Any, key: str | None) -> None:
        while len(self.queue) >= MAX_QUEUED_PUBLISHES:
            await self.room.park()  # the client is ahead of the hub: stop reading
        self.queue.append((op, topic, data, key))
        self.work.unpark_all()

    async def published_all(self) -> None:
        while self.queue or self.in_flight:
            await self.room.park()

    async def run(self) -> None:
        while True:
            if not self.queue:
                self.room.unpark_all()  # published_all waits here too
                await self.work.park()
                continue
            batch = list(self.queue)
            self.queue.clear()
            self.in_flight = len(batch)
            self.room.unpark_all()
            messages = [(topic, data, key) for _op, topic, data, key in batch]
            try:
                outcomes: list[Message | Exception] = list(
                    await self.session.service.hub.publish_many(messages)
                )
            except HubError as exc:  # the broker failed: none of them was published
                outcomes = [exc] * len(batch)
            frames = [
                _published(op, outcome)
                for (op, *_rest), outcome in zip(batch, outcomes, strict=True)
            ]
            await self.session.socket.send(frames)
            self.in_flight = 0


class _SessionSink:
    """What the hub's pumps call for one of the session's subscriptions."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def opened(self, subscription: Subscription) -> None:
        request_id = self.session._pending.pop(subscription.id, None)
        replay = subscription.replay
        body: dict[str, Any] = {"type": "subscribed", "topic": subscription.pattern}
        if replay is not None:
            body.update(offset=replay.offset, epoch=replay.epoch, recovered=replay.recovered)
        if request_id is not None:
            body["id"] = request_id
        await self.session.socket.send([dumps(body)])

    async def deliver(self, subscription: Subscription, items: Sequence[Item]) -> None:
        await self.session.socket.send(
            [message_frame(i) if isinstance(i, Message) else presence_frame(i) for i in items]
        )

    async def closed(self, subscription: Subscription, reason: CloseReason) -> None:
        if reason is CloseReason.SLOW_CONSUMER:
            self.session.end(
                CLOSE_SLOW_CONSUMER,
                f"slow consumer on {subscription.pattern}: resume from offset "
                f"{subscription.resume_offset}",
            )
        else:
            self.session.end(CLOSE_GOING_AWAY, "server shutting down")


def _published(op: Operation, outcome: Message | Exception) -> str:
    if isinstance(outcome, Message):
        return _reply(
            op, type="published", topic=outcome.topic, offset=outcome.offset, epoch=outcome.epoch
        )
    code = "unavailable" if isinstance(outcome, BrokerUnavailable) else "limit_reached"
    return error_frame(code, str(outcome), op.request_id)


def _reply(op: Operation, **body: Any) -> str:
    if op.request_id is not None:
        body["id"] = op.request_id
    return dumps(body)
