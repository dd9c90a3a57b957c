"""One WebSocket connection speaking the topics protocol, over any socket.

Resource handling: the session owns one nursery. Its own task reads and answers
frames; beside it, only when needed, a publisher task (from the first publish on)
and, over a :class:`DirectSocket`, a writer task while the socket cannot take what
the hub delivers. A subscription the hub closes (slow consumer, hub stopping) ends
the session through :meth:`Session.end`, which records the close code and cancels
the nursery. Every subscription is dropped when the session ends, however it ends,
and the close frame is sent within ``close_timeout``.

Delivery: over a :class:`DirectSocket` (Canopy's transport) the session is the
hub's :class:`~canopy.nurseries.fanout.Outlet` for all its subscriptions: the hub's
flush writes each message straight to the socket, with no task per subscription or
per connection. Over any other socket each subscription has the hub's pump.

Error handling: a refused operation is answered with an ``error`` frame and the
connection stays open; only ``max_errors`` refusals in a row close it with 1008.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast, runtime_checkable

import trio
import trio.lowlevel

from canopy.nurseries.fanout import (
    BrokerUnavailable,
    CloseReason,
    HubError,
    InvalidTopic,
    Item,
    Message,
    SubscriberGone,
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
    encode_frames,
    error_frame,
    message_frame,
    parse,
    presence_frame,
)
from ._service import Forbidden, TopicsService

__all__ = ["DirectSocket", "Session", "Socket"]

MAX_QUEUED_PUBLISHES = 1000  # per connection, before it stops reading


class Socket(Protocol):
    async def receive(self) -> str | bytes: ...
    async def send(self, frames: Sequence[str]) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


@runtime_checkable
class DirectSocket(Socket, Protocol):
    """A socket that can also be written without waiting, from any task."""

    def send_nowait(self, data: bytes) -> bool:
        """Write encoded frames, in order after everything before them; False if some
        are still held (:meth:`drain` writes them). A gone client's are dropped."""
        ...

    async def drain(self) -> None:
        """Until nothing is held; :class:`SubscriberGone` if the client has gone."""
        ...

    def on_drain(self, end: Callable[[], object]) -> None:
        """Have ``end`` called when the server begins a graceful stop."""
        ...


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
        self._nursery: trio.Nursery | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        # Made when first needed: a session that only subscribes (most) has neither.
        self._publisher: _Publisher | None = None
        self._outlet: _Outlet | None = None

    async def run(self) -> None:
        self.service.connections += 1
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if isinstance(self.socket, DirectSocket):
                    self.socket.on_drain(self._drained)
                if self.close_code is not None:
                    nursery.cancel_scope.cancel()  # ended before it began
                try:
                    await self._receive_loop()
                    if self._publisher is not None:
                        with trio.move_on_after(self.close_timeout):
                            await self._publisher.published_all()  # read before a close
                except SubscriberGone:
                    pass  # the client left: nobody to answer
                nursery.cancel_scope.cancel()
        finally:
            self.service.connections -= 1
            for sub in self.subscriptions.values():
                self.service.hub.unsubscribe(sub)
            self.subscriptions.clear()
            if self._outlet is not None:
                self._outlet.ready.clear()  # its subscriptions hold it as their sink
            # Each holds the session: cycles that would keep a closed connection
            # until the collector ran.
            self._nursery = self._publisher = self._outlet = None
        if self.close_code is not None:
            with trio.move_on_after(self.close_timeout):
                await self.socket.close(self.close_code, self.close_reason)

    def _drained(self) -> None:
        self.end(CLOSE_GOING_AWAY, "server shutting down")

    def end(self, code: int | None, reason: str = "") -> None:
        """End the session; with a code, the close frame to send (None: the client
        has gone, there is nobody to tell)."""
        if self.close_code is None and code is not None:
            # A close frame's reason is at most 123 bytes of UTF-8.
            self.close_code = code
            self.close_reason = reason.encode()[:123].decode(errors="ignore")
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _receive_loop(self) -> None:
        """Answer frames until the client leaves (or too many are refused)."""
        errors = 0
        while True:
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
        outlet = self._outlet
        if outlet is None and isinstance(self.socket, DirectSocket):
            outlet = self._outlet = _Outlet(self, self.socket)
        sub = await self.service.hub.subscribe(
            pattern,
            outlet if outlet is not None else _SessionSink(self),
            since=since,
            epoch=epoch,
            client=self.grants.client,
            info=self.grants.info,
            presence=op.body.get("presence") is True,
        )
        self.subscriptions[pattern] = sub
        if outlet is not None:
            await outlet.open(sub, op.request_id)
            return None
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
            assert self._nursery is not None
            self._publisher = _Publisher(self)
            self._nursery.start_soon(self._publisher.run)
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
            try:
                await self.session.socket.send(frames)
            except SubscriberGone:
                self.session.end(None)
                return
            self.in_flight = 0


