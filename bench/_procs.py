"""Starting and stopping the servers a benchmark compares, pinned away from the load."""

from __future__ import annotations

import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["free_port", "pinned", "raise_fd_limit", "running", "wait_until_up"]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def pinned(core: int | str, argv: list[str]) -> list[str]:
    """Pin to a core (or a taskset list such as "0,1") when taskset exists: the server
    and the load stop trading places."""
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") else argv


def wait_until_up(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not start within {timeout:g} s")


@contextmanager
def running(
    argv: list[str], port: int | None, cwd: Path, env: dict[str, str], core: int | str = 0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server on ``core`` until the block ends, then SIGTERM it (ours, by PID).
    With a ``port``, the block starts once it accepts connections there.

    Canopy's processes (``python -m server``) import this checkout unless ``env`` says
    otherwise (``--compare-to``), not whichever one is installed: a bench run from a
    ``git worktree`` measures that worktree's server and worker.
    """
    process = subprocess.Popen(
        pinned(core, argv),
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=raise_fd_limit,
    )
    try:
        if port is not None:
            wait_until_up(port, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
