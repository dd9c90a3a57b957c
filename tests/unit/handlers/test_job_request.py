"""POST /jobs has one source of truth: the rules JobRequest.parse checks are the ones
the OpenAPI document's NewJob model states. Any body, checked both ways, gets the
same verdict (the model strictly, as JSON has no "5" for 5)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from canopy.handlers.jobs import MAX_ATTEMPTS, MAX_DELAY, MAX_TIMEOUT, JobRequest, NewJob

NUMBERS = st.one_of(
    st.integers(min_value=-(2**32), max_value=2**32),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.0, MAX_DELAY, MAX_DELAY + 1, MAX_TIMEOUT, MAX_TIMEOUT + 0.5]),
    st.sampled_from([MAX_ATTEMPTS, MAX_ATTEMPTS + 1, 2**31, 2**31 + 1, -(2**31), -(2**31) - 1]),
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    st.text(max_size=3),
    st.text(min_size=199, max_size=201),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.integers(), max_size=2),
)
FIELDS = ["task", "args", "queue", "priority", "delay", "timeout", "max_attempts"]
SOME = st.dictionaries(st.sampled_from([*FIELDS, "idempotency_key", "dealy"]), VALUES, max_size=5)
# Most with a good task, so that the other fields decide.
BODIES = st.one_of(SOME, SOME.map(lambda body: {**body, "task": "t"}))


def parsed(body: dict[str, Any]) -> bool:
    try:
        JobRequest.parse(body, decoded=True)
    except ValueError:
        return False
    return True


def modelled(body: dict[str, Any]) -> bool:
    try:
        NewJob.model_validate(body, strict=True)
    except ValidationError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(BODIES)
def test_the_parser_and_the_documented_model_agree(body: dict[str, Any]) -> None:
    assert parsed(body) == modelled(body), body


def test_what_only_the_parser_can_say() -> None:
    """Across fields and against the clock, which a schema cannot state."""
    assert not parsed({"task": "t", "delay": 1, "run_at": 1})
    assert not parsed({"task": "t", "run_at": 10**12})
    assert parsed({"task": "t", "run_at": 1})
