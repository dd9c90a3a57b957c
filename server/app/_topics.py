"""Putting the fan-out hub in the supervision tree: the app's topic rules, and the
operator's settings over them."""

from __future__ import annotations

from collections.abc import Sequence

from canopy.handlers.topics import TokenIssuer, TopicsService
from canopy.nurseries import Supervisor
from canopy.nurseries.fanout import Broker, Hub, TopicRule, TopicRules

from ..config._settings import Settings
from ._declared import TopicDecl
from ._redis import RedisConnections

__all__ = ["JOB_TOPICS", "add_topics", "anonymous_operations"]

JOB_TOPICS = "jobs.*"


def add_topics(
    services: Supervisor,
    settings: Settings,
    redis: RedisConnections,
    declared: Sequence[TopicDecl],
    opened: Sequence[str] = (),
) -> TopicsService:
    """The hub, on the broker ``CANOPY_BROKER`` names (its Redis connection first).

    A pattern the operator's ``CANOPY_TOPIC_RULES`` names takes their rule in place of
    the app's; ``CANOPY_ANONYMOUS_*``, when set, replace what the app opened to anyone."""
    default = TopicRule(history_size=settings.history_size, history_ttl=settings.history_ttl)
    operators = [spec.rule(default) for spec in settings.topic_rules]
    overridden = {rule.pattern for rule in operators}
    rules = [
        decl.with_defaults(default) for decl in declared if decl.rule.pattern not in overridden
    ] + operators
    if JOB_TOPICS not in {rule.pattern for rule in rules}:
        # One topic per job: a process running many holds about its rate of jobs times
        # this TTL of them, and the job's state outlives its events in the store.
        rules.append(
            TopicRule(
                JOB_TOPICS, history_size=default.history_size, history_ttl=settings.job_events_ttl
            )
        )
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
    for decl in declared:
        if decl.on_demand is not None:
            hub.on_demand(decl.rule.pattern, *decl.on_demand)
    services.add("hub", hub, grace=settings.service_grace)
    subscribe = settings.anonymous_subscribe
    if subscribe is None:
        subscribe = tuple(d.rule.pattern for d in declared if d.subscribe == "anyone")
    publish = settings.anonymous_publish
    if publish is None:
        publish = tuple(d.rule.pattern for d in declared if d.publish == "anyone")
    operations = anonymous_operations(settings, opened)
    issuer = TokenIssuer(
        settings.topics_secret, subscribe, publish, anonymous_operations=operations
    )
    return TopicsService(hub, issuer, settings.ws_max_subscriptions)


def anonymous_operations(settings: Settings, opened: Sequence[str]) -> tuple[str, ...]:
    """What anyone may do as an operator: ``CANOPY_ANONYMOUS_OPERATIONS`` when it is
    set, else what the app ``opened`` (``app.allow_anonymous``)."""
    if settings.anonymous_operations is not None:
        return settings.anonymous_operations
    return tuple(opened)
