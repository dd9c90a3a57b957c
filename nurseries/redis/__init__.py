"""Redis behind the job store and the fan-out broker, through coredis.

Imported on its own (``import canopy.nurseries.redis``), not by ``nurseries``: coredis is
slow to import, which a deployment on SQLite need not pay.
"""

from ._broker import RedisBroker
from ._connection import RedisConnection, RedisUnavailable, client_for_url, redis_supervisor
from ._job_store import RedisJobStore

__all__ = [
    "RedisBroker",
    "RedisConnection",
    "RedisJobStore",
    "RedisUnavailable",
    "client_for_url",
    "redis_supervisor",
]
