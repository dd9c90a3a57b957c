"""Sinks for hub tests: one that records what it got, and can be stalled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

from canopy.nurseries.fanout import CloseReason, Item, Message, Presence, Subscription


class RecordingSink:
    def __init__(self) -> None:
        self.items: list[Item] = []
        self.batches: list[int] = []  # the size of each delivery
        self.opened_with: list[Any] = []
        self.closed_with: list[CloseReason] = []
        self.flowing = trio.Event()
        self.flowing.set()

    def stall(self) -> None:
        self.flowing = trio.Event()

    def resume(self) -> None:
        self.flowing.set()

    async def opened(self, subscription: Subscription) -> None:
        self.opened_with.append(subscription.replay)

    async def deliver(self, subscription: Subscription, items: Sequence[Item]) -> None:
        await self.flowing.wait()
        self.items.extend(items)
        self.batches.append(len(items))

    async def closed(self, subscription: Subscription, reason: CloseReason) -> None:
        self.closed_with.append(reason)

    @property
    def messages(self) -> list[Message]:
        return [item for item in self.items if isinstance(item, Message)]

    @property
    def offsets(self) -> list[int]:
        return [m.offset for m in self.messages]

    @property
    def presence(self) -> list[tuple[str, str]]:
        return [(p.event, p.client) for p in self.items if isinstance(p, Presence)]


async def settle() -> None:
    """Return once every task is blocked, the hub's pumps included.

    The hub's flusher itself waits for the loop to go idle (with no cushion) before
    waking the pumps. Waiting with a cushion puts this wait after the flusher's, so
    the pumps it wakes have delivered by the time this returns."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.001)
