"""Putting the support chat in the supervision tree: its store, then the service."""

from __future__ import annotations

from handlers.support import SupportService, SupportStore
from handlers.topics import TopicsService
from nurseries import Supervisor

from ._settings import Settings

__all__ = ["add_support"]


def add_support(services: Supervisor, settings: Settings, topics: TopicsService) -> SupportService:
    """After the hub (the service watches agents' presence there); stopped before it."""
    store = SupportStore(settings.data_path / "support.db", synchronous=settings.sqlite_synchronous)
    services.add("support_store", store, grace=settings.service_grace)
    service = SupportService(
        store, topics.hub, topics.issuer, reassign_after=settings.support_reassign_after
    )
    services.add("support", service, grace=settings.service_grace)
    return service
