"""The Canopy application: Quart-Trio plus the request pipeline every route runs through.

Per request, in order: a request id (taken from ``X-Request-ID`` or made), a slot in
the in-flight bound (503 + ``Retry-After`` when full, health routes exempt), a cancel
scope with the route's deadline around the view (504 when it passes), JSON errors for
everything that goes wrong, and one structured access-log line.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio
from quart import Response, current_app, has_websocket_context, request, websocket
from quart.ctx import RequestContext
from quart.globals import request_ctx
from quart.typing import ResponseReturnValue, ResponseTypes
from quart.wrappers import Request, Websocket
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from canopy.handlers import DEADLINE_ATTRIBUTE, ApiError, error_body, first_header
from canopy.handlers.jobs import JobsService
from canopy.handlers.topics import TopicsService
from canopy.nurseries import InflightLimit, Overloaded, Supervisor

from ..config._settings import Settings
from ..observe._access_log import AccessLog, RequestIds
from ..observe._metrics import Metrics, route_label
from ..observe._tracing import Tracing
from ._quart import LeanQuartTrio, body_too_large

__all__ = ["CanopyApp", "Runtime"]

error_log = logging.getLogger("canopy.error")

UNSHED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


@dataclass
class Runtime:
    """What the app shares with the serving layer: settings, the tree, the bounds."""

    settings: Settings
    tree: Supervisor
    services: Supervisor
    limit: InflightLimit
    access_log: AccessLog
    request_ids: RequestIds
    metrics: Metrics | None = None
    tracing: Tracing | None = None
    lifespan_owns_tree: bool = True
    jobs: JobsService | None = None
    topics: TopicsService | None = None  # None in a worker whose broker is its own memory


class CanopyApp(LeanQuartTrio):
    runtime: Runtime

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # WebSocket paths Canopy's transport runs itself, with no ASGI call: each a
        # ``WebSocketHandler`` (canopy.server.transport._websocket), given the upgrade
        # request, returning the session to run on the socket. Quart's route for the
        # same path serves them under any other server.
        self.websocket_sessions: dict[str, Callable[[Any], Callable[[Any], Awaitable[None]]]] = {}

    def transport_websockets(self) -> dict[str, Callable[[Any], Callable[[Any], Awaitable[None]]]]:
        """What the transport may take: none when the app hooks its WebSockets
        (``before_websocket`` and the like would not run for them)."""
        hooked = (self.before_websocket_funcs, self.after_websocket_funcs)
        if any(funcs for hooks in hooked for funcs in hooks.values()):
            return {}
        return dict(self.websocket_sessions)

    async def handle_websocket(self, websocket: Websocket) -> Any:
        # An id as a request has: the log line of a session's failure carries it.
        ids = self.runtime.request_ids
        websocket.canopy_request_id = _request_id(websocket.scope["headers"], ids)  # type: ignore[attr-defined]
        return await super().handle_websocket(websocket)

    async def handle_request(self, request: Request) -> Any:
        tracing = self.runtime.tracing
        if tracing is None:
            return await self._handle_request(request)
        with tracing.request(request.method, request.path, request.scope["headers"]) as span:
            response = await self._handle_request(request)
            route = route_label(request)
            span.update_name(f"{request.method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(tracing.error)
            return response

    async def _handle_request(self, request: Request) -> Any:
        started = time.perf_counter()
        runtime = self.runtime
        request_id = _request_id(request.scope["headers"], runtime.request_ids)
        request.canopy_request_id = request_id  # type: ignore[attr-defined]
        rejection = getattr(request, "canopy_rejection", None)
        response: ResponseTypes
        if rejection is not None:
            response = _error_response(rejection)
        elif request.path in UNSHED_PATHS:
            response = await self.run_request(request)
        else:
            try:
                with runtime.limit:
                    response = await self.run_request(request)
            except Overloaded as exc:
                response = _overloaded_response(exc)
                if runtime.metrics is not None:
                    runtime.metrics.shed.inc()
        # A 404 or 405 keeps its exception on the request, and the exception's traceback
        # holds frames that hold the request: a cycle for the collector
        # (tests/unit/server/test_gc.py).
        request.routing_exception = None
        response.headers["X-Request-ID"] = request_id
        if runtime.metrics is not None:
            runtime.metrics.observe(
                route_label(request),
                request.method,
                response.status_code,
                time.perf_counter() - started,
            )
        if runtime.settings.access_log:
            runtime.access_log.request(
                request.method,
                request.path,
                response.status_code,
                time.perf_counter() - started,
                request_id,
            )
        return response

    async def dispatch_request(self, request_context: RequestContext | None = None) -> Any:
        """Run the view under the route's deadline; its expiry cancels all the view awaits."""
        request_ = (request_context or request_ctx).request
        timeout = self.runtime.settings.request_timeout
        if request_.url_rule is not None:
            view = self.view_functions.get(request_.url_rule.endpoint)
            timeout = getattr(view, DEADLINE_ATTRIBUTE, timeout)
        with trio.CancelScope(deadline=trio.current_time() + timeout):
            return await super().dispatch_request(request_context)
        if self.runtime.metrics is not None:
            self.runtime.metrics.deadlines.inc()
        raise ApiError(504, "deadline_exceeded", f"the request took longer than {timeout:g} s")


