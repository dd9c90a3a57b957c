"""Liveness and readiness, read from the supervision tree.

``/healthz`` answers as long as the process can serve at all; ``/readyz`` answers
200 only while every service in the tree is running, so a load balancer stops
sending traffic the moment a drain begins or a service is restarting.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from quart import Blueprint

from canopy.nurseries import ServiceStatus

__all__ = ["HealthService", "create_blueprint"]


class HealthService:
    """Reports health from a status source; no I/O, so it answers even under load."""

    def __init__(self, status: Callable[[], ServiceStatus]) -> None:
        self._status = status

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        tree = self._status()
        body = {
            "status": "ready" if tree.ready else "not ready",
            "pid": os.getpid(),  # which process answered, with `workers = N`
            "tree": tree.to_dict(),
        }
        return tree.ready, body


def create_blueprint(health: HealthService) -> Blueprint:
    blueprint = Blueprint("health", __name__)

    @blueprint.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @blueprint.get("/readyz")
    async def readyz() -> tuple[dict[str, Any], int]:
        ready, body = health.readiness()
        return body, 200 if ready else 503

    return blueprint
