"""The fan-out broker for several processes: topic logs in Redis Streams, messages to
every process over pub/sub.

Keys, under the same hash tag as the job store's (``{canopy}`` by default)::

    {P}:topic:<topic>    hash: epoch, offset (the last one given)
    {P}:log:<topic>      stream of the history window; entry id <offset>-0, fields
                         d (the data as JSON text), k (the conflation key), t (time)
    {P}:topics           sorted set: the topics kept, by their last use's time
    {P}:pinned           sorted set: topics with an exact subscriber somewhere, by
                         when that pin lapses unless renewed
    {P}:fanout           pub/sub channel: one message per pub/sub message
    {P}:fanout:batch     pub/sub channel: a JSON array of the messages of one script

A publish is one script: the next offset, XADD with MAXLEN (the window's size), and
PUBLISH, atomically, so every process hears each topic's messages in offset order; a
batch of publishes is one script too (a WebSocket client that sends many publishes
at once gets them written in one round trip, in its order).

A script's messages go out as one pub/sub message on ``{P}:fanout:batch``: each
process then decodes and offers them together, and a flush carries them all, where
one message at a time came back through coredis's pub/sub a scheduler pass apart,
and each flush carried few messages. Canopy before this change listens on
``{P}:fanout`` alone, so during a rolling upgrade the script publishes message by
message there as long as any listener hears ``{P}:fanout`` but not
``{P}:fanout:batch`` (``PUBSUB NUMSUB``, in the script itself: the choice and the
publish are one atomic step). This process listens on both channels through one
subscription, so it hears them in publish order. On Redis Cluster ``PUBSUB NUMSUB``
counts one node's subscribers only, so there the script always publishes message by
message.
A resume reads the topic's epoch, offset and the missed entries in one script too.

Orders and jobs each publish to a topic of their own, so Redis would hold millions of
topics if each lived an hour (a few messages' stream is 4.7 KB: Redis allocates 4 KB
for a stream's first node). So a topic's keys are bounded three ways:

- the log expires after its rule's ``history_ttl`` without a publish: by then every
  entry in it is too old to replay anyway;
- the offsets (``{P}:topic:<topic>``) expire after ``idle_ttl`` without a publish, so a
  client idle longer than the window still hears that it missed nothing;
- ``{P}:topics``, a sorted set of topics by their last use, holds at most
  ``max_topics``: each publish forgets the least recently used topics past it, both
  keys, and that topic's next publish starts a new epoch. "Used" is published to, or
  subscribed to exactly, as on the memory broker; and as there, a topic with an exact
  subscriber is never forgotten. Redis cannot see who subscribes where, so each hub
  pins its exactly subscribed topics in ``{P}:pinned`` when it subscribes and renews
  the pins every third of ``pin_for`` (30 s): a process that dies lets its pins lapse.
  A pinned topic met at the front of the index is moved to its back. When every topic
  kept is pinned, the index stays over ``max_topics`` (a publish is never refused).

A log that expired or was lost while the offsets stayed keeps its epoch: the offsets
still count on, and a resume is recovered only if its first missed message is in the
log (the same check as the memory broker's window), so a gap is reported, never
replayed around. Offsets that are gone (forgotten, expired, flushed, a Redis restarted
without persistence) start a new epoch, so a client that resumes learns of the loss
(``recovered: false``).

The data is never decoded by Lua (cjson would round numbers); it travels as the
JSON text Python wrote.

Every process receives every message, whether it has subscribers for the topic or
not: one channel is one subscription per process, and a hub ignores what no
subscriber matches. That costs each process a JSON decode per message.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import coredis.exceptions

from ..fanout import BrokerUnavailable, Message, Replay, TopicRule
from ..fanout._history import new_epoch  # what an epoch is: one definition for both
from ._connection import RedisConnection, RedisUnavailable

__all__ = ["RedisBroker"]

log = logging.getLogger("canopy.fanout.redis")

_encode = json.JSONEncoder(separators=(",", ":")).encode

# ARGV: prefix, idle ttl, batches allowed ('1' or '0'), max topics, time, then per
# message: topic, new epoch, history size, history ttl, key ('' for none), data (JSON
# text) -> epoch, offset per message, then how many topics were forgotten
_PUBLISH = """
local P, ttl, limit, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4]), ARGV[5]
local single, batch, index = P .. ':fanout', P .. ':fanout:batch', P .. ':topics'
local batched = false
if ARGV[3] == '1' then
    local counts = redis.call('PUBSUB', 'NUMSUB', single, batch)
    batched = counts[2] <= counts[4]  -- nobody hears singles only: an older Canopy
