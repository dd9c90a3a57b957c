"""Who may subscribe or publish to which topics: grants, and the signed tokens that carry them.

Below the capabilities: the topics protocol checks them, and so do the routes of the
others that take a token (support's conversations, the ticker's alerts, the
dashboard), each without importing topics.

A token is a JWT signed with HMAC (HS256) by whoever issues credentials (your login
service, or ``canopy token``). Its claims:

- ``sub``: the client's id, shown in presence;
- ``subscribe`` / ``publish``: lists of topic patterns (``orders.1234``, ``orders.*``, ``*``);
- ``info``: optional JSON shown in presence;
- ``exp``: optional expiry (seconds since the epoch).

Without a token a client has the anonymous grants from the settings.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from canopy.nurseries.fanout import InvalidTopic, check_pattern

__all__ = ["Grants", "InvalidToken", "TokenIssuer", "covers"]

ALGORITHM = "HS256"


class InvalidToken(ValueError):
    pass


def covers(grant: str, pattern: str) -> bool:
    """Whether ``grant`` includes every topic ``pattern`` can match."""
    if grant == "*":
        return True
    if grant.endswith(".*"):
        return pattern.startswith(grant[:-1]) or pattern == grant
    return grant == pattern


@dataclass(frozen=True)
class Grants:
    client: str = ""
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    info: Any = None
    anonymous: bool = True

    def may_subscribe(self, pattern: str) -> bool:
        return any(covers(grant, pattern) for grant in self.subscribe)

    def may_publish(self, topic: str) -> bool:
        return any(covers(grant, topic) for grant in self.publish)


@dataclass(frozen=True)
class TokenIssuer:
    """Signs and verifies tokens with one secret; without a secret every token is refused."""

    secret: str = ""
    anonymous_subscribe: tuple[str, ...] = ()
    anonymous_publish: tuple[str, ...] = ()
    leeway: float = 5.0

    def anonymous(self) -> Grants:
        client = f"anon-{secrets.token_hex(4)}"
        return Grants(client, self.anonymous_subscribe, self.anonymous_publish)

    def issue(
        self,
        client: str,
        *,
        subscribe: Sequence[str] = (),
        publish: Sequence[str] = (),
        ttl: float | None = 3600.0,
        info: Any = None,
    ) -> str:
        if not self.secret:
            raise InvalidToken("no secret is configured (CANOPY_TOPICS_SECRET)")
        claims: dict[str, Any] = {
            "sub": client,
            "subscribe": list(_patterns(subscribe)),
            "publish": list(_patterns(publish)),
        }
        if ttl is not None:
            claims["exp"] = int(time.time() + ttl)
        if info is not None:
            claims["info"] = info
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Grants:
        if not self.secret:
            raise InvalidToken("this server accepts no tokens (no secret is configured)")
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM], leeway=self.leeway)
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is invalid ({exc})") from None
        client = claims.get("sub")
        if not isinstance(client, str) or not client:
            raise InvalidToken("the token has no 'sub' (client id)")
        try:
            subscribe = _patterns(claims.get("subscribe", ()))
            publish = _patterns(claims.get("publish", ()))
        except (InvalidTopic, TypeError) as exc:
            raise InvalidToken(f"the token's patterns are invalid ({exc})") from None
        return Grants(client, subscribe, publish, claims.get("info"), anonymous=False)


def _patterns(values: Iterable[Any]) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise TypeError("patterns must be a list")
    return tuple(check_pattern(value) for value in values)
