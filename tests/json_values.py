"""A Hypothesis strategy for values ``json.dumps`` can write, for the JSON tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_values(*, non_finite: bool) -> st.SearchStrategy[Any]:
    """Nested lists and objects of null, booleans, integers beyond 64 bits, floats and
    any text; with ``non_finite``, NaN and the infinities too (``json`` writes them)."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.integers(min_value=-(2**80), max_value=2**80)
        | st.floats(allow_nan=non_finite, allow_infinity=non_finite)
        | st.text(),
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=8), children, max_size=5)
        ),
        max_leaves=20,
    )
