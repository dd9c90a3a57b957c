"""Messages and each topic's log: offsets, the epoch and the history window.

A topic's offsets count up from 1 with no gaps. The epoch names one lifetime of
that sequence: when the log is lost (the process restarted, or an idle topic was
forgotten) the next log gets a new epoch and offsets start again, so a client that
resumes with an old ``(epoch, offset)`` learns that it cannot recover instead of
silently receiving the wrong messages.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import trio

from .._ids import random_hex
from ._topics import TopicRule

__all__ = ["Message", "Presence", "Replay", "TopicLog", "new_epoch"]

T = TypeVar("T")


def new_epoch() -> str:
    return random_hex(4)


@dataclass(eq=False, slots=True)
class Message:
    topic: str
    offset: int
    epoch: str
    data: Any
    key: str | None = None
    time: float = field(default_factory=time.time)
    expires: float = 0.0
    _wire: Any = None

    def wire(self, encode: Callable[[Message], T]) -> T:
        """``encode(self)``, computed once: a broadcast to a thousand subscribers
        encodes the message once, not a thousand times. One encoding per process."""
        if self._wire is None:
            self._wire = encode(self)
        return self._wire

    @property
    def conflation_key(self) -> str:
        return self.key if self.key is not None else self.topic

    def to_dict(self) -> dict[str, Any]:
        body = {"topic": self.topic, "offset": self.offset, "epoch": self.epoch}
        body["data"] = self.data
        if self.key is not None:
            body["key"] = self.key
        body["time"] = self.time
        return body


@dataclass(frozen=True, slots=True)
class Presence:
    """A subscriber joined or left a topic (delivered to ``presence=True`` subscribers)."""

    topic: str
    event: str  # "join" or "leave"
    client: str
    info: Any = None


@dataclass(frozen=True)
class Replay:
    """What a subscriber asking for ``since`` gets: the missed messages, or not recovered."""

    epoch: str
    offset: int
    recovered: bool
    messages: list[Message]


class TopicLog:
    def __init__(self, topic: str, rule: TopicRule, epoch: str | None = None) -> None:
        self.topic = topic
        self.rule = rule
        self.epoch = epoch or new_epoch()
        self.offset = 0
        self.window: deque[Message] = deque()
        self.last_active = trio.current_time()

    def append(self, data: Any, key: str | None = None) -> Message:
        now = trio.current_time()
        self.offset += 1
        message = Message(
            self.topic, self.offset, self.epoch, data, key, expires=now + self.rule.history_ttl
        )
        if self.rule.history_size:
            self.window.append(message)
            if len(self.window) > self.rule.history_size:
                self.window.popleft()
        self.last_active = now
        return message

    def prune(self) -> None:
        now = trio.current_time()
        while self.window and self.window[0].expires <= now:
            self.window.popleft()

    def since(self, since: int | None, epoch: str | None) -> Replay:
        """Messages after ``since``, if every one of them is still in the window.

        ``epoch`` may be left out only with ``since=0`` ("from the start of the current
        epoch"); any other offset means nothing without the epoch it belongs to.
        """
        self.prune()
        if since is None:
            return Replay(self.epoch, self.offset, True, [])
        same_epoch = epoch == self.epoch or (epoch is None and since == 0)
        first = self.window[0].offset if self.window else self.offset + 1
        if not same_epoch or since > self.offset or since < first - 1:
            return Replay(self.epoch, self.offset, False, [])
        # Offsets in the window are contiguous, so the missed ones start at a known index.
        missed = list(islice(self.window, since - first + 1, None))
        return Replay(self.epoch, self.offset, True, missed)
