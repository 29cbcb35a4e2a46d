"""FIFO waiters with direct handoff.

Design (after anyio's ``Semaphore`` and psycopg's ``WaitingClient.set() -> bool``): a waiter is a
future in a deque. A connection that becomes available is *handed* to the oldest waiter whose
future is still pending by setting its result, so a newcomer can never barge in front of it.

A waiter that times out or is cancelled leaves its (done) future in the deque; ``hand_over`` skips
done futures, so removal is O(1) and lazy. ``len()`` counts live waiters only. Every future is
accounted for exactly once: by ``hand_over`` (result set), by ``fail_all`` (exception set), or by
the waiter itself through ``discard`` (timed out or cancelled).

A waiter cancelled *after* the handoff (the result was set but its task was cancelled before it
ran) must give the connection back; the pool does that in its acquire path.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ("Waiters",)

T = TypeVar("T")


class Waiters(Generic[T]):
    """A FIFO queue of futures waiting for a ``T`` (or ``None``: timed out)."""

    __slots__ = ("_live", "_queue")

    def __init__(self) -> None:
        self._queue: deque[asyncio.Future[T | None]] = deque()
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def __bool__(self) -> bool:
        return self._live > 0

    def push(self, fut: asyncio.Future[T | None]) -> None:
        """Queue ``fut`` behind every waiter already there."""
        self._queue.append(fut)
        self._live += 1

    def discard(self) -> None:
        """Account for a waiter that gave up (timed out or cancelled) before any handoff."""
        self._live -= 1
        if self._live == 0:
            self._queue.clear()

    def hand_over(self, value: T) -> bool:
        """Give ``value`` to the oldest live waiter; return ``False`` if there is none."""
        queue = self._queue
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(value)
                self._live -= 1
                return True
        return False

    def fail_all(self, make_exc: Callable[[], BaseException]) -> int:
        """Fail every live waiter with a fresh ``make_exc()``; return how many there were."""
        failed = 0
        while self._queue:
            fut = self._queue.popleft()
            if not fut.done():
                fut.set_exception(make_exc())
                failed += 1
        self._live = 0
        return failed
