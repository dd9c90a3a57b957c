"""Installed, Canopy is one import name: ``canopy``, its layers ``canopy.server``,
``canopy.handlers`` and ``canopy.nurseries`` mapped from the repository's folders."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
LAYERS = ("server", "handlers", "nurseries")


def test_every_folder_of_code_is_a_listed_package() -> None:
    """setuptools installs only the packages pyproject lists: a new subpackage left
    out of the list would be missing from every wheel, and work in a checkout."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"canopy"}
    for layer in LAYERS:
        for init in (ROOT / layer).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            if parts[:2] != ("server", "canopy"):
                folders.add(".".join(("canopy", *parts)))
    assert sorted(setuptools["packages"]) == sorted(folders)
    assert setuptools["package-dir"]["canopy"] == "server/canopy"


def test_the_wheel_adds_one_import_name(installed_canopy: Path) -> None:
    names = {
        path.name for path in installed_canopy.iterdir() if not path.name.endswith(".dist-info")
    }
    assert names == {"canopy", "bin"}
    assert (installed_canopy / "canopy" / "handlers" / "pages" / "dashboard.html").is_file()
    client = installed_canopy / "canopy" / "handlers" / "topics" / "js"
    assert sorted(p.name for p in client.iterdir()) == ["canopy.d.ts", "canopy.js", "package.json"]
    assert not (installed_canopy / "canopy" / "server" / "canopy").exists()


def test_only_canopy_imports_from_the_wheel(installed_canopy: Path, tmp_path: Path) -> None:
    """Run where no checkout is on the path: ``server`` and ``handlers`` are the user's
    names to take, and ``python -m canopy`` is the command."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import importlib.util, canopy, canopy.server, canopy.handlers.orders\n"
        "print(canopy.__file__.startswith(sys.argv[1]))\n"
        "print([n for n in ('server', 'handlers', 'nurseries') if importlib.util.find_spec(n)])\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(installed_canopy)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True", "[]"]
