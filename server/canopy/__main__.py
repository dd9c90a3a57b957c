"""``python -m canopy``: the ``canopy`` command."""

from canopy.server.runtime._cli import main

main()
