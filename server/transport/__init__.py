"""Serving an ASGI app on Trio sockets through Hypercorn's protocol classes: listening
in batches, one task per connection, HTTP/1.1 requests run in the reading task, and
the drain (``HTTPService`` is a child of the supervision tree). It knows nothing of
Quart: it offers the app the ASGI extensions in ``_extensions``, and runs WebSocket
sessions itself, with no ASGI call, for the paths the app hands it (``_websocket``:
the topics' ``/ws``)."""

from ._service import CannotListen, HTTPService

__all__ = ["CannotListen", "HTTPService"]
