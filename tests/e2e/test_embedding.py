"""examples/embed_orders.py runs the orders service, its job runner and the hub in a
plain trio.run program (no web app or server) and sees its order confirmed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).parents[2]


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
    assert not {".".join(name.split(".")[:2]) for name in imported} & {
        "quart",
        "hypercorn",
        "canopy.server",
    }


SERVICES = (
    "canopy.handlers.orders",
    "canopy.handlers.support",
    "canopy.handlers.ticker",
    "canopy.handlers.topics",
    "canopy.handlers.tasks",
)


def test_the_services_import_without_the_web_stack() -> None:
    """A Trio program that embeds the services pays for no Quart, Hypercorn or werkzeug;
    asking for a blueprint is what imports them."""
    probe = (
        "import sys, importlib\n"
        f"for name in {SERVICES!r}: importlib.import_module(name)\n"
        "import canopy.handlers\n"
        "web = ('quart', 'hypercorn', 'werkzeug')\n"
        "print(sorted(m for m in web if m in sys.modules))\n"
        "canopy.handlers.orders.create_blueprint\n"
        "print(sorted(m for m in web if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "['hypercorn', 'quart', 'werkzeug']"]
