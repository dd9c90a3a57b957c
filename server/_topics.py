"""Putting the fan-out hub in the supervision tree, configured from the settings."""

from __future__ import annotations

from canopy.handlers.topics import TokenIssuer, TopicsService
from canopy.nurseries import Supervisor
from canopy.nurseries.fanout import Broker, Hub, TopicRule, TopicRules

from ._redis import RedisConnections
from ._settings import Settings

__all__ = ["add_topics"]


def add_topics(services: Supervisor, settings: Settings, redis: RedisConnections) -> TopicsService:
    """The hub, on the broker ``CANOPY_BROKER`` names (its Redis connection first)."""
    default = TopicRule(history_size=settings.history_size, history_ttl=settings.history_ttl)
    rules = [spec.rule(default) for spec in settings.topic_rules]
    broker: Broker | None = None
    if not settings.broker.startswith("memory://"):
        from canopy.nurseries.redis import RedisBroker

        connection = redis.get(settings.broker)
        # Offsets outlive every window, so a resume after a quiet spell is answered.
        idle_ttl = max([3600.0, default.history_ttl, *(rule.history_ttl for rule in rules)])
        broker = RedisBroker(
            connection,
            prefix=settings.redis_prefix,
            idle_ttl=idle_ttl,
            max_topics=settings.max_topics,
        )
    hub = Hub(
        TopicRules(rules, default),
        queue_size=settings.subscriber_queue,
        flush_interval=settings.flush_interval,
        max_topics=settings.max_topics,
        broker=broker,
    )
    services.add("hub", hub, grace=settings.service_grace)
    issuer = TokenIssuer(
        settings.topics_secret, settings.anonymous_subscribe, settings.anonymous_publish
    )
    return TopicsService(hub, issuer, settings.ws_max_subscriptions)
