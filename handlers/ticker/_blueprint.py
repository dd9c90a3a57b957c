"""The ticker API over :class:`TickerService` (docs/API.md, "Ticker")."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from quart import Blueprint, request

from nurseries.fanout import InvalidTopic, check_topic

from .._errors import ApiError
from .._requests import bearer_token, json_object
from ..topics import Grants, InvalidToken, TokenIssuer
from ._model import InvalidAlert, alerts_topic
from ._service import TickerService, TooManyAlerts
from ._store import AlertStoreError

__all__ = ["create_blueprint"]

T = TypeVar("T")


async def _call(call: Awaitable[T]) -> T:
    try:
        return await call
    except InvalidAlert as exc:
        raise ApiError(422, "invalid_field", str(exc), field=exc.field) from None
    except TooManyAlerts as exc:
        raise ApiError(429, "limit_reached", str(exc)) from None
    except AlertStoreError as exc:
        raise ApiError(503, "store_unavailable", f"the alert store failed: {exc}") from None


def create_blueprint(service: TickerService, issuer: TokenIssuer) -> Blueprint:
    blueprint = Blueprint("ticker", __name__, url_prefix="/ticker")

    def owner() -> str:
        """Who the token names, once it may hear its alerts (``alerts.{sub}``)."""
        if not issuer.secret:
            raise ApiError(
                503, "not_configured", "alerts need CANOPY_TOPICS_SECRET: a token names the owner"
            )
        token = bearer_token(request.headers, request.args)
        if token is None:
            raise ApiError(401, "invalid_token", "a token is required (Bearer)")
        try:
            grants: Grants = issuer.verify(token)
            topic = check_topic(alerts_topic(grants.client))
        except InvalidToken as exc:
            raise ApiError(401, "invalid_token", str(exc)) from None
        except InvalidTopic:
            raise ApiError(
                403, "forbidden", "this token's sub cannot name an alerts topic"
            ) from None
        if not grants.may_subscribe(topic):
            raise ApiError(403, "forbidden", f"this token may not subscribe to {topic}")
        return grants.client

    @blueprint.get("/symbols")
    async def symbols() -> Any:
        latest = service.latest
        return {
            "symbols": [
                latest[s].to_dict() if s in latest else {"symbol": s} for s in service.symbols()
            ]
        }

    @blueprint.get("/symbols/<symbol>")
    async def symbol(symbol: str) -> Any:
        tick = service.latest.get(symbol)
        if tick is None:
            raise ApiError(404, "not_found", f"no price for {symbol}")
        return tick.to_dict()

    @blueprint.post("/alerts")
    async def add_alert() -> Any:
        who, body = owner(), await json_object()
        direction = body.get("direction")
        if direction is not None and not isinstance(direction, str):
            raise ApiError(422, "invalid_field", "direction: above or below", field="direction")
        alert = await _call(
            service.add_alert(who, str(body.get("symbol", "")), body.get("price"), direction)
        )
        return alert.to_dict(), 201, {"Location": f"/ticker/alerts/{alert.id}"}

    @blueprint.get("/alerts")
    async def alerts() -> Any:
        found = await _call(service.store.by_owner(owner(), 1000))
        return {"alerts": [alert.to_dict() for alert in found]}

    @blueprint.delete("/alerts/<alert_id>")
    async def cancel(alert_id: str) -> Any:
        who = owner()
        alert = await _call(service.store.get(alert_id))
        if alert is None or alert.owner != who:
            raise ApiError(404, "not_found", f"no alert {alert_id} of yours")
        cancelled = await _call(service.cancel_alert(alert))
        if cancelled is None:
            raise ApiError(409, "not_active", f"alert {alert_id} is {alert.state.value}")
        return cancelled.to_dict()

    return blueprint
