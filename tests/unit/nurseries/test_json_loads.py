"""``canopy.nurseries.json_loads`` reads every text as ``json.loads`` does, value and type."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canopy.nurseries import json_loads
from tests.json_values import json_values

TEXTS = [
    '{"a": 1, "b": [1.5, null, true, "ü"], "c": {"d": -0}}',
    '{"a": 1, "a": 2}',
    "[18446744073709551615, -9223372036854775808]",  # the edges of orjson's integers
    "[18446744073709551616, -9223372036854775809]",  # one past them
    '{"n": 1180591620717411303425}',  # 2**70 + 1
    "1180591620717411303425",
    '{"s": "12345678901234567890123"}',  # a long number inside a string
    "1e999",
    '"\\ud800"',
    '["\ud800", 12345678901234567890]',  # a lone surrogate in a str (no bytes form)
    "[0.1, 1e-7, 123456789.125, 1.7976931348623157e308]",
]


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1.0 is not 1 here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("text", TEXTS)
def test_reads_what_json_reads(text: str) -> None:
    assert _same(json_loads(text), json.loads(text))
    if "\ud800" not in text:
        assert _same(json_loads(text.encode()), json.loads(text.encode()))


@pytest.mark.parametrize(
    "data", [b"\xef\xbb\xbf[1]", '{"a": 1}'.encode("utf-16"), b"[NaN, Infinity]"]
)
def test_what_orjson_refuses_goes_to_the_fallback(data: bytes) -> None:
    assert _same(json_loads(data), json.loads(data))
    seen: list[bytes] = []
    json_loads(data, lambda d: seen.append(d))
    assert seen == [data]


def test_errors_are_the_fallbacks() -> None:
    with pytest.raises(json.JSONDecodeError):
        json_loads("{")


@settings(max_examples=300, deadline=None)
@given(value=json_values(non_finite=True), ascii_only=st.booleans())
def test_any_text_json_writes_reads_back_the_same(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert _same(json_loads(text), json.loads(text))
    if ascii_only:
        assert _same(json_loads(text.encode()), json.loads(text.encode()))
