"""Redis connections for the app's tree: one per URL, shared by the job store and the
fan-out broker when they name the same server.

Each connection runs under a supervisor of its own (``canopy.nurseries.redis.redis_supervisor``)
that reconnects with backoff for as long as Redis is away and reports not ready
meanwhile. It is added to the services when first asked for, so it starts before the
service that asked (the hub or the job store) and stops after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from canopy.nurseries import Supervisor

from ..config._settings import Settings

if TYPE_CHECKING:
    from canopy.nurseries.redis import RedisConnection

__all__ = ["RedisConnections"]


class RedisConnections:
    def __init__(self, services: Supervisor, settings: Settings) -> None:
        self.services = services
        self.settings = settings
        self._by_url: dict[str, RedisConnection] = {}

    def get(self, url: str) -> RedisConnection:
        connection = self._by_url.get(url)
        if connection is None:
            # Imported here: coredis is slow to import, and a SQLite deployment never needs it.
            from canopy.nurseries.redis import RedisConnection, redis_supervisor

            connection = self._by_url[url] = RedisConnection(url)
            name = "redis" if len(self._by_url) == 1 else f"redis-{len(self._by_url)}"
            self.services.add(name, redis_supervisor(connection), grace=self.settings.service_grace)
        return connection
