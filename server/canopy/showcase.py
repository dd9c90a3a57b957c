"""Canopy's showcase: every capability in one app, what ``canopy serve`` serves when it
is given no app (``canopy.showcase:app``). Built on the public API alone."""

import canopy
from canopy import capabilities, reference

__all__ = ["app", "create_app"]


def create_app() -> canopy.App:
    """A new showcase app; ``app`` is one made at import."""
    app = canopy.App("canopy")
    # A demo: anyone may enqueue, cancel and retry jobs and set stock, and the first
    # log line of canopy serve says so. CANOPY_ANONYMOUS_OPERATIONS= closes it.
    app.allow_anonymous("jobs:enqueue:*", "jobs:admin", "orders:admin")
    app.topics("public.*", subscribe="anyone")
    app.include(capabilities.jobs_api)
    app.include(capabilities.topics_api)
    app.include(reference.demo)
    app.include(reference.orders)
    app.include(reference.support)
    app.include(reference.ticker)
    app.include(capabilities.dashboard)
    return app


app = create_app()
