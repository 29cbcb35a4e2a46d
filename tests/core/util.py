"""Helpers for the core tests (fake clock, settling, task accounting)."""

from __future__ import annotations

import asyncio
from typing import Any

from poolkit import Pool


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


async def settle(pool: Pool[Any], *, limit: float = 5.0) -> None:
    """Wait until no connection is being opened, checked, reset or closed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        s = pool.stats()
        if s.connecting == 0 and s.checking == 0 and s.resetting == 0 and s.closing == 0:
            return
        if loop.time() > deadline:
            raise AssertionError(f"pool did not settle within {limit} s: {pool!r}")
        await asyncio.sleep(0.005)


def foreign_tasks() -> set[asyncio.Task[Any]]:
    """Tasks other than the current one (maintenance tasks excluded)."""
    current = asyncio.current_task()
    return {
        t
        for t in asyncio.all_tasks()
        if t is not current and not t.get_name().startswith("poolkit maintenance")
    }
