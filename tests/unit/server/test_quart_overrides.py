"""Canopy's replacements of Quart and Quart-Trio internals (server/pipeline/_quart.py)
hold for the versions installed: the upstream code each one replaces, copies or relies
on is the code it was written against (Quart 0.22.0, Quart-Trio 0.12.0, werkzeug 3.1)."""

from __future__ import annotations

from typing import Any

import pytest

from canopy.server.pipeline import _quart
from tests.upstream import digest, resolve

# The libraries the module overrides (Quart builds on Flask's sans-I/O app and werkzeug).
UPSTREAM_LIBRARIES = ("quart", "quart_trio", "flask", "werkzeug")

# Each upstream function, by the 16 first hex digits of its source's sha256. A new
# release that changes one must be read against _quart.py before it is pinned anew.
PINNED = {
    # Overridden by a method of the same name in _quart.py (found by the test below).
    "flask.json.provider.DefaultJSONProvider.response": "9254e25fd3cf4013",
    "flask.json.provider.JSONProvider.__init__": "1c214e9a78accef3",
    "quart.app.Quart.create_url_adapter": "7e84fbc613b08e33",
    "quart.app.Quart.ensure_async": "4beeb64991943852",
    "quart.app.Quart.make_response": "7f512be0477e54ac",
    "quart.app.Quart.request_context": "e8c7c0ef791c952f",
    "quart.ctx._BaseRequestWebsocketContext.match_request": "3e544488ebccc1d3",
    "quart.sessions.SecureCookieSessionInterface.open_session": "2ad402652d465af0",
    "quart.wrappers.base.BaseRequestWebsocket.blueprints": "a5160d6b49c9e5fb",
    "quart_trio.asgi.TrioASGIHTTPConnection.__call__": "98802020652fd68b",
    "quart_trio.asgi.TrioASGIWebsocketConnection.__call__": "19a30b784cba4451",
    "quart_trio.asgi.TrioASGIWebsocketConnection.__init__": "97d726e11e76767b",
    "quart_trio.asgi.TrioASGIWebsocketConnection._create_websocket_from_scope": (
        "0d6687967dbfb381"
    ),
    "quart_trio.asgi.TrioASGIWebsocketConnection.handle_messages": "20fdfb544cd40367",
    "quart_trio.wrappers.request.TrioRequest.get_data": "99ca1e972bf602a5",
    "werkzeug.sansio.request.Request.content_length": "949bd20b0528fd39",
}
# Copied or called for their internals, under another name: what _handle_plainly and
# _dispatch_plainly do in one pass, the request built from the scope, the private
# helpers imported, and werkzeug's Headers._list that listed_headers fills.
RELIED_ON = {
    "quart_trio.app.QuartTrio.handle_request": "663b07e762fa6fde",
    "quart.app.Quart.full_dispatch_request": "de88165a13cbaed5",
    "quart.app.Quart.finalize_request": "2fb6962cb2259df9",
    "quart.ctx._BaseRequestWebsocketContext._push": "ba8a85ca4753566e",
    "quart.asgi.ASGIHTTPConnection._create_request_from_scope": "3476af7fd451af28",
    "quart.asgi.ASGIWebsocketConnection.handle_websocket": "9b8fccf2a2f3765d",
    "quart.asgi._normalise_path": "2baac3c66c98bd50",
    "quart.helpers._split_blueprint_path": "7f34ff371fdd72c4",
    "werkzeug.datastructures.headers.Headers.__init__": "b21f4252303cea3d",
}


def overridden() -> dict[str, Any]:
    """Each upstream function or property that a class of _quart.py defines again."""
    found: dict[str, Any] = {}
    for cls in vars(_quart).values():
        if not isinstance(cls, type) or cls.__module__ != _quart.__name__:
            continue
        upstream = [b for b in cls.__mro__[1:] if b.__module__.startswith(UPSTREAM_LIBRARIES)]
        for attr, mine in vars(cls).items():
            if isinstance(mine, type) or not (
                callable(mine) or isinstance(mine, (property, staticmethod, classmethod))
            ):
                continue  # a class attribute naming one of ours (request_class, ...)
            for base in upstream:
                if attr in vars(base):
                    found[f"{base.__module__}.{base.__qualname__}.{attr}"] = vars(base)[attr]
                    break
    return found


def test_every_override_is_pinned() -> None:
    """A method added to _quart.py that replaces an upstream one must be pinned too."""
    assert sorted(overridden()) == sorted(PINNED)


@pytest.mark.parametrize("dotted", sorted(PINNED))
def test_the_overridden_upstream_code_is_unchanged(dotted: str) -> None:
    assert digest(overridden()[dotted]) == PINNED[dotted], (
        f"upstream changed {dotted}: read it against server/pipeline/_quart.py, then pin it"
    )


@pytest.mark.parametrize("dotted", sorted(RELIED_ON))
def test_the_upstream_code_relied_on_is_unchanged(dotted: str) -> None:
    assert digest(resolve(dotted)) == RELIED_ON[dotted], (
        f"upstream changed {dotted}: read it against server/pipeline/_quart.py, then pin it"
    )
