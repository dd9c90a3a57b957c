"""Shared fixtures. End-to-end helpers live in ``tests/e2e.py``."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so a leaked socket is blamed on the test that leaked it."""
    yield
    gc.collect()
