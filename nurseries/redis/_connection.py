"""The connection to Redis, as a supervised service.

Why a service: while Redis is unreachable the tree must say so (``/readyz`` 503,
enqueue 503) and reconnect with backoff, and the supervision tree already does
both. :meth:`RedisConnection.run` opens a client, checks it with PING every
``check_interval`` seconds, and raises :class:`RedisUnavailable` when a check
fails; the supervisor holding it (see :func:`redis_supervisor`) restarts it with
exponential backoff, for as long as it takes, and reports it ``restarting``
meanwhile. What uses the connection (the job store, the fan-out broker) asks for
:attr:`RedisConnection.client` at each call, and gets RedisUnavailable while there
is none.

URLs, as coredis reads them:

    redis://[:password@]host:port/db      one server (rediss:// for TLS, unix:// too)
    redis+cluster://host:port              Redis Cluster, found from one node
    redis+sentinel://host:port[,host:port]/service[/db]   the primary Sentinel names
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.connection import TCPLocation

from .._restart import Backoff, RestartIntensity
from .._supervisor import Supervisor

__all__ = ["RedisConnection", "RedisUnavailable", "client_for_url", "redis_supervisor"]

log = logging.getLogger("canopy.redis")

SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "redis+sentinel")


class RedisUnavailable(Exception):
    """Redis cannot be reached now; the connection service is reconnecting."""


def client_for_url(url: str, **options: Any) -> Any:
    """A coredis client for ``url`` (see the module docstring), replies decoded as str."""
    parts = urlsplit(url)
    options = {"decode_responses": True, **options}
    if parts.password:
        options["password"] = unquote(parts.password)
    if parts.scheme == "redis+cluster":
        nodes = _locations(parts.netloc, 6379)
        return coredis.RedisCluster(startup_nodes=nodes, **options)
    if parts.scheme == "redis+sentinel":
        hosts = _locations(parts.netloc, 26379)
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("a redis+sentinel:// URL names its service: .../service[/db]")
        if len(path) > 1:
            options["db"] = int(path[1])
        sentinel = coredis.Sentinel(hosts, decode_responses=True)
        return sentinel.primary_for(path[0], **options)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"not a Redis URL: {url!r} (use one of {', '.join(SCHEMES)})")
    options.pop("password", None)  # from_url reads it from the URL itself
    return coredis.Redis.from_url(url, **options)


def _locations(netloc: str, default_port: int) -> list[TCPLocation]:
    """``[user:password@]host:port,host:port`` -> locations."""
    locations = []
    for location in netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = location.rpartition(":")
        if not host:
            host, port = port, ""
        locations.append(TCPLocation(host or "127.0.0.1", int(port or default_port)))
    return locations


class RedisConnection:
    def __init__(
        self,
        url: str,
        *,
        check_interval: float = 1.0,
        timeout: float = 2.0,
    ) -> None:
        client_for_url(url)  # refuse a bad URL now, not at the first restart
        self.url = url
        self.cluster = urlsplit(url).scheme == "redis+cluster"
        self.check_interval = check_interval
        self.timeout = timeout
        self._client: Any = None
        self.generation = 0  # counts connections made: users re-prepare on a new one
        self._listeners: list[dict[str, Callable[[str], None]]] = []
        self._nursery: trio.Nursery | None = None  # while connected

    def listen(self, callbacks: Mapping[str, Callable[[str], None]]) -> None:
        """Call each channel's callback with each message published to it (it must not
        block), from now on and on every reconnection. Pub/sub is at-most-once: a
        message published while the connection is down is not heard.

        One subscription (one connection to Redis) for all of ``callbacks``' channels,
        so their messages arrive in the order Redis published them, across channels
        too. The subscription is a task in the connection's nursery, inside the
        client's lifetime, so it always ends before the client it uses is closed.
        """
        channels = dict(callbacks)
        self._listeners.append(channels)
        if self._nursery is not None:
            self._nursery.start_soon(self._subscribe, self._client, channels)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RedisUnavailable(f"redis at {self.url} is not connected")
        return self._client

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        client = client_for_url(self.url, connect_timeout=self.timeout)
        try:
            async with client:
                await self._check(client)
                self._client = client
                self.generation += 1
                log.info("connected to redis at %s", self.url)
                async with trio.open_nursery() as nursery:
                    for channels in self._listeners:
                        await nursery.start(self._subscribe, client, channels)
                    self._nursery = nursery
                    task_status.started()
                    while True:
                        await trio.sleep(self.check_interval)
                        await self._check(client)
        except (coredis.exceptions.RedisError, OSError) as exc:
            # The client's context ends with the error: its pool may raise too.
            raise RedisUnavailable(f"redis at {self.url}: {exc}") from exc
        finally:
            self._client = None
            self._nursery = None

    async def _subscribe(
        self,
        client: Any,
        channels: dict[str, Callable[[str], None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        pubsub = client.pubsub(channels=list(channels), ignore_subscribe_messages=True)
        try:
            async with pubsub as sub:
                task_status.started()
                async for message in sub:
                    if message["type"] == "message":
                        channels[message["channel"]](message["data"])
        except* anyio.ClosedResourceError as closed:
            # coredis 6.9, when cancelled, sends UNSUBSCRIBE on a connection its own
            # cancelled task group has closed (coredis issue #282 is of that family).
            # Cancelled, that is noise; otherwise the connection was lost.
            await trio.lowlevel.checkpoint_if_cancelled()
            raise RedisUnavailable(f"redis at {self.url}: subscription lost") from closed

    async def _check(self, client: Any) -> None:
        try:
            with trio.fail_after(self.timeout):
                await client.ping()
        except (coredis.exceptions.RedisError, OSError, trio.TooSlowError) as exc:
            log.warning("redis at %s is unreachable: %r", self.url, exc)
            raise RedisUnavailable(f"redis at {self.url}: {exc!r}") from exc


def redis_supervisor(connection: RedisConnection, *, grace: float = 1.0) -> Supervisor:
    """A supervisor for ``connection`` alone, restarting it as long as Redis is away
    (every restart counts against a supervisor's intensity; this one's is unbounded),
    with backoff growing to 5 s. Its status is not ready while it reconnects."""
    supervisor = Supervisor(
        "redis",
        intensity=RestartIntensity(max_restarts=1_000_000_000, window=60.0),
        backoff=Backoff(initial=0.1, factor=2.0, maximum=5.0),
    )
    supervisor.add("connection", connection, grace=grace)
    return supervisor
