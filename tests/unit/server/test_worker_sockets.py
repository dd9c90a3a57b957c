"""``workers = N``: each worker listens on sockets of its own on the same address
(server/runtime/_pool.py), and the kernel spreads new connections evenly over them."""

from __future__ import annotations

import select
import socket
from collections import Counter
from pathlib import Path

from hypercorn.config import Config

from canopy.server.runtime._pool import bind_per_worker


def config(*binds: str, workers: int = 2) -> Config:
    made = Config()
    made.bind = list(binds)
    made.workers = workers
    return made


def close(sets: list[list[tuple[str, socket.socket]]]) -> None:
    for own in sets:
        for _, sock in own:
            sock.close()


def test_each_worker_gets_its_own_socket_on_the_port_the_first_got() -> None:
    sets, binds = bind_per_worker(config("127.0.0.1:0", workers=3))
    try:
        assert len(sets) == 3 and all(len(own) == 1 for own in sets)
        socks = [own[0][1] for own in sets]
        assert len({sock.fileno() for sock in socks}) == 3
        assert len({sock.getsockname() for sock in socks}) == 1
        port = socks[0].getsockname()[1]
        assert port != 0 and binds == [f"http://127.0.0.1:{port}"]
        assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for sock in socks)
    finally:
        close(sets)


def test_a_unix_socket_is_shared(tmp_path: Path) -> None:
    path = tmp_path / "canopy.sock"
    sets, _ = bind_per_worker(config("127.0.0.1:0", f"unix:{path}"))
    try:
        (kind_a, tcp_a), (_, unix_a) = sets[0]
        (kind_b, tcp_b), (_, unix_b) = sets[1]
        assert kind_a == kind_b == "bind"
        assert tcp_a is not tcp_b and unix_a is unix_b
    finally:
        close(sets)


def test_connections_spread_evenly_over_the_workers_sockets() -> None:
    sets, _ = bind_per_worker(config("127.0.0.1:0"))
    listeners = [own[0][1] for own in sets]
    port = listeners[0].getsockname()[1]
    clients, accepted = [], Counter[int]()
    try:
        for _ in range(400):
            clients.append(socket.create_connection(("127.0.0.1", port)))
            # Take what is waiting, so no backlog fills.
            ready, _, _ = select.select(listeners, [], [], 0.5)
            for listener in ready:
                server_side, _ = listener.accept()
                server_side.close()
                accepted[listeners.index(listener)] += 1
        while sum(accepted.values()) < 400:
            ready, _, _ = select.select(listeners, [], [], 1.0)
            assert ready, "a connection was never accepted"
            for listener in ready:
                listener.accept()[0].close()
                accepted[listeners.index(listener)] += 1
    finally:
        for client in clients:
            client.close()
        close(sets)
    # One shared socket would give them to whichever accepted first; hashed over two
    # sockets, each gets about half (a binomial's 4 standard deviations: 40).
    assert abs(accepted[0] - 200) <= 40, accepted
