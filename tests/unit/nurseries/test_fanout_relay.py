"""The relay: events another process publishes reach this process's hub through a
Unix socket, in order, each with the hub's own offset; and when they cannot, the
publisher is told."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import trio

from canopy.nurseries.fanout import (
    Hub,
    RelayBusy,
    RelayClient,
    RelayListener,
    RelayUnavailable,
    TopicRules,
)
from tests.fanout_sinks import RecordingSink, settle


async def started_hub(nursery: trio.Nursery) -> Hub:
    hub = Hub(TopicRules())
    await nursery.start(hub.run)
    return hub


async def test_events_arrive_in_order_with_the_hubs_offsets(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    hub = await started_hub(nursery)
    sink = RecordingSink()
    await hub.subscribe("orders.1", sink)
    await hub.publish("orders.1", {"state": "pending"})  # the web tier's own publish
    listener = RelayListener(hub, tmp_path / "events.sock")
    await nursery.start(listener.run)
    client = RelayClient(tmp_path / "events.sock")
    await nursery.start(client.run)

    async def many(first: int) -> list[tuple[int, str]]:
        return [await client.publish("orders.1", {"n": n}) for n in range(first, first + 50)]

    # Two tasks publishing at once: each one's events stay in its order.
    results: dict[int, list[tuple[int, str]]] = {}

    async def record(first: int) -> None:
        results[first] = await many(first)

    async with trio.open_nursery() as publishers:
        publishers.start_soon(record, 0)
        publishers.start_soon(record, 100)
    await settle()  # the hub's pump has delivered
    offsets = [m.offset for m in sink.messages]
    assert offsets == list(range(1, 102))
    numbers = [m.data["n"] for m in sink.messages[1:]]
    for first in (0, 100):
        mine = [n for n in numbers if first <= n < first + 50]
        assert mine == list(range(first, first + 50))
        assert [offset for offset, _ in results[first]] == sorted(
            m.offset for m in sink.messages[1:] if first <= m.data["n"] < first + 50
        )
    assert listener.relayed == 100


async def test_a_burst_from_many_tasks_goes_out_together_and_each_is_answered(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    hub = await started_hub(nursery)
    listener = RelayListener(hub, tmp_path / "events.sock")
    await nursery.start(listener.run)
    client = RelayClient(tmp_path / "events.sock")
    await nursery.start(client.run)
    await client.publish("warm.up", {})  # connected: the burst shares one connection
    offsets: dict[int, int] = {}

    async def publish(n: int) -> None:
        offsets[n], _ = await client.publish("burst", {"n": n})

    async with trio.open_nursery() as publishers:
        for n in range(300):
            publishers.start_soon(publish, n)
    assert sorted(offsets.values()) == list(range(1, 301))
    assert listener.relayed == 301
    assert listener.reads < 300  # gathered into fewer writes than publishes


async def test_what_the_hub_refuses_is_refused_to_the_publisher_alone(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    hub = await started_hub(nursery)
    await nursery.start(RelayListener(hub, tmp_path / "events.sock").run)
    client = RelayClient(tmp_path / "events.sock")
    await nursery.start(client.run)
    with pytest.raises(ValueError, match="invalid topic"):
        await client.publish("not a topic!", {})
    offset, _ = await client.publish("fine.topic", {})  # the connection goes on
    assert offset == 1


async def test_without_a_listener_a_publish_is_refused_then_works_once_it_is_back(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = tmp_path / "events.sock"
    client = RelayClient(path, connect_timeout=0.5, retry_after=0.2)
    await nursery.start(client.run)
    with pytest.raises(RelayUnavailable, match="canopy serve"):
        await client.publish("jobs.1", {"state": "running"})
    hub = await started_hub(nursery)
    with trio.CancelScope() as first:
        async with trio.open_nursery() as inner:
            await inner.start(RelayListener(hub, path).run)
            # Within retry_after of the failure, refused without trying: a worker whose
            # web tier is away does not spend its time on refused connections.
            with pytest.raises(RelayUnavailable, match="canopy serve"):
                await client.publish("jobs.1", {"state": "lost"})
            await trio.sleep(0.25)
            assert (await client.publish("jobs.1", {"state": "running"}))[0] == 1
            first.cancel()
    assert not path.exists()  # the listener removed its socket
    with pytest.raises(RelayUnavailable):
        await client.publish("jobs.1", {"state": "succeeded"})
    await nursery.start(RelayListener(hub, path).run)  # the web tier again
    await trio.sleep(0.25)
    assert (await client.publish("jobs.1", {"state": "succeeded"}))[0] == 2


async def test_a_socket_left_by_a_dead_process_is_replaced_a_live_one_refused(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    path = tmp_path / "events.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: a process that was killed
    hub = await started_hub(nursery)
    await nursery.start(RelayListener(hub, path).run)
    with pytest.raises(RelayBusy, match="one canopy serve per data directory"):
        await RelayListener(hub, path).run()


async def test_a_path_too_long_for_a_unix_socket_is_said_so(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    hub = await started_hub(nursery)
    deep = tmp_path / ("d" * 120)
    with pytest.raises(OSError, match="shorter data directory"):
        await RelayListener(hub, deep / "events.sock").run()
