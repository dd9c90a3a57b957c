"""Testing an app on Canopy with pytest-trio.

``async with canopy.testing.serve_app(app) as served:`` assembles the app and serves
it in the test's own process, on a real socket of 127.0.0.1 with its whole tree and
a store in a new temporary folder, exactly as ``canopy serve`` would; then
``served.http`` (an httpx client), ``served.topics()`` (a WebSocket client) and
``await served.run_jobs()`` (what was enqueued has run). The block's end drains the
app as SIGTERM does.
"""

from canopy.server._testing import Served, TopicsClient, serve_app

__all__ = ["Served", "TopicsClient", "serve_app"]
