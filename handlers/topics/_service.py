"""Topics as a pure-Trio service: the hub plus who may do what, for HTTP and WebSocket alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from canopy.nurseries.fanout import Hub, Message, Replay, check_topic

from ..grants import Forbidden, Grants, TokenIssuer

__all__ = ["Forbidden", "TopicsService"]


@dataclass(eq=False)
class TopicsService:
    hub: Hub
    issuer: TokenIssuer
    max_subscriptions_per_connection: int = 100
    connections: int = field(default=0, init=False)  # sessions open now

    def grants(self, token: str | None) -> Grants:
        """The token's grants, or the anonymous ones; InvalidToken if it does not verify."""
        return self.issuer.verify(token) if token else self.issuer.anonymous()

    async def publish(
        self, grants: Grants, topic: str, data: Any, key: str | None = None
    ) -> Message:
        if not grants.may_publish(check_topic(topic)):
            raise Forbidden(f"not allowed to publish to {topic}")
        return await self.hub.publish(topic, data, key=key)

    def presence(self, grants: Grants, topic: str) -> list[dict[str, Any]]:
        if not grants.may_subscribe(check_topic(topic)):
            raise Forbidden(f"not allowed to see {topic}")
        return self.hub.presence(topic)

    async def history(
        self, grants: Grants, topic: str, since: int | None, epoch: str | None, limit: int
    ) -> Replay:
        if not grants.may_subscribe(check_topic(topic)):
            raise Forbidden(f"not allowed to read {topic}")
        return await self.hub.history(topic, since, epoch, limit)
