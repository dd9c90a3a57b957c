"""examples/embed_orders.py runs the orders service, its job runner and the hub in a
plain trio.run program (no web app or server) and sees its order confirmed."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

ROOT = Path(__file__).parent.parent


async def test_the_embedding_example_places_and_confirms_an_order(tmp_path: Path) -> None:
    done = await trio.run_process(
        [sys.executable, str(ROOT / "examples" / "embed_orders.py"), str(tmp_path)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    states = [line.rsplit(": ", 1)[1] for line in lines if line.startswith("customers.alice")]
    assert states == ["pending", "reserved", "paid", "confirmed"]
    assert lines[-1] == "apple left: 8"
    source = (ROOT / "examples" / "embed_orders.py").read_text()
    imported = {
        line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))
    }
    assert not {name.split(".")[0] for name in imported} & {"quart", "hypercorn", "server"}
