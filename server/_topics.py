"""Putting the fan-out hub in the supervision tree, configured from the settings."""

from __future__ import annotations

from handlers.topics import TokenIssuer, TopicsService
from nurseries import Supervisor
from nurseries.fanout import Hub, TopicRule, TopicRules

from ._settings import Settings

__all__ = ["add_topics"]


def add_topics(services: Supervisor, settings: Settings) -> TopicsService:
    default = TopicRule(history_size=settings.history_size, history_ttl=settings.history_ttl)
    rules = [spec.rule(default) for spec in settings.topic_rules]
    hub = Hub(
        TopicRules(rules, default),
        queue_size=settings.subscriber_queue,
        flush_interval=settings.flush_interval,
    )
    services.add("hub", hub, grace=settings.service_grace)
    issuer = TokenIssuer(
        settings.topics_secret, settings.anonymous_subscribe, settings.anonymous_publish
    )
    return TopicsService(hub, issuer, settings.ws_max_subscriptions)
