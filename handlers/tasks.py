"""Example tasks, so a fresh server has real work to run: echo, sleep, and always-fail."""

from __future__ import annotations

from typing import Any

import trio

from canopy.nurseries.jobs import RetryPolicy, TaskRegistry

__all__ = ["MAX_SLEEP", "register_examples"]

MAX_SLEEP = 60.0


def register_examples(registry: TaskRegistry) -> None:
    @registry.task("demo.echo")
    async def echo(args: dict[str, Any]) -> dict[str, Any]:
        return args

    @registry.task("demo.sleep", timeout=MAX_SLEEP + 5)
    async def sleep(args: dict[str, Any]) -> dict[str, float]:
        seconds = args.get("seconds", 1)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError("seconds must be a number")
        seconds = min(max(float(seconds), 0.0), MAX_SLEEP)
        await trio.sleep(seconds)
        return {"slept": seconds}

    @registry.task("demo.fail", retry=RetryPolicy(max_attempts=3, base=0.2, cap=1.0))
    async def fail(args: dict[str, Any]) -> None:
        raise RuntimeError(str(args.get("message", "this task always fails")))