def _request_id(headers: Iterable[tuple[bytes, bytes]], ids: RequestIds) -> str:
    """The client's X-Request-ID if it is sane, else a new one.

    Read from the ASGI scope (see ``canopy.handlers.first_header``).
    """
    given = first_header(headers, b"x-request-id")
    if given is not None and _REQUEST_ID.fullmatch(text := given.decode("latin-1")):
        return text
    return ids.next()


def _error_response(error: HTTPException) -> Response:
    if isinstance(error, ApiError):
        body = error_body(error.error_code, error.description or "", **error.details)
        headers = error.extra_headers
    else:
        name = re.sub(r"[^a-z0-9]+", "_", (error.name or "error").lower()).strip("_")
        body = error_body(name, error.description or error.name or "error")
        headers = {}
    response = Response(_dumps(body), status=error.code or 500, content_type="application/json")
    response.headers.update(headers)
    return response


def _overloaded_response(exc: Overloaded) -> Response:
    error = ApiError(
        503,
        "overloaded",
        "the server is at capacity; retry shortly",
        headers={"Retry-After": str(max(1, round(exc.retry_after)))},
    )
    return _error_response(error)


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


async def _http_error(error: HTTPException) -> ResponseReturnValue:
    if isinstance(error, RequestEntityTooLarge):  # Quart's own check (plain Hypercorn)
        error = body_too_large(current_app.config["MAX_CONTENT_LENGTH"])
    return _error_response(error)


async def _unhandled_error(error: Exception) -> ResponseReturnValue | None:
    """A bug in a view: 500, with the request id the log line has too (the
    traceback is for the log alone). In a WebSocket session, the session ends with
    1011 instead: there is no request to answer."""
    if has_websocket_context():
        await _websocket_failed(error)
        return None
    request_id = getattr(request, "canopy_request_id", None)
    error_log.error(
        "unhandled error in %s %s",
        request.method,
        request.path,
        exc_info=error,
        extra={"request_id": request_id},
    )
    message = "the server failed; its log has this request's id"
    return _error_response(ApiError(500, "internal_error", message, request_id=request_id))


async def _websocket_failed(error: Exception) -> None:
    error_log.error(
        "unhandled error in WebSocket %s",
        websocket.path,
        exc_info=error,
        extra={"request_id": getattr(websocket, "canopy_request_id", None)},
    )
    await websocket.close(1011, "internal error")


def _version() -> str:
    try:
        return importlib.metadata.version("canopy-server")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "0+unknown"
