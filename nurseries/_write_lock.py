"""A lock around write transactions, shared by every process that writes one SQLite file.

SQLite lets one writer in at a time. A writer that finds the lock taken is told
``SQLITE_BUSY``, and its busy handler sleeps and retries: 1, 2, 5, 10 ms and up. A
commit holds the lock for well under a millisecond, so when a web process and a
worker each commit hundreds of times a second, a writer kept waiting mostly waited
for its own sleep to end, and an enqueuing process and a worker on one file got
through fewer jobs than with this lock in front of SQLite's handler.

The lock is ``flock`` on a file next to the database (``canopy.db.write-lock``): a
waiter is woken by the kernel the moment the holder lets go, and a holder that dies
releases it with its descriptors. SQLite's own locking still decides everything; this
only orders the writers before they ask it, so no race here can let two writers in.

Bounded as SQLite's busy timeout is: a blocking ``flock`` cannot be interrupted, so a
contended wait happens in a helper thread, and the caller gives up after ``timeout``
(a writer stopped while holding the lock, say by ``docker pause``, must not hang the
others for ever). The helper releases whatever it gets for a caller that gave up.
Where ``fcntl`` does not exist (Windows), there is no lock and SQLite's handler does
the waiting, as before.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["WriteLock"]


class _Wait:
    """One caller's contended wait: granted by the helper, or abandoned by the caller."""

    __slots__ = ("_abandoned", "_mutex", "granted")

    def __init__(self) -> None:
        self.granted = threading.Event()
        self._mutex = threading.Lock()
        self._abandoned = False

    def grant(self) -> bool:
        """The helper holds the lock for this caller: False if the caller gave up."""
        with self._mutex:
            if self._abandoned:
                return False
            self.granted.set()
            return True

    def abandon(self) -> bool:
        """The caller's time is up: True if the lock was granted meanwhile after all."""
        with self._mutex:
            if self.granted.is_set():
                return True
            self._abandoned = True
            return False


class WriteLock:
    """``acquire`` before a write transaction, ``release`` after it, from one thread
    at a time (the database's): it orders processes, not threads."""

    def __init__(self, path: str | Path, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._fd = -1
        self._waits: queue.SimpleQueue[_Wait | None] | None = None  # the helper's, once started

    def acquire(self) -> None:
        """Take the lock, or raise ``sqlite3.OperationalError`` after ``timeout``, as
        SQLite does when its own lock stays taken."""
        if fcntl is None:
            return
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        wait = _Wait()
        self._helper_queue().put(wait)
        if not wait.granted.wait(self.timeout) and not wait.abandon():
            raise sqlite3.OperationalError(
                f"database is locked (no write lock on {self.path.name} in {self.timeout:g} s)"
            )

    def release(self) -> None:
        if fcntl is not None and self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Stop the helper and close the file. A helper still blocked (the lock held
        by a stopped process) keeps the descriptor until it gets the lock, then ends."""
        if self._waits is not None:
            self._waits.put(None)  # the helper closes the descriptor on its way out
            self._waits = None
        elif self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def _helper_queue(self) -> queue.SimpleQueue[_Wait | None]:
        if self._waits is None:
            self._waits = queue.SimpleQueue()
            threading.Thread(
                target=self._serve,
                args=(self._fd, self._waits),
                name=f"canopy-write-lock-{self.path.name}",
                daemon=True,
            ).start()
        return self._waits

    @staticmethod
    def _serve(fd: int, waits: queue.SimpleQueue[_Wait | None]) -> None:
        assert fcntl is not None
        try:
            while (wait := waits.get()) is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the holder lets go
                if not wait.grant():
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
