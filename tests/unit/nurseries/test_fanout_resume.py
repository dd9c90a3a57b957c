"""A Hypothesis state machine: random publishes, stalls, disconnects, resumes and hub
restarts. Every client's delivered offsets are gap-free and duplicate-free, except
right after a resume the hub explicitly reported as ``recovered: false``.

The hub runs in a Trio loop on a helper thread so that each rule is one step against
the same live hub.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
import trio.lowlevel
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from canopy.nurseries.fanout import Hub, Subscription, TopicRule, TopicRules
from tests.fanout_sinks import RecordingSink, settle

TOPIC = "chat.room"


class LoopThread:
    def __init__(self) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        self._ready.wait()

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._done = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._done.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def settle(self) -> None:
        self.run(settle)

    def stop(self) -> None:
        trio.from_thread.run_sync(self._done.set, trio_token=self.token)
        self._thread.join(5)


@dataclass
class Client:
    epoch: str | None = None
    last: int = 0  # the last offset this client has seen
    sink: RecordingSink | None = None
    sub: Subscription | None = None
    seen: int = 0  # how many of sink.items were already checked
    gap_allowed: bool = True  # the first message of an unrecovered session may jump
    errors: list[str] = field(default_factory=list)


class HubMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = LoopThread()
        self.hub = self._start_hub()
        self.clients: list[Client] = []

    def _start_hub(self) -> Hub:
        hub = Hub(TopicRules(default=TopicRule(history_size=6)), queue_size=3, batch_size=2)
        self.loop.run(self.loop.nursery.start, hub.run)
        return hub

    def _connect(self, client: Client, since: int | None) -> None:
        client.sink = RecordingSink()
        client.seen = 0
        epoch = client.epoch if since is not None else None
        client.sub = self.loop.run(
            partial(self.hub.subscribe, TOPIC, client.sink, since=since, epoch=epoch)
        )
        replay = client.sub.replay
        assert replay is not None
        if not replay.recovered or since is None:
            client.gap_allowed = True
        client.epoch = replay.epoch

    @rule()
    def new_client(self) -> None:
        client = Client()
        self._connect(client, None)
        self.clients.append(client)

    @rule(count=st.integers(1, 8), pause=st.booleans())
    def publish(self, count: int, pause: bool) -> None:
        async def burst() -> None:
            for n in range(count):
                await self.hub.publish(TOPIC, n)
                if pause:
                    await trio.lowlevel.checkpoint()

        self.loop.run(burst)

    @rule()
    def settle(self) -> None:
        self.loop.settle()

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def stall_or_resume_reading(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self.clients))
        if client.sink is not None:
            sink = client.sink
            self.loop.run(_async(sink.resume if not sink.flowing.is_set() else sink.stall))

    @precondition(lambda self: self.clients)
    @rule(data=st.data())
    def disconnect_and_resume(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self.clients))
        self.loop.settle()
        self._check(client)
        if client.sub is not None and not client.sub.closed:
            self.loop.run(_async(self.hub.unsubscribe, client.sub))
        self._connect(client, client.last)

    @rule()
    def restart_hub(self) -> None:
        self.loop.run(_async(self.hub.shutdown))
        self.loop.settle()
        for client in self.clients:
            self._check(client)
        self.hub = self._start_hub()
        for client in self.clients:
            self._connect(client, client.last)

    def _check(self, client: Client) -> None:
        assert client.sink is not None
        for message in client.sink.messages[client.seen :]:
            expected = client.last + 1
            if client.gap_allowed:
                assert message.offset >= 1
            else:
                assert message.offset == expected, (message.offset, expected)
            client.gap_allowed = False
            client.last = message.offset
        client.seen = len(client.sink.messages)

    @invariant()
    def every_delivery_is_gap_free_or_unrecovered(self) -> None:
        for client in self.clients:
            self._check(client)

    def teardown(self) -> None:
        self.loop.run(_async(self.hub.shutdown))
        self.loop.stop()


def _async(fn: Callable[..., Any], *args: Any) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        fn(*args)

    return call


HubMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestHubResume = HubMachine.TestCase
