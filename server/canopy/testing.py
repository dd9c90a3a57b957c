"""Testing an app on Canopy with pytest-trio.

``async with canopy.testing.serve_app(app) as served:`` assembles the app and serves
it in the test's own process, on a real socket of 127.0.0.1 with its whole tree and
a store in a new temporary folder, exactly as ``canopy serve`` would; then
``served.http`` (an httpx client), ``served.topics()`` (a WebSocket client) and
``await served.run_jobs()`` (what was enqueued has run). The block's end drains the
app as SIGTERM does.

On pytest-trio's ``autojump_clock`` it serves on a Unix socket in that folder and
stamps jobs with the jumping clock, so a retry's backoff, a delayed job or an hourly
schedule passes at once; ``served.http`` and ``served.topics()`` work the same. A
thread (``trio.Path``, ``trio.to_thread``) in the app's own code is invisible to that
clock, which may jump past a deadline while it runs: keep them out of code tested so.
"""

from canopy.server.runtime._testing import Served, TopicsClient, serve_app

__all__ = ["Served", "TopicsClient", "serve_app"]
