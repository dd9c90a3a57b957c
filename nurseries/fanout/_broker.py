"""Where a hub's topics live when several processes share them.

Without a broker a :class:`~canopy.nurseries.fanout.Hub` keeps each topic's log in memory
and offers a published message to its own subscribers at once. With one, the broker
assigns offsets and keeps history where every process sees them (Redis:
``canopy.nurseries.redis.RedisBroker``), and hands every message published anywhere, this
process included, back to each attached hub, which offers it to its subscribers.
Offsets are then global: a client may resume on any process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ._history import Message, Replay
from ._hub_errors import HubError
from ._topics import TopicRule

__all__ = ["Broker", "BrokerUnavailable"]


class BrokerUnavailable(HubError):
    """The broker cannot be reached now; nothing was published. Retry later."""


class Broker(Protocol):
    evicted: int  # topics this process's publishes forgot to make room for newer ones
    # Seconds a topic subscribed to exactly stays kept without a renewal: the hub
    # renews its topics' pins (``pin``) every third of it.
    pin_for: float

    def attach(self, heard: Callable[[Message], None]) -> None:
        """Call ``heard`` (must not block) with every message published through the
        broker by any process, in each topic's offset order."""
        ...

    async def publish_many(
        self, messages: Sequence[tuple[str, Any, str | None, TopicRule]]
    ) -> list[Message]:
        """Append each ``(topic, data, key, rule)`` to its topic's log (kept by the
        rule's window), in order; each message reaches ``heard`` everywhere. Raises
        BrokerUnavailable (then none was published)."""
        ...

    async def since(
        self, topic: str, since: int | None, epoch: str | None, rule: TopicRule
    ) -> Replay:
        """What a subscriber resuming after ``since`` (in ``epoch``) missed, as
        :meth:`TopicLog.since` answers it; a topic that has no log gets one, and the
        topic is pinned (see ``pin``)."""
        ...

    async def pin(self, topics: Sequence[str]) -> None:
        """Keep ``topics``, which have exact subscribers here, from being forgotten to
        make room for other topics, for ``pin_for`` seconds more. Raises
        BrokerUnavailable."""
        ...

    async def history(
        self, topic: str, since: int | None, epoch: str | None, limit: int, rule: TopicRule
    ) -> Replay:
        """As :meth:`Hub.history`."""
        ...
