"""``canopy serve`` with ``workers = N``: N serving processes on the same addresses.

The parent binds listening sockets for each worker (``SO_REUSEPORT``: see
``bind_per_worker``), then runs :class:`WorkerPool`, a service whose nursery holds
one task per worker process. Each worker is a plain ``canopy serve`` (its own
supervision tree, its own connections to Redis) that inherits its sockets
(``--listen-fd``), and the kernel spreads connections evenly over them.

Shutdown: the pool's ``shutdown()`` closes the parent's copies of the sockets and
sends SIGTERM to every worker at once; each drains as a single process does (its
listener closes at once, so once all have begun, a new connection is refused). The
pool returns when every worker has exited. A worker that exits on its own is
restarted with backoff, at most ``RestartIntensity`` times in its window; past that
the pool fails, and the parent exits 1.

Metrics: the workers run prometheus-client's multiprocess mode in a directory the
parent makes (or the operator's ``PROMETHEUS_MULTIPROC_DIR``, emptied at start), so
any worker answers ``/metrics`` for all of them. When a worker exits, the pool marks
it dead there: its live gauges stop counting, its counters stay in the totals.

Topics must be shared between the processes: ``workers > 1`` needs
``CANOPY_BROKER=redis://...`` (checked at start-up). Jobs work on either store.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence

import trio
from prometheus_client import multiprocess

from canopy.nurseries import Backoff, RestartIntensity

from ..observe._metrics import MULTIPROCESS_ENV

__all__ = ["WorkerPool", "worker_argv"]

log = logging.getLogger("canopy")

KILL_AFTER = 2.0  # after the pool is cancelled: SIGTERM again, then SIGKILL this much later


def worker_argv(config_path: str | None, fds: Sequence[tuple[str, int]]) -> list[str]:
    argv = [sys.executable, "-m", "canopy", "serve"]
    if config_path is not None:
        argv += ["--config", config_path]
    for kind, fd in fds:
        argv += ["--listen-fd", f"{kind}:{fd}"]
    return argv


class WorkerPool:
    def __init__(
        self,
        workers: int,
        sockets: Sequence[Sequence[tuple[str, socket.socket]]],  # each worker's
        config_path: str | None,
        metrics_dir: str,
        *,
        intensity: RestartIntensity | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.workers = workers
        if len(sockets) != workers:
            raise ValueError(f"{workers} workers need {workers} sets of sockets")
        self.sockets = [list(own) for own in sockets]
        self.config_path = config_path
        self.metrics_dir = metrics_dir
        self.intensity = intensity or RestartIntensity(max_restarts=5, window=30.0)
        self.backoff = backoff or Backoff()
        self._processes: dict[int, trio.Process] = {}
        self._stopping = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for index in range(1, self.workers + 1):
                    await nursery.start(self._keep_running, index)
                task_status.started()
        finally:
            self._close_sockets()

    def shutdown(self) -> None:
        """Close our copies of the sockets and ask every worker to drain, all at once."""
        self._stopping = True
        self._close_sockets()
        for process in self._processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)

    def _close_sockets(self) -> None:
        for own in self.sockets:
            for _kind, sock in own:
                sock.close()

    async def _keep_running(self, index: int, *, task_status: trio.TaskStatus[None]) -> None:
        restarts: list[float] = []
        while True:
            code = await self._run_once(index, task_status)
            task_status = trio.TASK_STATUS_IGNORED
            if self._stopping:
                if code != 0:
                    log.warning("worker %d exited with %s while stopping", index, code)
                return
            now = trio.current_time()
            if not self.intensity.allows(restarts, now):
                raise RuntimeError(
                    f"worker {index} exited with {code}; "
                    f"{self.intensity.max_restarts} restarts in {self.intensity.window:g} s"
                )
            restarts.append(now)
            log.error("worker %d exited with %s; restarting it", index, code)
            await trio.sleep(self.backoff.delay(self.intensity.recent(restarts, now)))

    async def _run_once(self, index: int, task_status: trio.TaskStatus[None]) -> int:
        fds = [(kind, sock.fileno()) for kind, sock in self.sockets[index - 1]]
        # A session of its own: a terminal's Ctrl-C reaches only us, and we forward
        # one SIGTERM (a worker that got both would take them for a forced stop).
        process = await trio.lowlevel.open_process(
            worker_argv(self.config_path, fds),
            pass_fds=[fd for _, fd in fds],
            start_new_session=True,
            env={**os.environ, MULTIPROCESS_ENV: self.metrics_dir},
        )
        self._processes[index] = process
        task_status.started()
        try:
            return await process.wait()
        finally:
            del self._processes[index]
            try:
                await self._stop(process)
            finally:
                multiprocess.mark_process_dead(process.pid, self.metrics_dir)

    async def _stop(self, process: trio.Process) -> None:
        if process.returncode is None:  # we were cancelled (a second signal)
            with trio.CancelScope(shield=True):
                process.send_signal(signal.SIGTERM)  # its own second signal: stop now
                with trio.move_on_after(KILL_AFTER):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
