"""The parent of ``canopy serve`` with ``workers = N``: bind, run the pool, log."""

from __future__ import annotations

import contextlib
import logging
import os
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
    sockets = config.create_sockets()
    bound: list[tuple[str, object]] = []
    binds = []
    # Hypercorn reads `bind` as TLS when TLS is configured (and `insecure_bind` as
    # plain), else as plain: a worker gets each socket back under the same name.
    if config.ssl_enabled:
        groups = [
            ("bind", "https", sockets.secure_sockets),
            ("insecure_bind", "http", sockets.insecure_sockets),
        ]
    else:
        groups = [("bind", "http", sockets.insecure_sockets)]
    for kind, scheme, group in groups:
        for sock in group:
            sock.listen(config.backlog)
            bound.append((kind, sock))
            binds.append(f"{scheme}://{repr_socket_addr(sock.family, sock.getsockname())}")
    with metrics_directory() as directory:
        pool = WorkerPool(config.workers, bound, config_path, directory)  # type: ignore[arg-type]
        tree = Supervisor("canopy-workers")
        grace = config.graceful_timeout + config.shutdown_timeout + 3 * settings.service_grace + 5
        tree.add("workers", pool, grace=grace)

        def started() -> list[str]:
            for bind in binds:
                log.info("listening", extra={"bind": bind, "workers": config.workers})
            return binds

        await run_tree(tree, started=started)


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
