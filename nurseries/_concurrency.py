"""Concurrent sub-calls inside one unit of work (a request, a job).

Both helpers open a nursery for the duration of the call and return only when every
sub-call has finished or been cancelled, so nothing they start outlives them. They
take zero-argument callables (use ``functools.partial``) rather than coroutines, so
no coroutine is ever created and then left un-awaited.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

__all__ = ["first_completed", "gather"]

T = TypeVar("T")
Call = Callable[[], Awaitable[T]]


def _raise_errors(errors: Sequence[BaseException], message: str) -> None:
    if len(errors) == 1:
        raise errors[0]
    raise ExceptionGroup(message, [e for e in errors if isinstance(e, Exception)])


async def gather(*calls: Call[Any]) -> list[Any]:
    """All-or-nothing: run ``calls`` concurrently and return their results in order.

    The first failure cancels the siblings. When exactly one call failed, its
    exception propagates as it is (the common case, and the one callers want to
    catch); when several failed at the same moment, they come as an ExceptionGroup.
    """
    results: list[Any] = [None] * len(calls)

    async def run_one(index: int, call: Call[Any]) -> None:
        results[index] = await call()

    try:
        async with trio.open_nursery() as nursery:
            for index, call in enumerate(calls):
                nursery.start_soon(run_one, index, call)
    except ExceptionGroup as group:
        _raise_errors(group.exceptions, "several sub-calls failed")
    return results


async def first_completed(*calls: Call[T], stagger: float = 0.0) -> T:
    """First wins: return the first successful result and cancel the others.

    With ``stagger``, call *i* starts ``i * stagger`` seconds after the first one
    (a hedged request: the backup only costs anything when the primary is slow).
    A failing call does not end the race; only if every call fails are their
    errors raised (the single error as it is, several as an ExceptionGroup).
    """
    if not calls:
        raise ValueError("first_completed needs at least one call")
    winner: list[T] = []
    errors: list[Exception] = []

    async def run_one(index: int, call: Call[T], cancel_scope: trio.CancelScope) -> None:
        await trio.sleep(index * stagger)
        try:
            value = await call()
        except Exception as exc:
            errors.append(exc)
            return
        if not winner:
            winner.append(value)
            cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(run_one, index, call, nursery.cancel_scope)
    if winner:
        return winner[0]
    _raise_errors(errors, "every sub-call failed")
    raise AssertionError("unreachable")