class _SessionSink:
    """What the hub's pumps call for one of the session's subscriptions."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def opened(self, subscription: Subscription) -> None:
        request_id = self.session._pending.pop(subscription.id, None)
        await self.session.socket.send([_subscribed(subscription, request_id)])

    async def deliver(self, subscription: Subscription, items: Sequence[Item]) -> None:
        await self.session.socket.send(_frames(items))

    async def closed(self, subscription: Subscription, reason: CloseReason) -> None:
        _end(self.session, subscription, reason)


class _Outlet:
    """The session's subscriptions over a :class:`DirectSocket`: the hub's flush
    writes what they queued straight to the socket, in the publisher's task. Only
    when the socket holds back (the client reads slowly) does a writer task run,
    in the session's nursery, until it has caught up; meanwhile what the hub
    delivers stays in each subscription's queue, where its slow-consumer policy
    applies, exactly as behind a pump blocked on a send."""

    def __init__(self, session: Session, socket: DirectSocket) -> None:
        self.session = session
        self.socket = socket
        self.hub = session.service.hub
        self.ready: dict[Subscription, None] = {}  # queued while the writer runs, in order
        self.writing = False  # the writer task runs

    async def open(self, sub: Subscription, request_id: Any) -> None:
        """Send "subscribed", then the backlog, then what queued meanwhile (the hub
        holds ``sub`` until then)."""
        await self.socket.send([_subscribed(sub, request_id)])
        backlog, sub.backlog = sub.backlog, []
        batch = self.hub.batch_size
        for start in range(0, len(backlog), batch):
            items = backlog[start : start + batch]
            await self.socket.send(_frames(items))
            self.hub.took(sub, items)
        sub.held = False
        sub.replay = None  # said in "subscribed"; not kept for the subscription's life
        if sub.queue:
            self.wake(sub)

    def wake(self, sub: Subscription) -> None:
        if self.writing:
            self.ready[sub] = None  # the writer takes it in turn
        else:
            self._write(sub)

    def ended(self, sub: Subscription, reason: CloseReason) -> None:
        _end(self.session, sub, reason)

    def _write(self, sub: Subscription) -> None:
        """Write ``sub``'s queue, a batch at a time, while the socket takes it; once
        it holds back, leave the rest queued and start the writer."""
        hub, send = self.hub, self.socket.send_nowait
        while sub.queue:
            items = sub.take(hub.batch_size)
            hub.took(sub, items)
            if len(items) == 1 and type(items[0]) is Message:
                data = _message_bytes(items[0])  # once per subscriber per message
            else:
                data = encode_frames(_frames(items))
            if not send(data):
                if sub.queue:
                    self.ready[sub] = None
                self.writing = True
                nursery = self.session._nursery
                if nursery is not None:
                    nursery.start_soon(self._writer)
                return

    def _write_ready(self) -> None:
        ready = self.ready
        while ready and not self.writing:
            sub = next(iter(ready))
            del ready[sub]
            if not sub.closed:
                self._write(sub)

    async def _writer(self) -> None:
        try:
            while self.writing:
                await self.socket.drain()
                self.writing = False
                self._write_ready()
        except SubscriberGone:
            self.session.end(None)


def _subscribed(sub: Subscription, request_id: Any) -> str:
    replay = sub.replay
    body: dict[str, Any] = {"type": "subscribed", "topic": sub.pattern}
    if replay is not None:
        body.update(offset=replay.offset, epoch=replay.epoch, recovered=replay.recovered)
    if request_id is not None:
        body["id"] = request_id
    return dumps(body)


_encoded: list[Any] = [None, b""]  # the last message written, and its frame


def _message_bytes(message: Message) -> bytes:
    """``message``'s frame, encoded once (``message_frame``); the last one at hand,
    since a flush writes one message to every subscriber in turn."""
    if _encoded[0] is not message:
        _encoded[:] = [message, message_frame(message).encoded()]
    return cast(bytes, _encoded[1])


def _frames(items: Sequence[Item]) -> list[str]:
    return [message_frame(i) if isinstance(i, Message) else presence_frame(i) for i in items]


def _end(session: Session, sub: Subscription, reason: CloseReason) -> None:
    if reason is CloseReason.SLOW_CONSUMER:
        session.end(
            CLOSE_SLOW_CONSUMER,
            f"slow consumer on {sub.pattern}: resume from offset {sub.resume_offset}",
        )
    else:
        session.end(CLOSE_GOING_AWAY, "server shutting down")


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
