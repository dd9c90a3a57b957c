"""What a keep-alive HTTP/1.1 request costs the server's scheduler: no task, and two
steps of the connection's task.

This is the shape the transport was built for (see ``canopy.server.transport._connection``): the
request runs in the connection's reading task once its body is complete, with no task
per request (Quart-Trio's nursery with two tasks, or a task per ASGI call) and no
extra trip through the scheduler. Each task and each step was a few per cent of a
small request's CPU; this test fails if one comes back.
"""

from __future__ import annotations

import pytest
import trio

from tests.processes import http_request, serving_app_in_process

REQUESTS = 50


class _SchedulerCount(trio.abc.Instrument):
    """Tasks spawned, and steps of tasks other than ``client``, while installed."""

    def __init__(self, client: trio.lowlevel.Task) -> None:
        self.client = client
        self.spawned = 0
        self.steps = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is not self.client:
            self.steps += 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/demo/hello", b""),
        ("POST", "/demo/json", b'{"n": 1}'),
        ("GET", "/nope", b""),  # 404
    ],
)
async def test_a_request_spawns_no_task_and_takes_two_steps(
    method: str, path: str, body: bytes
) -> None:
    count = _SchedulerCount(trio.lowlevel.current_task())
    async with serving_app_in_process() as port:
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await http_request(stream, method, path, body)  # warm: caches, first-use objects
            trio.lowlevel.add_instrument(count)
            try:
                for _ in range(REQUESTS):
                    status, _, _ = await http_request(stream, method, path, body)
                    assert status in (200, 404)
            finally:
                trio.lowlevel.remove_instrument(count)
    assert count.spawned == 0
    # The connection's task wakes when the request arrives and yields once before it
    # reads (so a client that pipelines cannot hold the loop): two steps. The slack
    # is for the server's idle-connection reaper, which may wake once meanwhile.
    assert count.steps <= 2 * REQUESTS + 2, count.steps / REQUESTS
