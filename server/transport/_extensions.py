"""The ASGI extensions Canopy's transport offers an app, by the keys of ``scope["extensions"]``.

The transport defines them and the app's connection classes read them; an app served
by any other server finds none and takes upstream's way.
"""

__all__ = ["CANCEL_ON_DISCONNECT", "TRANSPORT_EXTENSION"]

# In every call's scope: a dict of what the transport offers this call.
TRANSPORT_EXTENSION = "canopy.transport"
# In a WebSocket call's transport extension: a function the app may call with a
# callable (no arguments) for the transport to call at the client's disconnect,
# before the app reads the disconnect, if ever.
CANCEL_ON_DISCONNECT = "cancel_on_disconnect"