end
local out, parts = {}, {}
for i = 6, #ARGV, 6 do
    local topic, new_epoch, size = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
    local window, key, data = tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5]
    local meta, log = P .. ':topic:' .. topic, P .. ':log:' .. topic
    local epoch = redis.call('HGET', meta, 'epoch')
    if not epoch then
        epoch = new_epoch  -- a new lifetime: the offsets were never kept, or are gone
        redis.call('DEL', log)
        redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
    end
    local offset = redis.call('HINCRBY', meta, 'offset', 1)
    if size > 0 then
        redis.call('XADD', log, 'MAXLEN', size, offset .. '-0', 'd', data, 'k', key, 't', now)
        redis.call('EXPIRE', log, window)
    end
    redis.call('EXPIRE', meta, math.max(ttl, window))
    redis.call('ZADD', index, now, topic)
    local k = 'null'
    if key ~= '' then k = cjson.encode(key) end
    local body = '{"t":' .. cjson.encode(topic) .. ',"o":' .. offset
        .. ',"e":"' .. epoch .. '","ts":' .. now .. ',"k":' .. k .. ',"d":' .. data .. '}'
    if batched then
        parts[#parts + 1] = body
    else
        redis.call('PUBLISH', single, body)
    end
    out[#out + 1] = epoch
    out[#out + 1] = offset
end
if #parts > 0 then
    redis.call('PUBLISH', batch, '[' .. table.concat(parts, ',') .. ']')
end
-- The index: drop the topics whose offsets expired, then forget the least recently
-- used past the limit, sparing the pinned (at most 100 looked at a call, should the
-- limit have been lowered or most topics be pinned).
local pinned = P .. ':pinned'
redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. (tonumber(now) - ttl))
redis.call('EXPIRE', index, ttl)
redis.call('ZREMRANGEBYSCORE', pinned, '-inf', '(' .. now)  -- lapsed pins
local forgotten = 0
local over = redis.call('ZCARD', index) - limit
local looks = math.min(over + 4, 100)  -- a few pinned ones may be met first
while over > 0 and looks > 0 do
    looks = looks - 1
    local victim = redis.call('ZPOPMIN', index)[1]
    if redis.call('ZSCORE', pinned, victim) then
        redis.call('ZADD', index, now, victim)  -- subscribed somewhere: in use
    else
        redis.call('DEL', P .. ':topic:' .. victim, P .. ':log:' .. victim)
        forgotten = forgotten + 1
        over = over - 1
    end
end
out[#out + 1] = forgotten
return out
"""

# ARGV: prefix, topic, new epoch ('' = do not create), from ('-' = the newest), count,
# ttl, time, pinned until ('' = do not pin: a read, not a subscription)
_READ = """
local P, topic, new_epoch = ARGV[1], ARGV[2], ARGV[3]
local meta, log = P .. ':topic:' .. topic, P .. ':log:' .. topic
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
    if new_epoch == '' then return {'', '0', {}} end
    epoch = new_epoch
    redis.call('HSET', meta, 'epoch', epoch, 'offset', 0)
    redis.call('EXPIRE', meta, ARGV[6])
end
if ARGV[8] ~= '' then  -- an exact subscriber: the topic is in use, and kept
    redis.call('ZADD', P .. ':pinned', ARGV[8], topic)
    redis.call('EXPIRE', P .. ':pinned', ARGV[6])
    redis.call('ZADD', P .. ':topics', ARGV[7], topic)  -- bounded by the next publish
end
local offset = redis.call('HGET', meta, 'offset')
local entries
if ARGV[4] == '-' then
    entries = redis.call('XREVRANGE', log, '+', '-', 'COUNT', ARGV[5])
else
    entries = redis.call('XRANGE', log, ARGV[4] .. '-0', '+', 'COUNT', ARGV[5])
end
return {epoch, offset, entries}
"""

# ARGV: prefix, time, pinned until, ttl, then topics. A pinned topic's offsets live on
# (as its subscribers may resume) and it moves to the back of the index.
_PIN = """
local P, now, until_, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local pinned, index = P .. ':pinned', P .. ':topics'
for i = 5, #ARGV do
    local topic = ARGV[i]
    redis.call('ZADD', pinned, until_, topic)
    if redis.call('EXPIRE', P .. ':topic:' .. topic, ttl) == 1 then
        redis.call('ZADD', index, now, topic)
    end
end
redis.call('EXPIRE', pinned, ttl)
redis.call('EXPIRE', index, ttl)
return #ARGV - 4
"""

PIN_BATCH = 1000  # topics per pinning script, so one call never holds Redis long


class RedisBroker:
    def __init__(
        self,
        connection: RedisConnection,
        *,
        prefix: str = "canopy",
        idle_ttl: float = 3600.0,
        max_topics: int = 100_000,
        pin_for: float = 30.0,
    ) -> None:
        """``idle_ttl``: seconds a topic's offsets outlive its last publish;
        ``max_topics``: topics kept in Redis, by every process together; ``pin_for``:
        seconds a subscribed topic stays pinned unless its hub renews the pin."""
        if not prefix or any(c in prefix for c in "{}"):
            raise ValueError("prefix must be non-empty, without braces")
        if max_topics < 1:
            raise ValueError("max_topics must be at least 1")
        self.connection = connection
        self.prefix = "{" + prefix + "}"
        self.idle_ttl = _seconds(idle_ttl)
        self.max_topics = max_topics
        self.pin_for = pin_for
        self.evicted = 0  # topics this process's publishes forgot to make room
        self._route = [f"{self.prefix}:fanout"]
        # See the module's docstring: PUBSUB NUMSUB answers for one node of a cluster.
        self._batches = "0" if connection.cluster else "1"
        self._scripts: dict[str, Any] = {}
        self._scripts_for = -1
        self._heard: list[Callable[[Message], None]] = []
        connection.listen(
            {
                f"{self.prefix}:fanout": self._receive,
                f"{self.prefix}:fanout:batch": self._receive_batch,
            }
        )

    def attach(self, heard: Callable[[Message], None]) -> None:
        self._heard.append(heard)

    def _receive(self, raw: str) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._offer(body, raw)

    def _receive_batch(self, raw: str) -> None:
        try:
            bodies = json.loads(raw)
        except ValueError:
            bodies = None
        if not isinstance(bodies, list):
            log.warning("ignored a malformed fan-out batch: %.200r", raw)
            return
        for body in bodies:
            self._offer(body, raw)

    def _offer(self, body: Any, raw: str) -> None:
        try:
            message = Message(
                body["t"], body["o"], body["e"], body["d"], body["k"], time=body["ts"]
            )
        except (KeyError, TypeError):
            log.warning("ignored a malformed fan-out message: %.200r", raw)
            return
        for heard in self._heard:
            heard(message)

    async def _call(self, name: str, *args: Any) -> Any:
        try:
            connection = self.connection
            client = connection.client
            if self._scripts_for != connection.generation:
                self._scripts = {
                    "publish": client.register_script(_PUBLISH),
                    "read": client.register_script(_READ),
                    "pin": client.register_script(_PIN),
                }
                self._scripts_for = connection.generation
            return await self._scripts[name](keys=self._route, args=[self.prefix, *args])
        except RedisUnavailable as exc:
            raise BrokerUnavailable(str(exc)) from exc
        except (coredis.exceptions.RedisError, OSError) as exc:
            raise BrokerUnavailable(f"redis: {exc!r}") from exc

    async def publish_many(
        self, messages: Sequence[tuple[str, Any, str | None, TopicRule]]
    ) -> list[Message]:
        """One script for the lot: appended and published in this order."""
        args: list[Any] = []
        out = []
        now = time.time()
        for topic, data, key, rule in messages:
            encoded = _encode(data)  # refuse what is not JSON before the round trip
            window = _seconds(rule.history_ttl)
            args += [topic, new_epoch(), rule.history_size, window, key or "", encoded]
            out.append(Message(topic, 0, "", data, key, time=now))
        *replies, forgotten = await self._call(
            "publish", self.idle_ttl, self._batches, self.max_topics, repr(now), *args
        )
        self.evicted += int(forgotten)
        for message, epoch, offset in zip(out, replies[::2], replies[1::2], strict=True):
            message.epoch, message.offset = epoch, int(offset)
        return out

    async def pin(self, topics: Sequence[str]) -> None:
        """Keep ``topics`` (exactly subscribed here) for another ``pin_for`` seconds."""
        now = time.time()
        for first in range(0, len(topics), PIN_BATCH):
            chunk = topics[first : first + PIN_BATCH]
            await self._call("pin", repr(now), repr(now + self.pin_for), self.idle_ttl, *chunk)

    async def _read(
        self, topic: str, start: str, count: int, create: bool
    ) -> tuple[str, int, list[Message]]:
        """``create``: for a subscriber, which also pins the topic."""
        now = time.time()
        epoch, offset, entries = await self._call(
            "read",
            topic,
            new_epoch() if create else "",
            start,
            count,
            self.idle_ttl,
            repr(now),
            repr(now + self.pin_for) if create else "",
        )
        messages = []
        for entry_id, flat in entries:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            messages.append(
                Message(
                    topic,
                    int(entry_id.split("-", 1)[0]),
                    epoch,
                    json.loads(fields["d"]),
                    fields["k"] or None,
                    time=float(fields["t"]),
                )
            )
        return epoch, int(offset), messages

    async def since(
        self, topic: str, since: int | None, epoch: str | None, rule: TopicRule
    ) -> Replay:
        return await self._since(topic, since, epoch, rule, rule.history_size, create=True)

    async def _since(
        self,
        topic: str,
        since: int | None,
        epoch: str | None,
        rule: TopicRule,
        limit: int,
        *,
        create: bool,
    ) -> Replay:
        start = str((since or 0) + 1)
        current, offset, missed = await self._read(topic, start, max(limit, 1), create)
        if since is None:
            return Replay(current, offset, True, [])
        same_epoch = epoch == current or (epoch is None and since == 0)
        if not same_epoch or since > offset:
            return Replay(current, offset, False, [])
        if since == offset:
            return Replay(current, offset, True, [])
        # Recovered only if the first missed message is still in the window (by size
        # and by age); later ones then are too.
        horizon = time.time() - rule.history_ttl
        if not missed or missed[0].offset != since + 1 or missed[0].time <= horizon:
            return Replay(current, offset, False, [])
        return Replay(current, offset, True, missed[:limit])

    async def history(
        self, topic: str, since: int | None, epoch: str | None, limit: int, rule: TopicRule
    ) -> Replay:
        if since is not None:
            replay = await self._since(topic, since, epoch, rule, limit, create=False)
            if replay.epoch == "":
                return Replay("", 0, since == 0 and epoch is None, [])
            return replay
        current, offset, newest = await self._read(topic, "-", max(limit, 1), create=False)
        horizon = time.time() - rule.history_ttl
        latest = [m for m in reversed(newest) if m.time > horizon][-limit:] if limit else []
        return Replay(current, offset, True, latest)


def _seconds(ttl: float) -> int:
    """EXPIRE takes whole seconds, at least one."""
    return max(1, math.ceil(ttl))
