"""The access log: one JSON line per request, written in batches.

Python's ``logging`` builds a record per line and flushes stdout on every line, a
write syscall per request, on the event loop. Access lines are instead
appended to a buffer that a small service flushes ``interval`` seconds after its
first line (and at once when the buffer grows past ``max_buffer``), and once more
when it stops, so the last lines before a shutdown are not lost.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from json.encoder import encode_basestring_ascii
from typing import IO

import trio

__all__ = ["AccessLog", "RequestIds"]

_REQUEST_LINE = '"level":"info","logger":"canopy.access","msg":"request"'
_string = encode_basestring_ascii  # what json.dumps does to a str, in C


class AccessLog:
    def __init__(
        self, stream: IO[str] | None = None, *, interval: float = 0.1, max_buffer: int = 256
    ) -> None:
        self._stream = stream
        self.interval = interval
        self.max_buffer = max_buffer
        self._lines: list[str] = []
        self._written = trio.Event()  # set by the first line after a flush

    def request(self, method: str, path: str, status: int, seconds: float, request_id: str) -> None:
        """One request's line, formatted here: ``json.dumps`` of the same fields builds
        an encoder per call. Only the strings need escaping. The numbers are
        fixed-point (``:.6f``, ``:.3f``): ``round(x, n)`` and the ``repr`` of its result
        would cost as much as the rest of the line."""
        self._append(
            f'{{"ts":{time.time():.6f},{_REQUEST_LINE},"method":{_string(method)},'
            f'"path":{_string(path)},"status":{status:d},"duration_ms":{seconds * 1000:.3f},'
            f'"request_id":{_string(request_id)}}}'
        )

    def _append(self, line: str) -> None:
        lines = self._lines
        if not lines:
            self._written.set()
        lines.append(line)
        if len(lines) >= self.max_buffer:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        stream = self._stream or sys.stdout
        lines, self._lines = self._lines, []
        stream.write("\n".join(lines) + "\n")
        stream.flush()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                # An idle server's log does not wake up until there is a line.
                await self._written.wait()
                await trio.sleep(self.interval)
                self._written = trio.Event()
                self.flush()
        finally:
            self.flush()


class RequestIds:
    """Unique request ids at the cost of a counter increment.

    A random per-process prefix keeps ids unique across processes and restarts;
    the counter keeps them unique within one. ``uuid4`` per request costs a
    ``urandom`` call each time for no more uniqueness than this.
    """

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"
