"""Putting the fan-out hub in the supervision tree, configured from the settings."""

from __future__ import annotations

from dataclasses import replace

from handlers.topics import TokenIssuer, TopicsService
from nurseries import Supervisor
from nurseries.fanout import Hub, TopicRule, TopicRules

from ._settings import Settings

__all__ = ["add_topics"]


def add_topics(services: Supervisor, settings: Settings) -> TopicsService:
    default = TopicRule(history_size=settings.history_size, history_ttl=settings.history_ttl)
    rules = [
        # A rule that names only a policy keeps the configured window.
        rule
        if rule.history_size != TopicRule.history_size
        else replace(rule, history_size=default.history_size, history_ttl=default.history_ttl)
        for rule in settings.topic_rules
    ]
    hub = Hub(TopicRules(rules, default), queue_size=settings.subscriber_queue)
    services.add("hub", hub, grace=settings.service_grace)
    issuer = TokenIssuer(
        settings.topics_secret, settings.anonymous_subscribe, settings.anonymous_publish
    )
    return TopicsService(hub, issuer, settings.ws_max_subscriptions)
