"""The operators' live dashboard: a page at ``/dashboard``, fed over the server's own
topics.

:class:`DashboardFeed` is a service that publishes a snapshot of the server (request
rate and latency, job queues and outcomes, the supervision tree, recent dead letters,
topics) to the topic ``canopy.dashboard`` once a second; the page subscribes to it
over ``/ws`` like any client. With several instances on one broker each publishes its
own, marked with its ``instance``; the page adds them up.

Access: the page and its subscription take a topics token (docs/PROTOCOL.md) that
grants ``canopy.dashboard``, e.g. ``TokenIssuer(secret).issue("ops",
subscribe=["canopy.dashboard"])``; ``/dashboard?token=...``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import trio
from quart import Blueprint, request

from canopy.nurseries.fanout import Hub, HubError

from ._errors import ApiError
from .grants import Grants, InvalidToken
from .topics import TopicsService

__all__ = ["TOPIC", "DashboardFeed", "create_blueprint"]

log = logging.getLogger("canopy.dashboard")

TOPIC = "canopy.dashboard"

Snapshot = Callable[[], Awaitable[dict[str, Any]]]


class DashboardFeed:
    """Publishes ``snapshot()`` to :data:`TOPIC` every ``interval`` seconds."""

    def __init__(self, hub: Hub, snapshot: Snapshot, *, interval: float = 1.0) -> None:
        self.hub = hub
        self.snapshot = snapshot
        self.interval = interval

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            # On a schedule, not after each publish: a rate is per `interval` seconds.
            deadline = trio.current_time() + self.interval
            if self.hub.broker is None and not self.hub.audience(TOPIC):
                await trio.sleep_until(deadline)  # nobody watches (here, the only place)
                continue
            try:
                await self.hub.publish(TOPIC, await self.snapshot())
            except HubError as exc:  # the broker is away: the next snapshot will do
                log.warning("dashboard snapshot not published: %s", exc)
            await trio.sleep_until(deadline)


def _grants(service: TopicsService) -> Grants:
    token = request.args.get("token") or ""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
    if not token:
        raise ApiError(401, "token_required", f"a token granting {TOPIC} is required (?token=)")
    try:
        grants = service.issuer.verify(token)
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", str(exc)) from None
    if not grants.may_subscribe(TOPIC):
        raise ApiError(403, "forbidden", f"the token does not grant {TOPIC}")
    return grants


def create_blueprint(service: TopicsService) -> Blueprint:
    blueprint = Blueprint("dashboard", __name__)
    page = (resources.files("canopy.handlers") / "pages" / "dashboard.html").read_text()

    @blueprint.get("/dashboard")
    async def dashboard() -> tuple[str, int, dict[str, str]]:
        _grants(service)
        return page, 200, {"Content-Type": "text/html; charset=utf-8"}

    return blueprint
