"""Messages and each topic's log: offsets, the epoch and the history window.

A topic's offsets count up from 1 with no gaps. The epoch names one lifetime of
that sequence: when the log is lost (the process restarted, or an idle topic was
forgotten) the next log gets a new epoch and offsets start again, so a client that
resumes with an old ``(epoch, offset)`` learns that it cannot recover instead of
silently receiving the wrong messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from .._ids import random_hex
from ._topics import TopicRule

__all__ = ["Message", "Opening", "Presence", "Replay", "TopicLog", "new_epoch"]

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


class Opening:
    """An on-demand topic's new log while the topic's state, its first message, is
    read (``Hub.on_demand``): what is published meanwhile waits here to come after it,
    and subscribers wait for ``done``."""

    __slots__ = ("deferred", "done")

    def __init__(self) -> None:
        self.deferred: list[tuple[Any, str | None]] = []
        self.done = trio.Event()


class TopicLog:
    """One topic's offsets, epoch and history window.

    Slotted, and the window a list: a busy process holds tens of thousands of logs,
    most of them a job's or an order's with two or three messages, where a ``deque``
    alone costs about 600 bytes. Trimming a list's front is a move of at most
    ``history_size`` pointers."""

    __slots__ = ("epoch", "last_active", "offset", "opening", "rule", "topic", "watched", "window")

    def __init__(self, topic: str, rule: TopicRule, epoch: str | None = None) -> None:
        self.topic = topic
        self.rule = rule
        self.epoch = epoch or new_epoch()
        self.offset = 0
        self.window: list[Message] = []
        self.last_active = trio.current_time()
        # Someone subscribed to exactly this topic once: its offsets then outlive the
        # window (for a resume after a quiet spell); a topic nobody ever watched is
        # forgotten once its window is empty.
        self.watched = False
        self.opening: Opening | None = None  # see Opening

    def append(self, data: Any, key: str | None = None) -> Message:
        now = trio.current_time()
        self.offset += 1
        rule = self.rule
        message = Message(
            self.topic, self.offset, self.epoch, data, key, expires=now + rule.history_ttl
        )
        if rule.history_size:
            window = self.window
            window.append(message)
            if len(window) > rule.history_size or window[0].expires <= now:
                self.prune(now)
        self.last_active = now
        return message

    def prune(self, now: float | None = None) -> None:
        """Drop the messages past their time, and those over the window's size."""
        if now is None:
            now = trio.current_time()
        window = self.window
        stale = max(len(window) - self.rule.history_size, 0)
        while stale < len(window) and window[stale].expires <= now:
            stale += 1
        if stale:
            del window[:stale]

    def forgettable(self, now: float, idle_ttl: float) -> bool:
        """Whether the log holds nothing anyone could still ask for: an empty window,
        and idle for ``idle_ttl`` if it was ever watched, else for its history's TTL.
        (Whether it has a subscriber now, the hub knows.)"""
        if self.window:
            return False
        idle = now - self.last_active
        return idle > idle_ttl if self.watched else idle > self.rule.history_ttl

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
        return Replay(self.epoch, self.offset, True, self.window[since - first + 1 :])
