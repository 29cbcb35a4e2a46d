"""Test configuration shared by the whole suite.

* Every ``tests/fix_*.py`` module is loaded as a pytest plugin (fixtures for real servers, the
  loopback proxy, throwaway servers, TLS).
* An exception that reaches an event loop's exception handler (a task that died unobserved, a
  callback that raised) fails the test that caused it, like asyncpg's test base.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = sorted(p.stem for p in Path(__file__).parent.glob("fix_*.py"))
# Fixture modules import each other; mark them all for assertion rewriting before any loads.
pytest.register_assert_rewrite(*pytest_plugins)


@pytest.fixture(autouse=True)
def _loop_errors_fail_the_test() -> Iterator[list[dict[str, Any]]]:
    """Collect what event loops report to their exception handler and fail on it."""
    errors: list[dict[str, Any]] = []
    original = asyncio.BaseEventLoop.call_exception_handler

    def record(self: asyncio.BaseEventLoop, context: dict[str, Any]) -> None:
        errors.append(context)
        original(self, context)

    asyncio.BaseEventLoop.call_exception_handler = record  # type: ignore[method-assign]
    try:
        yield errors
        gc.collect()
    finally:
        asyncio.BaseEventLoop.call_exception_handler = original  # type: ignore[method-assign]
    if errors:
        messages = "; ".join(str(e.get("message")) + f" ({e.get('exception')!r})" for e in errors)
        pytest.fail(f"the event loop reported unhandled errors: {messages}")
