"""Canopy's reference services, for an app to include: ``demo``, ``orders`` (idempotent
orders, a payment pipeline of jobs), ``support`` (support chat) and ``ticker`` (a
price feed and alerts). Each is built on the same public contract as a user's own
capability (``canopy.Capability``)."""

from canopy.server.capabilities._reference import demo, orders, support, ticker

__all__ = ["demo", "orders", "support", "ticker"]
