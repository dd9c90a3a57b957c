"""The ticker API over :class:`TickerService` (docs/API.md, "Ticker")."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint
from quart_schema import document_response

from canopy.nurseries.fanout import InvalidTopic, check_topic

from .._errors import ApiError, store_unavailable
from .._requests import verified_grants
from .._schema import ErrorBody, body
from ..grants import TokenIssuer
from ._model import AlertState, Direction, InvalidAlert, alerts_topic
from ._service import TickerService, TooManyAlerts
from ._store import AlertStoreError

__all__ = ["create_blueprint"]

T = TypeVar("T")


class NewAlert(BaseModel):
    model_config = ConfigDict(strict=True)

    symbol: str = Field(min_length=1, max_length=64)
    price: float = Field(gt=0, allow_inf_nan=False, description="the threshold")
    direction: Direction | None = Field(
        None, strict=False, description="left out: away from where the price is now"
    )


class AlertOut(BaseModel):
    id: str
    owner: str
    symbol: str
    direction: Direction
    threshold: float
    state: AlertState
    created_at: float
    triggered_at: float | None
    trigger_price: float | None
    topic: str


class Alerts(BaseModel):
    alerts: list[AlertOut]


class TickOut(BaseModel):
    symbol: str
    price: float
    seq: int
    at: float


class SymbolOut(BaseModel):
    symbol: str
    price: float | None = None
    seq: int | None = None
    at: float | None = None


class Symbols(BaseModel):
    symbols: list[SymbolOut]


async def _call(call: Awaitable[T]) -> T:
    try:
        return await call
    except InvalidAlert as exc:
        raise ApiError(422, "invalid_field", str(exc), field=exc.field) from None
    except TooManyAlerts as exc:
        raise ApiError(429, "limit_reached", str(exc)) from None
    except AlertStoreError as exc:
        raise store_unavailable("alert", exc) from None


def create_blueprint(service: TickerService, issuer: TokenIssuer) -> Blueprint:
    blueprint = Blueprint("ticker", __name__, url_prefix="/ticker")

    def owner() -> str:
        """Who the token names, once it may hear its alerts (``alerts.{sub}``)."""
        if not issuer.secret:
            raise ApiError(
                503, "not_configured", "alerts need CANOPY_TOPICS_SECRET: a token names the owner"
            )
        grants = verified_grants(issuer, "a token is required (Bearer)")
        try:
            topic = check_topic(alerts_topic(grants.client))
        except InvalidTopic:
            raise ApiError(
                403, "forbidden", "this token's sub cannot name an alerts topic"
            ) from None
        if not grants.may_subscribe(topic):
            raise ApiError(403, "forbidden", f"this token may not subscribe to {topic}")
        return grants.client

    @blueprint.get("/symbols")
    @document_response(Symbols, 200)
    async def symbols() -> Any:
        """Every symbol's latest price (none yet before its first tick)."""
        latest = service.latest
        return {
            "symbols": [
                latest[s].to_dict() if s in latest else {"symbol": s} for s in service.symbols()
            ]
        }

    @blueprint.get("/symbols/<symbol>")
    @document_response(TickOut, 200)
    @document_response(ErrorBody, 404)
    async def symbol(symbol: str) -> Any:
        """One symbol's latest price."""
        tick = service.latest.get(symbol)
        if tick is None:
            raise ApiError(404, "not_found", f"no price for {symbol}")
        return tick.to_dict()

    @blueprint.post("/alerts")
    @body(NewAlert, auth=owner)
    @document_response(AlertOut, 201)
    @document_response(ErrorBody, 422)
    async def add_alert(data: NewAlert, who: str) -> Any:
        """Tell the token's owner, on ``alerts.{owner}``, when a price crosses a threshold."""
        alert = await _call(service.add_alert(who, data.symbol, data.price, data.direction))
        return alert.to_dict(), 201, {"Location": f"/ticker/alerts/{alert.id}"}

    @blueprint.get("/alerts")
    @document_response(Alerts, 200)
    async def alerts() -> Any:
        """The owner's alerts, newest first."""
        found = await _call(service.store.by_owner(owner(), 1000))
        return {"alerts": [alert.to_dict() for alert in found]}

    @blueprint.delete("/alerts/<alert_id>")
    @document_response(AlertOut, 200)
    @document_response(ErrorBody, 409)
    async def cancel(alert_id: str) -> Any:
        """Cancel an active alert of the owner's."""
        who = owner()
        alert = await _call(service.store.get(alert_id))
        if alert is None or alert.owner != who:
            raise ApiError(404, "not_found", f"no alert {alert_id} of yours")
        cancelled = await _call(service.cancel_alert(alert))
        if cancelled is None:
            raise ApiError(409, "not_active", f"alert {alert_id} is {alert.state.value}")
        return cancelled.to_dict()

    return blueprint
