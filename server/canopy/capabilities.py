"""Canopy's core on the web, for an app to include: ``jobs_api`` (``POST /jobs`` and
friends), ``topics_api`` (the WebSocket endpoint ``/ws`` and ``/topics/...``) and
``dashboard`` (the operators' live page). An app without them keeps its job queue
and its hub, used from its own routes, tasks and services."""

from canopy.server.capabilities._web import dashboard, jobs_api, topics_api

__all__ = ["dashboard", "jobs_api", "topics_api"]
