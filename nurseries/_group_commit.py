"""Group commit: writes asked for concurrently go to the database in one transaction.

A thread hop costs about 0.1 ms here and an fsync far more. Each caller of
:meth:`GroupCommit.submit` queues its item (a bounded queue: when it is full, callers
wait for room) and waits; the committer takes whatever has gathered (up to
``batch_size``), writes it in one transaction, and answers each caller. A caller
returns only after its write is committed. The job stores and the orders store use it.

The queue is a deque, not a memory channel: a channel's ``send`` yields to the
scheduler even when there is room, one task switch per write more than the caller's
wait for its answer.

Cancellation is ``trio.to_thread``'s: a caller whose item is still queued can be
cancelled (the item is taken out and never written); once a batch has taken it, the
caller waits for its outcome and gets it, and the cancellation comes at its next
checkpoint. So a call that was made is never unheard of: a claim's leased jobs reach
the runner that asked for them.

Resource handling: :meth:`GroupCommit.run` is the committer, run in the store's
nursery. When it ends, callers still queued are told their write was not made (with
the store's own ``error``), and callers waiting for room are refused at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import outcome
import trio

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class _Request(Generic[T, R]):
    item: T
    task: trio.lowlevel.Task = field(default_factory=trio.lowlevel.current_task)
    taken: bool = False  # by a batch: from then on its caller cannot be cancelled

    def answer(self, result: R | Exception) -> None:
        settled = outcome.Error(result) if isinstance(result, Exception) else outcome.Value(result)
        trio.lowlevel.reschedule(self.task, settled)


class GroupCommit(Generic[T, R]):
    """``write`` gets a batch of items and returns one outcome per item, in order: a
    result, or the exception for that item alone (raised to its caller). If it raises
    ``error`` (the store's failure), every item of the batch fails with it."""

    def __init__(
        self,
        what: str,
        write: Callable[[list[T]], Awaitable[list[R | Exception]]],
        batch_size: int,
        *,
        error: type[Exception],
    ) -> None:
        self.what = what
        self.batch_size = batch_size
        self.error = error
        self.commits = 0  # transactions so far: fewer than submits when grouped
        self._write = write
        self._limit = batch_size * 4  # queued items, beyond which callers wait for room
        self._queue: deque[_Request[T, R]] = deque()
        self._running = False
        self._arrived: trio.Event | None = None  # the committer waits on it when idle
        self._room = trio.lowlevel.ParkingLot()  # callers waiting for room in the queue

    async def submit(self, item: T) -> R:
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled caller submits nothing
        while self._running and len(self._queue) >= self._limit:
            await self._room.park()
            if not self._running:
                raise self.error(f"the store stopped before accepting this {self.what}")
        if not self._running:
            raise self.error(f"the store is not running (no {self.what} accepted)")
        request: _Request[T, R] = _Request(item)
        self._queue.append(request)
        if self._arrived is not None:
            self._arrived.set()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            if request.taken:
                return trio.lowlevel.Abort.FAILED  # its batch is running: wait for it
            self._queue.remove(request)
            self._room.unpark(count=1)
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The supervisor may restart the store after a crash: a run starts from an
        # empty queue (the last one refused what it held).
        self._running = True
        queue = self._queue
        try:
            task_status.started()
            while True:
                if not queue:
                    self._arrived = trio.Event()
                    await self._arrived.wait()
                    self._arrived = None
                batch = [queue.popleft() for _ in range(min(len(queue), self.batch_size))]
                for request in batch:
                    request.taken = True
                self._room.unpark(count=len(batch))
                try:
                    outcomes = await self._write([request.item for request in batch])
                    self.commits += 1
                except self.error as exc:
                    outcomes = [exc] * len(batch)
                except BaseException:
                    # A crash (or cancellation) mid-batch: its callers must not wait
                    # for an answer that will never come.
                    failed = self.error(f"the store failed while writing this {self.what}")
                    for request in batch:
                        request.answer(failed)
                    raise
                for request, result in zip(batch, outcomes, strict=True):
                    request.answer(result)
        finally:
            self._running = False
            self._arrived = None
            self._room.unpark_all()  # callers waiting for room are refused at once
            self._refuse_pending()

    def _refuse_pending(self) -> None:
        while self._queue:
            request = self._queue.popleft()
            request.answer(self.error(f"the store stopped before committing this {self.what}"))
