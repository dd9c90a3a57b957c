"""The hub: topics, their logs, and their subscribers' queues, as one supervised service.

Delivery: a subscriber is an :class:`Outlet` (a WebSocket session over Canopy's own
transport), which the hub hands its queue to write without waiting, or any other
:class:`Sink`, which gets a pump task that awaits its deliveries. When each is
written is ``_offer``'s rule: at once when the hub is idle, in batches when work
queues up (docs/ARCHITECTURE.md).

Resource handling: the hub's nursery holds a sweeper (history TTLs, idle topics), a
flusher, with a broker a pinner (renews the broker's pins on the topics subscribed
to exactly here), and a pump per subscription whose sink is not an outlet.
``shutdown()`` closes every subscription with ``HUB_STOPPING`` (an outlet hears of
it at once, a pump's sink bounded by ``close_timeout``); ``run`` returns once the
last pump has ended.

Error handling: a sink that raises ends only its own subscription, logged as an
error unless it raised :class:`SubscriberGone` (a client that left is counted in
``stats()["gone"]`` and logged at debug level). Limits
(:class:`TooManyTopics`, :class:`TooManySubscriptions`) and :class:`HubClosed`
are :class:`HubError`\\s, raised to the caller that asked for too much. The topic
table is bounded like a cache (``nurseries/fanout/_topic_logs.py``): a new topic is
refused only when every topic held has an exact subscriber.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, cast

import trio
import trio.lowlevel

# Trio's one way to learn that the loop has gone idle (what the flusher waits for) is
# wait_all_tasks_blocked, which it exports from trio.testing; imported from there, it
# brings trio.testing's pytest helpers and pytest with them (6 MB) into every process
# where pytest is installed. The same function is trio._core's (checked with 0.35;
# tests/unit/nurseries/test_trio_internals.py fails if that changes). The run queue's
# length (trio.lowlevel.current_statistics) cannot stand in for it: it does not count
# the tasks of the batch being run.
from trio._core import wait_all_tasks_blocked

from ._broker import Broker, BrokerUnavailable
from ._history import Message, Opening, Presence, Replay, TopicLog
from ._hub_errors import HubClosed, HubError, TooManySubscriptions, TooManyTopics
from ._subscription import CloseReason, Outlet, Sink, SubscriberGone, Subscription
from ._topic_logs import TopicLogs
from ._topics import (
    SlowConsumerPolicy,
    TopicRule,
    TopicRules,
    check_pattern,
    check_topic,
    is_exact,
    pattern_matches,
)

__all__ = ["Hub", "Snapshot", "Version"]

# What an on-demand topic's log starts with: the topic's state, or None (see on_demand).
Snapshot = Callable[[str], Awaitable[Any]]
# Orders a topic's messages by their data, older lower (see on_demand).
Version = Callable[[Any], Any]

log = logging.getLogger("canopy.fanout")

SWEEP_SLICE = 1000  # topics the sweeper looks at between two turns of everyone else


class Hub:
    def __init__(
        self,
        rules: TopicRules | None = None,
        *,
        queue_size: int = 256,
        batch_size: int = 64,
        flush_interval: float = 0.005,
        max_topics: int = 100_000,
        max_subscriptions: int = 100_000,
        idle_topic_ttl: float = 3600.0,
        sweep_interval: float = 10.0,
        close_timeout: float = 1.0,
        broker: Broker | None = None,
    ) -> None:
        self.rules = rules or TopicRules()
        self.broker = broker
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_topics = max_topics
        self.max_subscriptions = max_subscriptions
        self.idle_topic_ttl = idle_topic_ttl
        self.sweep_interval = sweep_interval
        self.close_timeout = close_timeout
        self._exact: dict[str, dict[int, Subscription]] = {}
        # Bounded like a cache: past max_topics, the least recently used topic with no
        # exact subscriber is forgotten to make room (see _topic_logs).
        self._logs = TopicLogs(self.rules, max_topics, self._exact.__contains__)
        self._prefixes: dict[str, dict[int, Subscription]] = {}  # "orders." for orders.*, "" for *
        self._members: dict[str, dict[str, int]] = {}  # topic -> client -> subscriptions
        self._count = 0
        self._dirty: set[Subscription] = set()  # whose pumps the flusher wakes
        self._flush_due = trio.Event()
        # A message offered while this is False is written to outlets at once (see
        # _offer); it stays True until the flusher finds the loop idle.
        self._busy = False
        self._writing: set[Subscription] = set()  # woken by a broker-fed flush, not parked yet
        self._written: trio.Event | None = None  # set when the last of them parks
        self._nursery: trio.Nursery | None = None
        self._stopping = trio.Event()
        self.published = 0
        self.delivered = 0
        self.slow_disconnects = 0
        self.gone = 0  # subscriptions whose client left in the middle of a delivery
        self.unheard = 0  # published to an on-demand topic with no log: kept nowhere
        self._on_demand: list[tuple[TopicRule, Snapshot, Version]] = []  # most specific first
        self._policies: dict[str, SlowConsumerPolicy] = {}  # per topic, for heard messages
        if broker is not None:
            broker.attach(self._heard)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            sweeper, flusher, pinner = trio.CancelScope(), trio.CancelScope(), trio.CancelScope()
            nursery.start_soon(self._sweep, sweeper)
            nursery.start_soon(self._flush, flusher)
            if self.broker is not None:
                nursery.start_soon(self._pin, self.broker, pinner)
            task_status.started()
            try:
                await self._stopping.wait()
            finally:
                self._nursery = None
                sweeper.cancel()
                flusher.cancel()
                pinner.cancel()
                for sub in list(self._subscriptions()):
                    self._close(sub, CloseReason.HUB_STOPPING)

    def shutdown(self) -> None:
        self._stopping.set()

    # -- publishing --------------------------------------------------------------

    async def publish(self, topic: str, data: Any, *, key: str | None = None) -> Message:
        """Append to the topic's log and offer to every matching subscriber; never waits
        for one. With a broker, the message is offered when the broker hands it back,
        as it is on every other process."""
        (outcome,) = await self.publish_many([(topic, data, key)])
        if isinstance(outcome, HubError):
            raise outcome
        return outcome

    async def publish_many(
        self, messages: Sequence[tuple[str, Any, str | None]]
    ) -> list[Message | HubError]:
        """Publish ``(topic, data, key)`` each, in order: the message, or the HubError
        that refused that one. With a broker, the lot goes in one round trip (and a
        broker failure, BrokerUnavailable, is raised for all)."""
        for topic, _data, _key in messages:
            check_topic(topic)
        if self.broker is None:
            if len(messages) > 1:
                self._busy = True  # work has queued up: batch it (see _offer)
            return [self._publish_here(topic, data, key) for topic, data, key in messages]
        if self._nursery is None:
            raise HubClosed("the hub is not running")
        rules = self.rules.for_topic
        published = await self.broker.publish_many(
            [(topic, data, key, rules(topic)) for topic, data, key in messages]
        )
        self.published += len(published)
        return list(published)

    def _publish_here(self, topic: str, data: Any, key: str | None) -> Message | HubError:
        try:
            if (
                self._on_demand
                and self._logs.get(topic) is None
                and self._on_demand_for(topic)
                and not self._heard_by_pattern(topic)
            ):
                # Kept nowhere: whoever opens the topic later starts from its state.
                self.published += 1
                self.unheard += 1
                return Message(topic, 0, "", data, key)
            log_ = self._log(topic)
        except TooManyTopics as exc:
            return exc
        if log_.opening is not None:  # its state comes first: this follows it
            log_.opening.deferred.append((data, key))
            self.published += 1
            return Message(topic, 0, log_.epoch, data, key)
        message = log_.append(data, key)
        self.published += 1
        self._offer(message, log_.rule.policy)
        return message

    def _heard(self, message: Message) -> None:
        """A message from the broker, published by any process."""
        if self._nursery is None:
            return
        policy = self._policies.get(message.topic)
        if policy is None:
            if len(self._policies) >= self.max_topics:
                self._policies.clear()  # a cache: start again rather than grow
            policy = self._policies[message.topic] = self.rules.for_topic(message.topic).policy
        self._offer(message, policy)

    def _offer(self, message: Message, policy: SlowConsumerPolicy) -> None:
        """Queue ``message`` for every matching subscriber, and have it written.

        When the hub is idle (nothing offered since the flusher last found the loop
        idle) outlets write it at once, in this task: a lone message goes out with
        no wait. After that, until the loop goes idle, what is offered waits for the
        flusher, so a burst is written in batches, each subscriber's in one write.
        Pumps always wait for the flusher. Messages from a broker are flushed at its
        pace (see ``_flush``), never at once."""
        # Once per subscriber per message: what ``Subscription.offer`` and ``filling``
        # do on their common path (room in the queue), without the calls.
        dirty = self._dirty
        at_once = not self._busy and self.broker is None
        self._busy = True
        for sub in self._matching(message.topic):
            if sub.seen_through and sub.seen(message):
                continue
            queue = sub.queue
            if len(queue) < sub.queue_size:
                queue.append(message)
                if (at_once and sub.wakeup is None) or len(queue) * 2 >= sub.queue_size:
                    self._wake(sub)
                else:
                    dirty.add(sub)
            elif sub.offer(message, policy):
                self._wake(sub)
            else:
                self.slow_disconnects += 1
                self._close(sub, CloseReason.SLOW_CONSUMER)
        self._flush_due.set()  # to wake the pumps, or to find the loop idle again

    def _matching(self, topic: str) -> list[Subscription]:
        found = list(self._exact.get(topic, {}).values())
        if self._prefixes:
            for prefix in _prefixes(topic):
                found.extend(self._prefixes.get(prefix, {}).values())
        return found

    def on_demand(self, pattern: str, snapshot: Snapshot, version: Version) -> None:
        """Keep no log for a topic matching ``pattern`` while nobody can hear it: a
        publish to it then goes nowhere (counted as ``unheard``).

        For topics each of whose messages is one thing's whole state, which a store
        keeps: a job's, an order's. Most are never watched, and a window of each would
        hold memory for every one of them.

        A publish that a pattern's subscriber hears makes the log as for any topic:
        the message is the state. A subscriber of the topic itself opens it with
        ``await snapshot(topic)``, the state (None: none), as its first message;
        what is published while that is read follows it (its publisher is answered
        offset 0: not yet known), less what ``version``, a key on a message's data,
        says is older than the state (read after it was stored). A read that fails
        leaves offset 1 empty: a subscriber from the start is told it cannot recover."""
        check_pattern(pattern)
        if self.broker is not None:
            return  # the broker keeps every topic: a subscriber may be on any process
        self._on_demand.append((TopicRule(pattern), snapshot, version))
        self._on_demand.sort(key=lambda item: item[0].specificity(), reverse=True)

    def _on_demand_for(self, topic: str) -> tuple[Snapshot, Version] | None:
        for rule, snapshot, version in self._on_demand:
            if pattern_matches(rule.pattern, topic):
                return snapshot, version
        return None

    def _heard_by_pattern(self, topic: str) -> bool:
        prefixes = self._prefixes
        return bool(prefixes) and any(prefix in prefixes for prefix in _prefixes(topic))

    def _open(self, topic: str, snapshot: Snapshot, version: Version) -> TopicLog:
        """An on-demand topic's log, its state read in the hub's nursery (so a subscriber
        that leaves meanwhile does not leave the others waiting)."""
        assert self._nursery is not None
        log_ = self._logs.use(topic)
        log_.opening = Opening()
        self._nursery.start_soon(self._read_state, log_, snapshot, version)
        return log_

    async def _read_state(self, log_: TopicLog, snapshot: Snapshot, version: Version) -> None:
        state, read = None, False
        try:
            state = await snapshot(log_.topic)
            read = True
        except Exception:
            log.warning("could not read the state of %s", log_.topic, exc_info=True)
        finally:
            opening, log_.opening = log_.opening, None
            assert opening is not None
            deferred = opening.deferred
            if not read:
                # The state's place stays empty: whoever asks from the start is told
                # ``recovered: false`` (reload it another way), never a silent gap.
                log_.offset += 1
            elif state is not None:
                self._offer(log_.append(state), log_.rule.policy)
                deferred = [item for item in deferred if not _older(version, item[0], state)]
                self.unheard += len(opening.deferred) - len(deferred)
            for data, key in deferred:
                self._offer(log_.append(data, key), log_.rule.policy)
            opening.done.set()

    # -- subscribing -------------------------------------------------------------

    async def subscribe(
        self,
        pattern: str,
        sink: Sink | Outlet,
        *,
        since: int | None = None,
        epoch: str | None = None,
        client: str = "",
        info: Any = None,
        presence: bool = False,
    ) -> Subscription:
        """Start delivering ``pattern`` to ``sink``: first ``sink.opened``, then the
        messages missed since ``since`` (exact topics only), then live ones, with no
        gap and no duplicate between the two."""
        check_pattern(pattern)
        if self._nursery is None:
            raise HubClosed("the hub is not running")
        if self._count >= self.max_subscriptions:
            raise TooManySubscriptions(f"at most {self.max_subscriptions} subscriptions")
        exact = is_exact(pattern)
        if not exact and since is not None:
            raise ValueError("since: resuming needs an exact topic, not a pattern")
        if self.broker is None:
            log_ = self._watch(pattern) if exact else None
            # An opening log's replay waits for its state, unless the subscriber wants
            # live messages only (since=None): the log is at 0, and the state will be
            # offered live once it is read.
            opening = log_.opening if log_ is not None and since is not None else None
            replay = log_.since(since, epoch) if log_ is not None and opening is None else None
            sub = Subscription(pattern, sink, self.queue_size, client, info, presence, replay)
            self._pumped(sub)
            self._file(sub)
            if opening is not None:
                assert log_ is not None
                await self._resume(sub, _opened(log_, opening, since, epoch))
        else:
            sub = Subscription(pattern, sink, self.queue_size, client, info, presence)
            self._pumped(sub)
            self._file(sub)
            if exact:
                rule = self.rules.for_topic(pattern)
                await self._resume(sub, self.broker.since(pattern, since, epoch, rule))
        if exact and client:
            self._member(pattern, client, +1, info)
        if sub.scope is not None:
            self._nursery.start_soon(self._pump, sub)
        return sub

    async def _resume(self, sub: Subscription, replay: Awaitable[Replay]) -> None:
        """Start ``sub``, filed already, from ``replay`` (a broker's read, or an opening
        log's): a message published meanwhile is both queued live and in the replay,
        and ``sub.seen`` drops the second copy; one published before is in it. No gap,
        no duplicate."""
        try:
            sub.resume(await replay)
        except BaseException:
            self._close(sub, None)
            raise
        if self._nursery is None:
            self._close(sub, None)
            raise HubClosed("the hub stopped")

    def _watch(self, topic: str) -> TopicLog:
        """The log of ``topic``, subscribed to exactly: made, or opened on demand."""
        log_ = self._logs.get(topic)
        on_demand = self._on_demand_for(topic) if log_ is None and self._on_demand else None
        log_ = self._open(topic, *on_demand) if on_demand is not None else self._log(topic)
        log_.watched = True
        return log_

    def _pumped(self, sub: Subscription) -> None:
        """Give ``sub`` what its pump needs, unless its sink is an :class:`Outlet`."""
        if not isinstance(sub.sink, Outlet):
            sub.scope, sub.wakeup = trio.CancelScope(), trio.lowlevel.ParkingLot()
        else:
            sub.held = True  # until the outlet has sent what comes before live messages

    def _file(self, sub: Subscription) -> None:
        index, key = self._index_of(sub)
        index.setdefault(key, {})[sub.id] = sub
        self._count += 1

    def unsubscribe(self, sub: Subscription) -> None:
        self._close(sub, None)

    def took(self, sub: Subscription, items: Sequence[Any]) -> None:
        """``items`` of ``sub``'s queue handed to its sink (an :class:`Outlet`'s write,
        a pump's delivery): counted, and the subscription's resume offset moved."""
        sub.note_delivered(items)
        self.delivered += len(items)

    def presence(self, topic: str) -> list[dict[str, Any]]:
        """Clients subscribed to exactly ``topic``, each once."""
        subs = self._exact.get(check_topic(topic), {}).values()
        seen: dict[str, Any] = {}
        for sub in subs:
            if sub.client:
                seen.setdefault(sub.client, sub.info)
        return [{"client": client, "info": info} for client, info in seen.items()]

    async def history(
        self, topic: str, since: int | None = None, epoch: str | None = None, limit: int = 100
    ) -> Replay:
        """The messages after ``since`` (the first ``limit`` of them), or without
        ``since`` the latest ``limit`` in the window. A topic nobody has published to
        has the empty epoch and offset 0."""
        check_topic(topic)
        if self.broker is not None:
            rule = self.rules.for_topic(topic)
            return await self.broker.history(topic, since, epoch, limit, rule)
        log_ = self._logs.get(topic)
        if log_ is not None and log_.opening is not None:
            await log_.opening.done.wait()
        if log_ is None:
            return Replay("", 0, since is None or (since == 0 and epoch is None), [])
        if since is None:
            log_.prune()
            latest = log_.window[-limit:] if limit else []
            return Replay(log_.epoch, log_.offset, True, latest)
        replay = log_.since(since, epoch)
        return Replay(replay.epoch, replay.offset, replay.recovered, replay.messages[:limit])

    def stats(self) -> dict[str, int]:
        return {
            "topics": len(self._logs),
            "topics_evicted": self._logs.evicted + (self.broker.evicted if self.broker else 0),
            "subscriptions": self._count,
            "published": self.published,
            "delivered": self.delivered,
            "slow_disconnects": self.slow_disconnects,
            "gone": self.gone,
            "unheard": self.unheard,
        }

    def audience(self, topic: str) -> int:
        """How many subscriptions here a message to ``topic`` would reach."""
        return len(self._matching(check_topic(topic)))

    def subscriptions_by_pattern(self, limit: int = 20) -> dict[str, int]:
        """The ``limit`` topics and patterns with the most subscriptions here."""
        counts = {
            key if index is self._exact else f"{key}*": len(subs)
            for index in (self._exact, self._prefixes)
            for key, subs in index.items()
        }
        top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return dict(top)

    def subscriptions_by_namespace(self) -> dict[str, int]:
        """Subscriptions counted by their pattern's first segment (``orders`` for
        ``orders.1`` and ``orders.*``; ``*`` for ``*``)."""
        counts: dict[str, int] = {}
        for sub in self._subscriptions():
            namespace = sub.pattern.split(".", 1)[0]
            counts[namespace] = counts.get(namespace, 0) + 1
        return counts

    # -- internals ---------------------------------------------------------------

    def _log(self, topic: str) -> TopicLog:
        return self._logs.use(topic)

    def _subscriptions(self) -> Iterator[Subscription]:
        for index in (self._exact, self._prefixes):
            for subs in index.values():
                yield from subs.values()

    def _index_of(self, sub: Subscription) -> tuple[dict[str, dict[int, Subscription]], str]:
        """Where ``sub`` is filed: by its topic, or a pattern by its prefix."""
        if sub.exact:
            return self._exact, sub.pattern
        return self._prefixes, sub.pattern[:-1]

    def _member(self, topic: str, client: str, change: int, info: Any) -> None:
        members = self._members.setdefault(topic, {})
        count = members.get(client, 0) + change
        if count:
            members[client] = count
        else:
            members.pop(client, None)
            if not members:
                del self._members[topic]
        if (change > 0 and count == 1) or count == 0:
            event = Presence(topic, "join" if change > 0 else "leave", client, info)
            policy = self.rules.for_topic(topic).policy
            for sub in list(self._exact.get(topic, {}).values()):
                if not sub.presence:
                    continue
                if sub.offer(event, policy):
                    self._wake(sub)
                else:
                    self._close(sub, CloseReason.SLOW_CONSUMER)

    def _close(self, sub: Subscription, reason: CloseReason | None) -> None:
        if sub.closed:
            return
        sub.closed = True
        sub.close_reason = reason
        index, key = self._index_of(sub)
        subs = index.get(key, {})
        subs.pop(sub.id, None)
        if not subs:
            index.pop(key, None)
        self._count -= 1
        self._parking(sub)  # its pump will not park again
        if sub.scope is not None:
            sub.scope.cancel()
        elif reason is not None:
            cast(Outlet, sub.sink).ended(sub, reason)
        if sub.exact and sub.client:
            self._member(sub.pattern, sub.client, -1, sub.info)

    def _wake(self, sub: Subscription) -> None:
        """Have ``sub``'s queue delivered now: its outlet writes, or its pump runs."""
        if sub.wakeup is None:
            if not sub.held:
                cast(Outlet, sub.sink).wake(sub)
        else:
            sub.wakeup.unpark_all()

    async def _pump(self, sub: Subscription) -> None:
        assert sub.scope is not None and sub.wakeup is not None
        sink = cast(Sink, sub.sink)
        with sub.scope:
            try:
                await sink.opened(sub)
                if sub.backlog:
                    backlog, sub.backlog = sub.backlog, []
                    for start in range(0, len(backlog), self.batch_size):
                        await self._deliver(sub, backlog[start : start + self.batch_size])
                while True:
                    batch = sub.take(self.batch_size)
                    if batch:
                        await self._deliver(sub, batch)
                    else:
                        self._parking(sub)
                        await sub.wakeup.park()  # until the flusher unparks it
            except SubscriberGone as exc:
                self.gone += 1
                log.debug("subscriber %s (%s) gone: %s", sub.id, sub.pattern, exc)
            except Exception:
                log.exception("delivery to subscriber %s (%s) failed", sub.id, sub.pattern)
        self._close(sub, sub.close_reason)
        if sub.close_reason is not None:
            with trio.move_on_after(self.close_timeout):
                try:
                    await sink.closed(sub, sub.close_reason)
                except Exception:
                    log.exception("closing subscriber %s failed", sub.id)

    async def _flush(self, scope: trio.CancelScope) -> None:
        """Wake the pumps that have something queued, once the loop is idle or
        ``flush_interval`` has passed since the first of them was queued.

        A pump woken per message writes one frame per wake; a burst of publishes to
        a thousand subscribers is then a thousand wakes and writes per message. Held
        back until the publishers have had their turn, each pump writes everything
        queued in one go. When the server is not busy the loop is idle at once, so a
        lone message goes out without delay; when it is, ``flush_interval`` bounds
        the wait. (With a broker, see below.)"""
        last_flush = -math.inf
        with scope:
            while True:
                await self._flush_due.wait()
                if self.broker is not None:
                    # Messages from a broker arrive one network read at a time, and the
                    # loop may be idle between reads: waiting for idle alone would wake
                    # every pump per message. So also at most once per flush_interval
                    # (at once after a quiet spell).
                    await trio.sleep_until(last_flush + self.flush_interval)
                with trio.move_on_after(self.flush_interval):
                    await wait_all_tasks_blocked()
                last_flush = trio.current_time()
                dirty, self._dirty = self._dirty, set()
                self._flush_due = trio.Event()
                self._busy = False
                for sub in dirty:
                    if sub.wakeup is None:
                        if not (sub.closed or sub.held):
                            sub.sink.wake(sub)  # type: ignore[union-attr]  # an Outlet: writes now
                    elif sub.wakeup.unpark_all() and self.broker is not None:
                        self._writing.add(sub)
                if self._writing:
                    await self._wait_written()
                    last_flush = trio.current_time()

    async def _wait_written(self) -> None:
        """Until the pumps a broker-fed flush woke have written and parked again, for
        at most twice ``flush_interval``; the next interval starts after that.

        The broker's messages come through its client's tasks one scheduler pass at
        a time (coredis passes each through two memory streams), and a pass that
        runs a thousand woken pumps is a long one: an interval counted from the
        flush was mostly spent writing, and the next flush carried a handful of
        messages. Counted from the end of the writes it gathers what arrived at the
        broker's pace. Bounded, so a pump blocked on a full socket holds the others
        back by that much at most. (Without a broker, waiting for the loop to go
        idle already waits for the pumps.)"""
        self._written = trio.Event()
        with trio.move_on_after(2 * self.flush_interval):
            await self._written.wait()
        self._written = None
        self._writing.clear()

    def _parking(self, sub: Subscription) -> None:
        writing = self._writing
        if sub in writing:
            writing.discard(sub)
            if not writing and self._written is not None:
                self._written.set()

    async def _deliver(self, sub: Subscription, items: list[Any]) -> None:
        await cast(Sink, sub.sink).deliver(sub, items)
        self.took(sub, items)

    async def _sweep(self, scope: trio.CancelScope) -> None:
        """Every ``sweep_interval``: prune expired history, forget what nobody can ask
        for any more. A slice of topics at a time, letting every other task run in
        between: one pass over a full table would hold the loop for hundreds of
        milliseconds, and every request waiting on it with it."""
        with scope:
            while True:
                await trio.sleep(self.sweep_interval)
                topics = self._logs.topics()
                for start in range(0, len(topics), SWEEP_SLICE):
                    if start:
                        await trio.lowlevel.checkpoint()
                    self._sweep_slice(topics[start : start + SWEEP_SLICE])

    def _sweep_slice(self, topics: list[str]) -> None:
        now, exact, logs = trio.current_time(), self._exact, self._logs
        for topic in topics:
            log_ = logs.get(topic)
            if log_ is None:
                continue  # forgotten since the pass began
            log_.prune(now)
            if topic not in exact and log_.forgettable(now, self.idle_topic_ttl):
                logs.forget(topic, log_)

    async def _pin(self, broker: Broker, scope: trio.CancelScope) -> None:
        """Renew the pins of the topics subscribed to exactly here, so the broker never
        forgets one to make room while it has a subscriber (as the memory logs don't)."""
        with scope:
            while True:
                await trio.sleep(broker.pin_for / 3)
                topics = list(self._exact)
                if not topics:
                    continue
                try:
                    await broker.pin(topics)
                except BrokerUnavailable as exc:
                    log.warning("could not renew %d topics' pins: %s", len(topics), exc)


async def _opened(log_: TopicLog, opening: Opening, since: int | None, epoch: str | None) -> Replay:
    await opening.done.wait()
    return log_.since(since, epoch)


def _older(version: Version, data: Any, state: Any) -> bool:
    """Whether ``data`` is older than ``state``; kept when ``version`` cannot say (an
    app's key that raises on a message it did not expect must not end the hub)."""
    try:
        return bool(version(data) < version(state))
    except Exception:
        log.warning("could not order a message against the state", exc_info=True)
        return False


def _prefixes(topic: str) -> Iterator[str]:
    """``a.b.c`` -> ``""``, ``"a."``, ``"a.b."``: the wildcard keys that match it."""
    yield ""
    index = topic.find(".")
    while index != -1:
        yield topic[: index + 1]
        index = topic.find(".", index + 1)
