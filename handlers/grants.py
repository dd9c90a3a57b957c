"""Who may subscribe or publish to which topics: grants, and the signed tokens that carry them.

Below the capabilities: the topics protocol checks them, and so do the routes of the
others that take a token (support's conversations, the ticker's alerts, the
dashboard), each without importing topics.

A token is a JWT signed with HMAC (HS256) by whoever issues credentials (your login
service, or ``canopy token``). Its claims:

- ``sub``: the client's id, shown in presence;
- ``subscribe`` / ``publish``: lists of topic patterns (``orders.1234``, ``orders.*``, ``*``);
- ``info``: optional JSON shown in presence;
- ``exp``: optional expiry (seconds since the epoch);
- ``operations``: what an operator may do besides topics: ``jobs:enqueue:<task
  pattern>`` (``jobs:enqueue:*``, ``jobs:enqueue:shop.*``), ``jobs:admin`` (cancel a
  job, retry a dead letter), ``orders:admin`` (set stock). A grant ending in ``*``
  after a ``:`` or a ``.`` covers what begins with the rest (``jobs:*``: all three of
  the jobs').

Without a token a client has the anonymous grants from the settings.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from canopy.nurseries.fanout import InvalidTopic, check_pattern

__all__ = ["Forbidden", "Grants", "InvalidToken", "TokenIssuer", "allows", "covers"]

ALGORITHM = "HS256"


class Forbidden(PermissionError):
    """What the caller's grants do not allow: a 403, or an error frame on a socket."""


class InvalidToken(ValueError):
    pass


def covers(grant: str, pattern: str) -> bool:
    """Whether ``grant`` includes every topic ``pattern`` can match."""
    if grant == "*":
        return True
    if grant.endswith(".*"):
        return pattern.startswith(grant[:-1]) or pattern == grant
    return grant == pattern


def allows(grant: str, operation: str) -> bool:
    """Whether the operator grant ``grant`` covers ``operation`` (see the module)."""
    if grant == operation or grant == "*":
        return True
    prefix = grant[:-1]
    return grant.endswith("*") and prefix.endswith((":", ".")) and operation.startswith(prefix)


@dataclass(frozen=True)
class Grants:
    client: str = ""
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    info: Any = None
    anonymous: bool = True
    operations: tuple[str, ...] = ()

    def may(self, operation: str) -> bool:
        """Whether these grants allow an operator's ``operation`` (``jobs:admin``)."""
        for grant in self.operations:
            if allows(grant, operation):
                return True
        return False

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
    anonymous_operations: tuple[str, ...] = ()

    @functools.cached_property
    def operator(self) -> Grants:
        """What anyone may do as an operator: the anonymous operations alone, one
        object for every request that brings no token (no client id is drawn)."""
        return Grants(operations=self.anonymous_operations)

    def anonymous(self) -> Grants:
        client = f"anon-{secrets.token_hex(4)}"
        return Grants(
            client,
            self.anonymous_subscribe,
            self.anonymous_publish,
            operations=self.anonymous_operations,
        )

    def issue(
        self,
        client: str,
        *,
        subscribe: Sequence[str] = (),
        publish: Sequence[str] = (),
        ttl: float | None = 3600.0,
        info: Any = None,
        operations: Sequence[str] = (),
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
        if operations:
            claims["operations"] = list(operation_grants(operations))
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
            operations = operation_grants(claims.get("operations", ()))
        except (InvalidTopic, TypeError, ValueError) as exc:
            raise InvalidToken(f"the token's grants are invalid ({exc})") from None
        return Grants(
            client, subscribe, publish, claims.get("info"), anonymous=False, operations=operations
        )


def _patterns(values: Iterable[Any]) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise TypeError("patterns must be a list")
    return tuple(check_pattern(value) for value in values)


def operation_grants(values: Iterable[Any]) -> tuple[str, ...]:
    """Operator grants as given (a list of ``area:action[:pattern]``), or ValueError."""
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ValueError("operations must be a list")
    for value in values:
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise ValueError(f"not an operation grant: {value!r}")
        if value != "*" and ":" not in value:
            raise ValueError(f"not an operation grant: {value!r} (as jobs:admin)")
    return tuple(values)
