"""JSON decoded by orjson where it gives what ``json`` gives, and by ``json`` elsewhere.

orjson decodes a small object in about a fifth of ``json``'s time, and refuses most of
what it reads differently: NaN and Infinity, a leading byte-order mark, UTF-16 and
-32, lone surrogates, numbers too large for a double. One difference it does not
refuse: an integer beyond 64 bits becomes a float, so ``2**70 + 1`` would be read
back as ``2**70``. Text holding a run of 19 digits (every integer outside the 64-bit
range has one) goes to the fallback instead; digits inside a string send it there
too, which costs only time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["json_loads"]

_LONG_TEXT = re.compile(r"\d{19}")
_LONG_BYTES = re.compile(rb"\d{19}")


def json_loads(data: str | bytes, fallback: Callable[[Any], Any] = json.loads) -> Any:
    """``fallback(data)``, computed by orjson when that gives the same value."""
    if isinstance(data, bytes):
        exact = _LONG_BYTES.search(data) is None
    else:
        exact = _LONG_TEXT.search(data) is None
    if exact:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return fallback(data)
