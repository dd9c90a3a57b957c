"""What the core takes from Trio's own modules rather than its public API, pinned: if
a Trio release moves it, this fails before the hub does."""

from __future__ import annotations

import subprocess
import sys

import trio._core
import trio.testing


def test_the_hubs_idle_wait_is_trios_own() -> None:
    assert trio._core.wait_all_tasks_blocked is trio.testing.wait_all_tasks_blocked


def test_importing_canopy_does_not_import_pytest() -> None:
    """A server is not a test run: trio.testing's helpers, and pytest with them, stay
    out of a process that only imports Canopy."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, canopy.server.runtime._cli; print(sorted(sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'pytest'" not in loaded and "'trio.testing'" not in loaded
