"""Who takes which waiting conversation: a plain function, no I/O.

Customers are served in the order they started waiting (a requeued conversation keeps
its original place, so it goes ahead of newer ones). Each goes to the connected,
available agent with room who has the fewest open conversations; among equals, the
one who was given a conversation longest ago, then by id, so the plan is
deterministic. An agent never gets more than their capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["AgentLoad", "plan_assignments"]


@dataclass
class AgentLoad:
    agent: str
    capacity: int
    open: int
    last_assigned: float = 0.0


def plan_assignments(
    waiting: Sequence[str], agents: Sequence[AgentLoad], now: float = 0.0
) -> list[tuple[str, str]]:
    """(conversation, agent) pairs for as many of ``waiting`` (oldest first) as fit."""
    loads = [AgentLoad(a.agent, a.capacity, a.open, a.last_assigned) for a in agents]
    pairs = []
    for conversation in waiting:
        free = [a for a in loads if a.open < a.capacity]
        if not free:
            break
        chosen = min(free, key=lambda a: (a.open, a.last_assigned, a.agent))
        chosen.open += 1
        chosen.last_assigned = now
        pairs.append((conversation, chosen.agent))
    return pairs
