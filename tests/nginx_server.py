"""A real nginx for tests, running ``deploy/nginx.conf`` with only its addresses swapped:
on a free 127.0.0.1 port, in a temp dir, stopped by its PID.

Without the binary the nginx tests skip, saying how to install it; in CI (where
``.ci/run`` installs it) they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from .redis_server import free_port

__all__ = ["nginx_binary", "nginx_config", "running_nginx"]

ROOT = Path(__file__).parent.parent
START_TIMEOUT = 10.0


def nginx_binary() -> str:
    path = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
    )
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs nginx (.ci/run) and the nginx tests need it")
        pytest.skip("no nginx on this machine (apt-get install nginx)")
    return path


def nginx_config(directory: Path, listen: int, upstreams: Sequence[int]) -> Path:
    """deploy/nginx.conf for this run: ``listen`` and ``upstreams`` instead of its
    example addresses, and pid, logs and temp files under ``directory``."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    servers = re.findall(r"^\s*server 127\.0\.0\.1:800\d (.*);$", text, re.MULTILINE)
    assert servers, "deploy/nginx.conf lists its instances as server 127.0.0.1:800N ..."
    options = servers[0]
    text = re.sub(r"^\s*server 127\.0\.0\.1:800\d .*;\n", "", text, flags=re.MULTILINE)
    lines = "".join(f"        server 127.0.0.1:{port} {options};\n" for port in upstreams)
    text = text.replace("    upstream canopy {\n", "    upstream canopy {\n" + lines, 1)
    assert "listen 8080;" in text
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    paths = "".join(
        f"    {name}_temp_path {directory / name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    logs = f"    access_log {directory / 'access.log'};\n"
    text = text.replace("http {\n", "http {\n" + paths + logs, 1)
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


@contextmanager
def running_nginx(directory: Path, upstreams: Sequence[int]) -> Iterator[int]:
    """nginx in front of ``upstreams``; yields the port it listens on."""
    binary = nginx_binary()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = nginx_config(directory, port, upstreams)
    main = f"daemon off; pid {directory / 'nginx.pid'}; error_log {directory / 'error.log'};"
    if os.geteuid() == 0:
        main += " user root;"  # workers must reach the temp dir, which is ours alone
    argv = [binary, "-p", str(directory), "-c", str(config), "-g", main]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = directory / "error.log"
                raise RuntimeError(
                    f"nginx did not start: {log.read_text() if log.exists() else ''}"
                )
            time.sleep(0.02)
        yield port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
