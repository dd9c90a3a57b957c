"""A doorbell between the processes that share one SQLite file.

A store rings it after a commit that the other processes should act on at once: jobs
enqueued, or a cancel asked for a job that may be running elsewhere. Without it, a
``canopy worker`` hears of a web process's enqueue only at its next poll (up to
50 ms apart once its queue has been empty) and of a cancel at its next heartbeat
(0.5 s). With it, an idle runner need not poll: it sleeps until its queue's next job
is due and looks once a second (``JobRunner.heard_poll_interval``). Those looks and
the heartbeats stay: a ring is a hint, and a lost one (a full socket buffer, a
process that began listening a moment ago) costs only that latency.

Each listening process binds a Unix datagram socket in ``<database>.bells/``, under
a random name. A ring sends one datagram to every socket there but the ringer's own,
without blocking and without waiting for an answer. A socket that refuses it
(``ECONNREFUSED``) has no process behind it any more, as one that died leaves its
file behind, so the ringer removes the file. The directory is listed again at most
every ``REFRESH`` seconds, so a ring costs a ``sendto`` per listener, not a listing.

Unix socket paths are limited to about 100 bytes: a database whose path is longer
gets a silent bell (logged once), and polling does the work, as before. So do
platforms without Unix sockets.

Resource handling: :meth:`Doorbell.listen` runs until cancelled and removes its
socket file on the way out, even when cancelled; :meth:`Doorbell.close` closes the
ringing socket.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import trio

from ._ids import random_hex

__all__ = ["Doorbell"]

log = logging.getLogger("canopy.doorbell")

REFRESH = 0.5  # seconds between listings of the bells directory
MAX_MESSAGE = 256
NAME_BYTES = 8  # a socket's file name: this many random bytes, in hex
# sun_path is 108 bytes on Linux, 104 on the BSDs; keep to the smaller, with its NUL.
MAX_PATH = 103


class Doorbell:
    """Rings the other processes that listen on ``path`` (a database file), and
    hears their rings. A message is a few bytes the caller gives meaning to."""

    def __init__(self, path: str | Path) -> None:
        database = Path(path).resolve()
        self.directory = database.with_name(database.name + ".bells")
        self.rings = 0  # datagrams sent so far, for tests and curiosity
        self._own: str | None = None  # our socket's file name while listening
        self._sender: socket.socket | None = None
        self._targets: list[str] = []
        self._listed_at = -REFRESH
        self.enabled = hasattr(socket, "AF_UNIX") and _fits(self.directory)
        if not self.enabled:
            log.info(
                "no doorbell for %s (path too long for a Unix socket): other "
                "processes' enqueues and cancels are polled for",
                path,
            )

    @property
    def listening(self) -> bool:
        """Whether this process hears the others' rings now (its socket is bound)."""
        return self._own is not None

    def ring(self, message: bytes) -> None:
        """Tell every other listener ``message``; never blocks, never raises."""
        if not self.enabled:
            return
        if time.monotonic() - self._listed_at >= REFRESH:
            self._targets = self._list()
        if not self._targets:
            return
        if self._sender is None:
            try:
                self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            except OSError as exc:  # out of descriptors, say: the ring is lost, not the commit
                log.warning("doorbell not rung: %s", exc)
                return
            self._sender.setblocking(False)
        gone = []
        for target in self._targets:
            try:
                self._sender.sendto(message, target)
                self.rings += 1
            except (BlockingIOError, InterruptedError):
                pass  # its buffer is full of rings it has yet to read: it will look
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    gone.append(target)
                else:
                    log.debug("doorbell %s: %s", target, exc)
        for target in gone:  # never our own socket: _list leaves it out
            self._targets.remove(target)
            _unlink(target)

    async def listen(
        self,
        heard: Callable[[bytes], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``heard`` with each message rung by another process, until cancelled.
        Rings that came together are read together, each distinct message heard once."""
        sock = self._bound() if self.enabled else None
        if sock is None:  # the others' rings go unheard: this process polls
            task_status.started()
            await trio.sleep_forever()
        with sock:
            path = sock.getsockname()
            self._own = os.path.basename(path)
            self._listed_at = -REFRESH  # list again, now without ourselves
            try:
                task_status.started()
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    messages = set()
                    while True:
                        try:
                            messages.add(sock.recv(MAX_MESSAGE))
                        except (BlockingIOError, InterruptedError):
                            break
                    for message in messages:
                        heard(message)
            finally:
                self._own = None
                _unlink(path)

    def _bound(self) -> socket.socket | None:
        sock = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(str(self.directory / random_hex(NAME_BYTES)))
        except OSError as exc:
            if sock is not None:
                sock.close()
            log.warning("no doorbell for %s: %s", self.directory, exc)
            return None
        return sock

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def _list(self) -> list[str]:
        self._listed_at = time.monotonic()
        try:
            names = os.listdir(self.directory)
        except OSError:  # none yet (no one listens), or not a directory we can read
            return []
        return [str(self.directory / name) for name in names if name != self._own]


def _fits(directory: Path) -> bool:
    """Whether a socket's path in ``directory`` fits in ``sun_path``."""
    return len(os.fsencode(directory)) + 1 + 2 * NAME_BYTES <= MAX_PATH


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
