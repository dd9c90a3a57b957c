"""Message fan-out, pure Trio: topics, bounded subscribers, history and resume.

Publish once, deliver to many: :class:`Hub` is a supervised service whose nursery
holds one pump per subscription. Each subscriber has a bounded queue and each topic
a :class:`SlowConsumerPolicy`, so a slow subscriber never slows the others or grows
memory. Offsets and epochs let a subscriber that reconnects resume exactly where it
left off, or be told plainly (``recovered=False``) that it cannot.
"""

from ._broker import Broker, BrokerUnavailable
from ._history import Message, Presence, Replay, TopicLog
from ._hub import Hub, Snapshot, Version
from ._hub_errors import HubClosed, HubError, TooManySubscriptions, TooManyTopics
from ._relay import RelayBusy, RelayClient, RelayListener, RelayUnavailable
from ._subscription import CloseReason, Item, Outlet, Sink, SubscriberGone, Subscription
from ._topics import (
    MAX_TOPIC_LENGTH,
    InvalidTopic,
    SlowConsumerPolicy,
    TopicRule,
    TopicRules,
    check_pattern,
    check_topic,
    pattern_matches,
)

__all__ = [
    "MAX_TOPIC_LENGTH",
    "Broker",
    "BrokerUnavailable",
    "CloseReason",
    "Hub",
    "HubClosed",
    "HubError",
    "InvalidTopic",
    "Item",
    "Message",
    "Outlet",
    "Presence",
    "RelayBusy",
    "RelayClient",
    "RelayListener",
    "RelayUnavailable",
    "Replay",
    "Sink",
    "SlowConsumerPolicy",
    "Snapshot",
    "SubscriberGone",
    "Subscription",
    "TooManySubscriptions",
    "TooManyTopics",
    "TopicLog",
    "TopicRule",
    "TopicRules",
    "Version",
    "check_pattern",
    "check_topic",
    "pattern_matches",
]
