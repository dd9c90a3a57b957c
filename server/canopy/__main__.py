"""``python -m canopy``: the ``canopy`` command."""

from canopy.server._cli import main

main()
