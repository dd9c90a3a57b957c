"""What the supervision tree runs.

A service is anything with Trio's start protocol: ``run(task_status=...)`` calls
``task_status.started()`` once it is ready to be depended on, so that a supervisor
can start the next child only then. A service that can finish its work gracefully
also has ``shutdown()``: a synchronous request that makes ``run`` return soon.
Services without it are simply cancelled when they are stopped.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import trio

__all__ = ["Drainable", "Service"]


@runtime_checkable
class Service(Protocol):
    async def run(
        self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None: ...


@runtime_checkable
class Drainable(Protocol):
    def shutdown(self) -> None:
        """Ask ``run`` to finish what it has accepted and return; must not block."""
