"""Topic names, subscription patterns and the rules that apply to a topic.

A topic is a dotted name (``orders.1234``, ``chat.room-7``, ``ticker.BTC-USD``). A
pattern is a topic, a topic prefix ending in ``.*`` (any topic below it, at any
depth), or ``*`` for every topic. Rules (slow-consumer policy and history window)
are matched the same way, the most specific pattern winning.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_TOPIC_LENGTH",
    "InvalidTopic",
    "SlowConsumerPolicy",
    "TopicRule",
    "TopicRules",
    "check_pattern",
    "check_topic",
    "is_exact",
    "pattern_matches",
]

MAX_TOPIC_LENGTH = 200
_TOPIC = re.compile(r"[A-Za-z0-9_\-:@]+(?:\.[A-Za-z0-9_\-:@]+)*")


class InvalidTopic(ValueError):
    """A topic name or pattern that does not follow the rules above."""


class SlowConsumerPolicy(enum.Enum):
    """What happens when a subscriber's queue is full and another message arrives."""

    DISCONNECT = "disconnect"  # close it with the offset to resume from
    DROP_OLDEST = "drop_oldest"  # make room by dropping its oldest queued message
    LATEST = "latest"  # keep only the newest queued message per key (tickers)


def check_topic(topic: object) -> str:
    if not isinstance(topic, str) or len(topic) > MAX_TOPIC_LENGTH or not _TOPIC.fullmatch(topic):
        raise InvalidTopic(
            f"invalid topic {topic!r}: dot-separated names of letters, digits and _-:@, "
            f"at most {MAX_TOPIC_LENGTH} characters"
        )
    return topic


def check_pattern(pattern: object) -> str:
    if pattern == "*":
        return pattern
    if isinstance(pattern, str) and pattern.endswith(".*"):
        check_topic(pattern[:-2])
        return pattern
    return check_topic(pattern)


def is_exact(pattern: str) -> bool:
    return not pattern.endswith("*")


def pattern_matches(pattern: str, topic: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic


@dataclass(frozen=True)
class TopicRule:
    """How a set of topics behaves: ``pattern`` as above, the rest per topic.

    ``history_size`` messages younger than ``history_ttl`` seconds are kept for
    resume and ``GET .../history``; a subscriber that fell out of that window is
    told ``recovered: false``.
    """

    pattern: str = "*"
    policy: SlowConsumerPolicy = SlowConsumerPolicy.DISCONNECT
    history_size: int = 100
    history_ttl: float = 300.0

    def __post_init__(self) -> None:
        check_pattern(self.pattern)
        if self.history_size < 0 or not self.history_ttl > 0:
            raise ValueError("history_size must be >= 0 and history_ttl > 0")

    def specificity(self) -> tuple[int, int]:
        """Exact topics beat prefixes, longer prefixes beat shorter ones."""
        return (1 if is_exact(self.pattern) else 0, len(self.pattern))


class TopicRules:
    """The rule for each topic: the most specific matching one, or the default."""

    def __init__(self, rules: Iterable[TopicRule] = (), default: TopicRule | None = None) -> None:
        self.default = default or TopicRule()
        self._rules = sorted(rules, key=TopicRule.specificity, reverse=True)

    def for_topic(self, topic: str) -> TopicRule:
        for rule in self._rules:
            if pattern_matches(rule.pattern, topic):
                return rule
        return self.default
