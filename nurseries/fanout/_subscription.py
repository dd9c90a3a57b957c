"""One subscriber: its bounded queue, what it is told on close, and where it delivers.

Publishing never waits for a subscriber: the hub offers each message to the
subscriber's bounded queue in memory, and when that is full it applies the topic's
:class:`SlowConsumerPolicy` on the spot. The subscriber's pump task (in the hub's
nursery) moves what is queued to its :class:`Sink`, waking when the hub's flusher
tells it to.

The queue is a list held to ``queue_size`` here, not a Trio memory channel: nothing
ever waited on the channel (the hub offers without blocking, the pump takes without
blocking and parks on ``wakeup``), and its waiting machinery cost memory per
subscription and CPU per message for nothing. Not a ``deque`` either: an empty deque
is 760 bytes against a list's 56, on every idle subscription, and the pump usually
takes the whole queue, which a list hands over without copying.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import trio

from ._history import Message, Presence, Replay
from ._topics import SlowConsumerPolicy, is_exact

__all__ = ["CloseReason", "Item", "Outlet", "Sink", "SubscriberGone", "Subscription"]

Item = Message | Presence
_ids = itertools.count(1)


class CloseReason(enum.Enum):
    SLOW_CONSUMER = "slow_consumer"
    HUB_STOPPING = "hub_stopping"


class SubscriberGone(Exception):
    """What a sink raises when the peer it delivers to has gone (a client that
    vanished mid-delivery). Not a fault: the subscription ends quietly, counted in
    the hub's ``gone``, where any other exception from a sink is logged as an error."""


class Sink(Protocol):
    """Where a subscription's pump delivers; a WebSocket connection, a channel, a test.

    A sink that is also an :class:`Outlet` gets no pump: the hub hands it its
    subscriptions' messages as they are flushed."""

    async def opened(self, subscription: Subscription) -> None:
        """Called first, before any delivery (``subscription.replay`` says what resumed)."""

    async def deliver(self, subscription: Subscription, items: Sequence[Item]) -> None:
        """Deliver in order; raising ends the subscription (:class:`SubscriberGone`
        when the peer has left)."""

    async def closed(self, subscription: Subscription, reason: CloseReason) -> None:
        """The hub ended it; bounded by the hub's close timeout."""


@runtime_checkable
class Outlet(Protocol):
    """A sink that takes its deliveries without a task per subscription, for a
    connection that can write without waiting (most of the time).

    The hub calls ``wake`` whenever the subscription has queued items (at its flush,
    or at once when the queue is half full), from the publisher's task: the outlet
    takes what it can write now (``Subscription.take``, then ``Hub.took``) and leaves
    the rest queued for a task of its own to write once the connection can take it;
    the queue's slow-consumer policy applies meanwhile. What comes before the live
    messages, the ``replay``'s ``backlog``, is the outlet's to send first: the hub
    files the subscription ``held`` and wakes the outlet for it only once the outlet
    has cleared that (live messages queue meanwhile, also while a broker's replay is
    read).
    ``ended`` is called when the hub closes the subscription (not when its owner
    unsubscribes), from the hub's task: it must not wait."""

    def wake(self, subscription: Subscription) -> None: ...

    def ended(self, subscription: Subscription, reason: CloseReason) -> None: ...


@dataclass(eq=False)
class Subscription:
    pattern: str
    sink: Sink | Outlet
    queue_size: int
    client: str = ""
    info: Any = None
    presence: bool = False
    replay: Replay | None = None

    def __post_init__(self) -> None:
        self.id = next(_ids)
        self.exact = is_exact(self.pattern)
        self.queue: list[Item] = []  # at most queue_size items (see offer)
        # A pump's, made by the hub when it starts one; an outlet's subscription has none.
        self.scope: trio.CancelScope | None = None
        self.wakeup: trio.lowlevel.ParkingLot | None = None  # where the pump parks
        # An outlet's, until it has sent what comes first ("subscribed", the backlog):
        # the hub does not wake it for this subscription while it is set.
        self.held = False
        self.close_reason: CloseReason | None = None
        self.closed = False
        self.dropped = 0
        self.delivered = 0
        self.backlog: list[Message] = []
        self.last_offset = 0
        self._seen_epoch: str | None = None  # with a broker: live copies of the replay
        self.seen_through = 0  # > 0: live messages may repeat the replay (see seen)
        if self.replay is not None:
            self.resume(self.replay)

    def resume(self, replay: Replay) -> None:
        """Start from ``replay``: its messages first, then live ones after its offset.

        The pump takes the replayed messages; the subscription keeps only what the
        replay said (epoch, offset, recovered), not the messages, for its lifetime.
        """
        self.backlog = replay.messages
        self.replay = replace(replay, messages=[])
        self.last_offset = replay.offset
        self._seen_epoch, self.seen_through = replay.epoch, replay.offset
        # What was queued live while the replay was read may be in it too.
        for item in self.take(self.queue_size):
            if not (isinstance(item, Message) and self.seen(item)):
                self.queue.append(item)

    def seen(self, message: Message) -> bool:
        """Whether ``message`` came in the replay already (a broker's live copy)."""
        return (
            self.seen_through > 0
            and message.offset <= self.seen_through
            and message.epoch == self._seen_epoch
            and message.topic == self.pattern
        )

    @property
    def filling(self) -> bool:
        """Half full: its pump should not wait for the hub's next flush."""
        return len(self.queue) * 2 >= self.queue_size

    @property
    def resume_offset(self) -> int:
        """The offset to resume from after a close: the last one delivered."""
        return self.last_offset

    def offer(self, item: Item, policy: SlowConsumerPolicy) -> bool:
        """Queue ``item`` without blocking; False means the subscriber must be closed."""
        queue = self.queue
        if len(queue) < self.queue_size:
            queue.append(item)
            return True
        if policy is SlowConsumerPolicy.DISCONNECT:
            return False
        if policy is SlowConsumerPolicy.DROP_OLDEST:
            del queue[0]  # moves at most queue_size pointers
            self.dropped += 1
            queue.append(item)
            return True
        self._conflate(item)
        return True

    def _conflate(self, item: Item) -> None:
        """Keep the newest queued item per key, in arrival order of the newest; if the
        keys alone fill the queue, the oldest goes."""
        pending: dict[tuple[str, str], Item] = {}
        for queued in self.queue:
            _keep_latest(pending, queued)
        _keep_latest(pending, item)
        kept = list(pending.values())[-self.queue_size :]
        self.dropped += self.queue_size + 1 - len(kept)
        self.queue = kept

    def take(self, limit: int) -> list[Item]:
        """Up to ``limit`` queued items, without waiting."""
        queue = self.queue
        if len(queue) <= limit:
            self.queue = []
            return queue
        items = queue[:limit]
        del queue[:limit]
        return items

    def note_delivered(self, items: Sequence[Item]) -> None:
        self.delivered += len(items)
        for item in items:
            if isinstance(item, Message) and item.topic == self.pattern:
                self.last_offset = item.offset


def _keep_latest(pending: dict[tuple[str, str], Item], item: Item) -> None:
    if isinstance(item, Message):
        key = (item.topic, item.conflation_key)
    else:
        key = ("presence", f"{item.topic}/{item.client}/{item.event}/{id(item)}")
    pending.pop(key, None)
    pending[key] = item
