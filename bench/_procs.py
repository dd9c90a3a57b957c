"""Starting and stopping the servers a benchmark compares, pinned away from the load."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "ROOT",
    "canopy_module",
    "cpu_seconds",
    "free_port",
    "import_root",
    "pinned",
    "raise_fd_limit",
    "running",
    "wait_until_up",
]

ROOT = Path(__file__).resolve().parent.parent


def import_root(checkout: Path) -> Path:
    """A folder that, put first on ``sys.path``, imports Canopy from ``checkout``.

    Installed, the checkout's folders are mapped to ``canopy.*`` (pyproject's
    package-dir), which a path entry cannot say: the checkout's ``build/`` gets a tree
    of links laid out as the installed package. A checkout from before the mapping
    imports its folders by their own names, from its root."""
    face = checkout / "server" / "canopy"
    if not face.is_dir():
        return checkout
    tree = checkout / "build" / "import-root"
    package = tree / "canopy"
    shutil.rmtree(tree, ignore_errors=True)
    package.mkdir(parents=True)
    for module in face.glob("*.py"):
        (package / module.name).symlink_to(module)
    for layer in ("server", "handlers", "nurseries"):
        (package / layer).symlink_to(checkout / layer)
    return tree


def canopy_module(checkout: Path) -> str:
    """What ``python -m`` runs as the ``canopy`` command in ``checkout``."""
    return "canopy" if (checkout / "server" / "canopy").is_dir() else "server"


def cpu_seconds(pid: int) -> float:
    """User plus system time of ``pid`` so far, every thread's (fields 14 and 15 of
    /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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

    Canopy's processes (``python -m canopy``) import this checkout unless ``env`` says
    otherwise (``--compare-to``), not whichever one is installed: a bench run from a
    ``git worktree`` measures that worktree's server and worker.
    """
    process = subprocess.Popen(
        pinned(core, argv),
        cwd=cwd,
        env={"PYTHONPATH": str(import_root(ROOT)), **env},
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
