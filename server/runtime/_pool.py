"""The parent of ``canopy serve`` with ``workers = N``: bind, run the pool, log."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence

import click
from hypercorn.config import Config
from hypercorn.utils import repr_socket_addr

from canopy.nurseries import Supervisor

from ..config._settings import Settings
from ..observe._metrics import MULTIPROCESS_ENV
from ._main import run_tree
from ._workers import WorkerPool

__all__ = ["inherit_sockets", "metrics_directory", "serve_workers"]

log = logging.getLogger("canopy")


async def serve_workers(config: Config, settings: Settings, config_path: str | None) -> None:
    if settings.broker.startswith("memory://"):
        # Each process would keep its own topics: a subscriber on one would never
        # hear what is published through another.
        click.echo(
            "canopy: invalid setting: workers: more than one process needs "
            "CANOPY_BROKER=redis://... so that topics are shared (see docs/DEPLOY.md)",
            err=True,
        )
        sys.exit(2)
    per_worker, binds = bind_per_worker(config)
    with metrics_directory() as directory:
        pool = WorkerPool(config.workers, per_worker, config_path, directory)
        tree = Supervisor("canopy-workers")
        grace = config.graceful_timeout + config.shutdown_timeout + 3 * settings.service_grace + 5
        tree.add("workers", pool, grace=grace)

        def started() -> list[str]:
            for bind in binds:
                log.info("listening", extra={"bind": bind, "workers": config.workers})
            return binds

        await run_tree(tree, started=started)


def bind_per_worker(config: Config) -> tuple[list[list[tuple[str, socket.socket]]], list[str]]:
    """Each worker's listening sockets (``(kind, socket)``), and the binds as URLs.

    Every worker gets sockets of its own on the same addresses (``SO_REUSEPORT``,
    which Hypercorn sets with ``workers > 1``), and the kernel hashes each new
    connection to one of them. On one shared socket every worker waits in
    ``accept`` and the first awake takes the connection: the busiest tends to keep
    winning, and two workers measured no faster than one. The parent keeps its
    copies, so connections that come for a worker being restarted wait in its
    socket's backlog. A Unix socket cannot be shared that way: one for all.
    """
    sets = [_bind_once(config, None)]
    for _ in range(config.workers - 1):
        sets.append(_bind_once(config, sets[0]))
    binds = []
    for kind, sock in sets[0]:
        scheme = "https" if config.ssl_enabled and kind == "bind" else "http"
        binds.append(f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}")
    return sets, binds


def _bind_once(
    config: Config, first: list[tuple[str, socket.socket]] | None
) -> list[tuple[str, socket.socket]]:
    """One worker's sockets. After the first worker's, on the ports those got (a bind
    to port 0 picks one) and with the first worker's Unix sockets themselves."""
    bound: list[tuple[str, socket.socket]] = []
    # Hypercorn reads `bind` as TLS when TLS is configured (and `insecure_bind` as
    # plain), else as plain: a worker gets each socket back under the same name.
    kinds = ["bind", "insecure_bind"] if config.ssl_enabled else ["bind"]
    for kind in kinds:
        for index, address in enumerate(getattr(config, kind)):
            if first is not None:
                original = [sock for k, sock in first if k == kind][index]
                if original.family == socket.AF_UNIX:
                    bound.append((kind, original))
                    continue
                address = repr_socket_addr(original.family, original.getsockname())
            # A copy of the config that binds just this address, through Hypercorn's
            # own socket set-up (its options, SO_REUSEPORT among them).
            single = copy.copy(config)
            single.bind, single.insecure_bind, single.quic_bind = [], [], []
            setattr(single, kind, [address])
            created = single.create_sockets()
            [sock] = [*created.secure_sockets, *created.insecure_sockets]
            sock.listen(config.backlog)
            bound.append((kind, sock))
    return bound


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """The workers' multiprocess-metrics directory: the operator's
    ``PROMETHEUS_MULTIPROC_DIR``, emptied first (files of an earlier run would count
    again), or a temporary one removed at the end."""
    given = os.environ.get(MULTIPROCESS_ENV)
    if not given:
        with tempfile.TemporaryDirectory(prefix="canopy-metrics-") as directory:
            yield directory
        return
    os.makedirs(given, exist_ok=True)
    for name in os.listdir(given):
        if name.endswith(".db"):
            os.remove(os.path.join(given, name))
    yield given


def inherit_sockets(config: Config, listen_fds: Sequence[str]) -> None:
    """Serve the parent's sockets (``KIND:FD``) as one process."""
    config.workers = 1
    config.bind, config.insecure_bind = [], []
    for item in listen_fds:
        kind, _, fd = item.partition(":")
        if kind not in ("bind", "insecure_bind") or not fd.isdigit():
            raise click.BadParameter(f"--listen-fd: expected bind:FD (got {item!r})")
        getattr(config, kind).append(f"fd://{fd}")
