"""The hub's topic logs: a table bounded like a cache, not like a quota.

Orders and jobs each publish to a topic of their own (``orders.{id}``, ``jobs.{id}``),
so a busy process makes new topics far faster than an idle one is forgotten (an hour).
When the table was a quota, a process that had run 100,000 jobs within the hour
refused every new topic until the oldest aged out: job events, order events, a new
support conversation, a client's first publish.

Now, when the table is full, the least recently used topic that nobody subscribes to
exactly is forgotten to make room. Its history goes with it, and the next log of that
name starts a new epoch, so a client resuming it with its old ``(epoch, offset)`` is
told that it cannot recover: never a silent gap (docs/PROTOCOL.md). A topic with an
exact subscriber is never forgotten; only when every topic in the table has one is a
new topic refused (:class:`TooManyTopics`).

"Used" means published to, or subscribed to exactly: the table keeps that order, so
room is found from its front in constant time (a topic found there with a subscriber
is moved to the back, as in use).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ._history import TopicLog
from ._hub_errors import TooManyTopics
from ._topics import TopicRules

__all__ = ["TopicLogs"]


class TopicLogs:
    def __init__(self, rules: TopicRules, limit: int, pinned: Callable[[str], bool]) -> None:
        """``pinned(topic)``: whether the topic has an exact subscriber (not to forget)."""
        self.rules = rules
        self.limit = limit
        self.evicted = 0  # topics forgotten to make room, so far
        self._pinned = pinned
        self._logs: OrderedDict[str, TopicLog] = OrderedDict()

    def __len__(self) -> int:
        return len(self._logs)

    def get(self, topic: str) -> TopicLog | None:
        """The topic's log if it has one; a look, not a use."""
        return self._logs.get(topic)

    def use(self, topic: str) -> TopicLog:
        """The topic's log, made if it has none (making room if the table is full)."""
        logs = self._logs
        found = logs.get(topic)
        if found is not None:
            logs.move_to_end(topic)
            return found
        if len(logs) >= self.limit:
            self._make_room()
        made = logs[topic] = TopicLog(topic, self.rules.for_topic(topic))
        return made

    def topics(self) -> list[str]:
        """Every topic, least recently used first (for the sweeper)."""
        return list(self._logs)

    def forget(self, topic: str, log: TopicLog) -> None:
        """Forget ``topic`` if ``log`` is still its log."""
        if self._logs.get(topic) is log:
            del self._logs[topic]

    def _make_room(self) -> None:
        logs = self._logs
        for _ in range(len(logs)):
            topic = next(iter(logs))
            if not self._pinned(topic):
                del logs[topic]
                self.evicted += 1
                return
            logs.move_to_end(topic)
        raise TooManyTopics(f"at most {self.limit} topics, and every one has a subscriber")
