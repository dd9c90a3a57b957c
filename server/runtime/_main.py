"""Canopy's root nursery: the supervision tree, and the signals that stop it.

Shape::

    root nursery
      signal watcher   1st SIGTERM/SIGINT: tree.shutdown(); 2nd: cancel the root scope
      tree             canopy -> [services -> [...], http]

The watcher is running before the tree starts, so a signal during start-up is
honoured too. When the tree has stopped, the root scope is cancelled to end the
watcher, and ``serve`` returns: the process exits 0 after a graceful stop.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config

from canopy.nurseries import Supervisor

from ..pipeline._app import CanopyApp
from ..transport._service import HTTPService

__all__ = ["ForcedShutdown", "run_tree", "serve"]

log = logging.getLogger("canopy")

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ForcedShutdown(Exception):
    """A second signal arrived during the graceful stop; everything was cancelled."""


async def serve(
    app: CanopyApp,
    config: Config,
    *,
    parent: int | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``app`` and its services under Canopy's own supervision tree until a signal."""
    runtime = app.runtime
    runtime.lifespan_owns_tree = False
    # Canopy's connection class reads the whole body, then never waits on receive():
    # safe to run its HTTP/1.1 requests in the reading task.
    http = HTTPService(app, config, drain_linger=runtime.settings.drain_linger, inline=True)
    runtime.tree.add("http", http, grace=http.grace)
    await run_tree(runtime.tree, task_status=task_status, started=lambda: http.binds, parent=parent)


async def run_tree(
    tree: Supervisor,
    *,
    started: Callable[[], Any] = lambda: None,
    parent: int | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``tree`` under the signal watcher until a signal stops it (a process's root).

    ``parent``: the pid of the process that started this one (a ``workers = N`` pool);
    should it die without stopping us, we drain as on SIGTERM instead of living on."""
    forced = trio.Event()
    async with trio.open_nursery() as root:
        with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
            root.start_soon(_watch_signals, signals, tree, root.cancel_scope, forced)
            if parent is not None:
                root.start_soon(_watch_parent, parent)
            await root.start(tree.run)
            task_status.started(started())
            await tree.wait_stopped()
            root.cancel_scope.cancel()
    if forced.is_set():
        raise ForcedShutdown("second signal: stopped without draining")
    log.info("stopped")


async def _watch_signals(
    signals: Any, tree: Supervisor, root_scope: trio.CancelScope, forced: trio.Event
) -> None:
    count = 0
    async for signum in signals:
        count += 1
        if count == 1:
            log.info("shutting down", extra={"signal": signal.Signals(signum).name})
            tree.shutdown()
        else:
            log.warning("second signal: cancelling everything")
            forced.set()
            root_scope.cancel()
            return


async def _watch_parent(parent: int) -> None:
    """Wait for ``parent`` to exit: a pidfd turns readable then (Linux 5.3+)."""
    try:
        pidfd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # not Linux, or already gone
        pidfd = None
    if pidfd is not None:
        try:
            if os.getppid() == parent:  # not reparented between fork and open
                await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
    else:
        while os.getppid() == parent:  # noqa: ASYNC110 (no event to wait on)
            await trio.sleep(1.0)
    log.warning("the parent process %d is gone: shutting down", parent)
    os.kill(os.getpid(), signal.SIGTERM)  # the same path as an operator's SIGTERM
