"""What only the Redis store has: several processes on one Redis (each a connection of
its own here), cancel requests over pub/sub, expiring results, and Redis going away.
The shared contract is in test_job_store_contract.py and test_job_runner.py."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from canopy.nurseries import ServiceState, Supervisor
from canopy.nurseries.jobs import Job, JobRunner, JobState, JobStoreError, TaskRegistry
from canopy.nurseries.redis import RedisConnection, RedisJobStore, redis_supervisor
from tests.redis_server import RedisServer


async def open_process(
    nursery: trio.Nursery, url: str, prefix: str, **options: Any
) -> RedisJobStore:
    """What one Canopy process holds: its own connection and store, same keys."""
    connection = RedisConnection(url)
    await nursery.start(connection.run)
    store = RedisJobStore(connection, prefix=prefix, **options)
    await nursery.start(store.run)
    return store


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


async def wait_for(check: Callable[[], Any], seconds: float = 5.0) -> Any:
    with trio.fail_after(seconds):
        while True:
            if result := await check():
                return result
            await trio.sleep(0.02)


async def test_a_cancel_in_one_process_reaches_the_runner_in_another_at_once(
    redis_server: RedisServer, prefix: str, nursery: trio.Nursery
) -> None:
    web = await open_process(nursery, redis_server.url, prefix)
    worker = await open_process(nursery, redis_server.url, prefix)
    heard: list[str] = []
    worker.on_cancel_requested(heard.append)
    registry = TaskRegistry()
    started = trio.Event()

    @registry.task("long")
    async def long(args: dict[str, Any]) -> None:
        started.set()
        await trio.sleep(30)

    # A lease of 30 s heartbeats every 0.5 s; the cancel must come sooner, by pub/sub.
    runner = JobRunner(worker, registry, lease=30.0, poll_interval=0.02)
    await nursery.start(runner.run)
    job, _ = await web.enqueue(Job("long"))
    await started.wait()
    await trio.sleep(0.6)  # past a heartbeat, so the next is ~0.5 s away
    asked = trio.current_time()
    await web.cancel(job.id)

    async def cancelled() -> Any:
        stored = await web.get(job.id)
        return stored is not None and stored.state is JobState.CANCELLED

    await wait_for(cancelled)
    assert trio.current_time() - asked < 0.3
    assert heard == [job.id]


async def test_every_job_runs_once_across_two_worker_processes(
    redis_server: RedisServer, prefix: str, nursery: trio.Nursery
) -> None:
    web = await open_process(nursery, redis_server.url, prefix)
    ran: list[tuple[str, int]] = []

    def worker_tasks(number: int) -> TaskRegistry:
        registry = TaskRegistry()

        @registry.task("work")
        async def work(args: dict[str, Any]) -> None:
            ran.append((args["n"], number))
            await trio.sleep(0.001)

        return registry

    for number in (1, 2):
        store = await open_process(nursery, redis_server.url, prefix)
        runner = JobRunner(store, worker_tasks(number), concurrency=8, poll_interval=0.01)
        await nursery.start(runner.run)
    for n in range(200):
        await web.enqueue(Job("work", {"n": n}))

    async def all_done() -> bool:
        return len(await web.list_jobs(JobState.SUCCEEDED, limit=1000)) == 200

    await wait_for(all_done, seconds=20)
    assert sorted(n for n, _ in ran) == list(range(200))  # each once
    assert {number for _, number in ran} == {1, 2}  # and both took a share


async def test_finished_records_and_their_keys_expire_after_the_result_ttl(
    redis_server: RedisServer, prefix: str, nursery: trio.Nursery
) -> None:
    store = await open_process(nursery, redis_server.url, prefix, result_ttl=1)
    job, _ = await store.enqueue(Job("t", idempotency_key="once"))
    (claimed,) = await store.claim("default", "w1", 1, lease=10)
    assert await store.finish(claimed.moved(JobState.SUCCEEDED, result=1), "w1")
    assert (await store.get(job.id)).result == 1  # type: ignore[union-attr]
    await trio.sleep(1.2)
    assert await store.get(job.id) is None
    again, created = await store.enqueue(Job("t", {"other": True}, idempotency_key="once"))
    assert created and again.id != job.id  # the key is free once its job is gone
    await store.requeue_expired()  # the sweeper forgets the expired record's listing
    assert [j.id for j in await store.list_jobs()] == [again.id]


async def test_a_list_page_fills_past_listings_whose_records_expired(
    redis_server: RedisServer, prefix: str, nursery: trio.Nursery
) -> None:
    """Until the sweeper forgets them, an expired record's listings stay in the indexes;
    a page skips them and reads on, so a short page still means the end."""
    store = await open_process(nursery, redis_server.url, prefix, result_ttl=1)
    for n in range(4):
        await store.enqueue(Job("t", {"n": n}))
    old_first, old_second, new_first, new_second = await store.claim("default", "w1", 4, 10)
    for job in (new_first, new_second):  # the newest end first, and expire first
        assert await store.finish(job.moved(JobState.SUCCEEDED), "w1")
    await trio.sleep(1.2)
    for job in (old_first, old_second):
        assert await store.finish(job.moved(JobState.SUCCEEDED), "w1")
    page = await store.list_jobs(JobState.SUCCEEDED, limit=2)
    assert [job.id for job in page] == [old_second.id, old_first.id]


async def test_redis_going_away_is_reported_and_survived_with_nothing_lost(
    tmp_path: Path, prefix: str, nursery: trio.Nursery
) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        connection = RedisConnection(redis.url, check_interval=0.1, timeout=0.5)
        tree = Supervisor("services")
        tree.add("redis", redis_supervisor(connection))
        store = RedisJobStore(connection, prefix=prefix)
        tree.add("job_store", store)
        await nursery.start(tree.run)
        accepted, _ = await store.enqueue(Job("t", {"n": 1}))
        assert tree.status().ready

        redis.stop()  # SIGTERM: Redis writes its AOF and exits
        await wait_for(lambda: _async(not tree.status().ready))
        (node,) = [c for c in tree.status().children if c.name == "redis"]
        assert node.children[0].state in (ServiceState.RESTARTING, ServiceState.STARTING)
        with pytest.raises(JobStoreError):
            await store.enqueue(Job("t", {"n": 2}))  # refused, never accepted and lost

        redis.start()  # same port, same data directory
        await wait_for(lambda: _async(tree.status().ready), seconds=10)
        assert await store.get(accepted.id) == accepted
        later, created = await store.enqueue(Job("t", {"n": 3}))
        assert created
        claimed = await store.claim("default", "w1", 10, lease=10)
        assert {j.id for j in claimed} == {accepted.id, later.id}
        tree.shutdown()
        await tree.wait_stopped()
    finally:
        redis.stop(signal.SIGKILL)


async def _async(value: Any) -> Any:
    return value


def test_cluster_and_sentinel_urls_make_coredis_clients_of_their_kind() -> None:
    """Built, not connected: no cluster or Sentinel runs here (docs/DEPLOY.md)."""
    import coredis

    from canopy.nurseries.redis import client_for_url

    sentinel = client_for_url("redis+sentinel://h1:26379,h2:26380/mymaster/2")
    assert sentinel.connection_pool.service_name == "mymaster"
    assert [repr(s) for s in sentinel.connection_pool.sentinel_manager.sentinels] == [
        "Redis<h1:26379>",
        "Redis<h2:26380>",
    ]
    assert isinstance(client_for_url("redis+cluster://127.0.0.1:7000"), coredis.RedisCluster)
    with pytest.raises(ValueError, match="not a Redis URL"):
        client_for_url("http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="names its service"):
        client_for_url("redis+sentinel://h1:26379")
