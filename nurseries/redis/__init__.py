"""Redis behind the job store (and, next, the fan-out broker), through coredis.

Imported on its own (``import nurseries.redis``), not by ``nurseries``: coredis takes
a third of a second to import, which a deployment on SQLite need not pay.
"""

from ._connection import RedisConnection, RedisUnavailable, client_for_url, redis_supervisor
from ._job_store import RedisJobStore

__all__ = [
    "RedisConnection",
    "RedisJobStore",
    "RedisUnavailable",
    "client_for_url",
    "redis_supervisor",
]
