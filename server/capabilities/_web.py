"""The capabilities that put Canopy's core on the web: the jobs API, the topics
endpoint, the operators' dashboard. An app includes the ones it serves; each is the
blueprint of a service the app has anyway (every app has a job queue and a hub)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from canopy.handlers import bearer_token_of
from canopy.handlers import dashboard as dashboard_pages
from canopy.handlers import jobs as jobs_pages
from canopy.handlers import topics as topics_pages

from ..app._application import Capability
from ..app._capability import Assembly
from ..observe._dashboard import DashboardSnapshot

__all__ = ["dashboard", "jobs_api", "topics_api"]


class JobsAPI(Capability):
    """``POST /jobs`` and friends (docs/API.md): any task of the app, over HTTP."""

    name = "jobs_api"

    def install(self, assembly: Assembly) -> None:
        issuer = assembly.topics.issuer if assembly.topics is not None else None
        assembly.add_blueprint(jobs_pages.create_blueprint(assembly.jobs, issuer))


class TopicsAPI(Capability):
    """The WebSocket endpoint ``/ws`` and ``/topics/...`` (docs/PROTOCOL.md)."""

    name = "topics_api"

    def install(self, assembly: Assembly) -> None:
        if assembly.topics is not None:
            assembly.add_blueprint(topics_pages.create_blueprint(assembly.topics))
            if assembly.serving:
                assembly.app.websocket_sessions["/ws"] = partial(_session, assembly.topics)


def _session(service: topics_pages.TopicsService, upgrade: Any) -> Callable[[Any], Awaitable[None]]:
    """``/ws`` as Canopy's transport runs it (``canopy.server.transport._websocket``)."""
    token = bearer_token_of(upgrade.headers, upgrade.query_string)
    return partial(topics_pages.serve_socket, service, token)


class Dashboard(Capability):
    """``/dashboard``: a live page fed over the topic ``canopy.dashboard`` (it needs
    the topics endpoint, and a token that grants the topic)."""

    name = "dashboard"

    def install(self, assembly: Assembly) -> None:
        runtime = assembly.runtime
        if not assembly.serving or assembly.topics is None or runtime.metrics is None:
            return
        metrics = runtime.metrics
        snapshot = DashboardSnapshot(
            metrics, runtime.limit, runtime.tree.status, assembly.topics, lambda: metrics.store
        )
        feed = dashboard_pages.DashboardFeed(assembly.topics.hub, snapshot)
        assembly.add_service("dashboard", feed, grace=1.0)
        assembly.add_blueprint(dashboard_pages.create_blueprint(assembly.topics))


jobs_api = JobsAPI()
topics_api = TopicsAPI()
dashboard = Dashboard()
