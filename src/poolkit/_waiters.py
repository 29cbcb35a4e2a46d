"""FIFO waiters with direct handoff, and one timer for all of their deadlines.

Design (after anyio's ``Semaphore`` and psycopg's ``WaitingClient.set() -> bool``): a waiter is a
future in a deque. A connection that becomes available is *handed* to the oldest waiter whose
future is still pending by setting its result, so a newcomer can never barge in front of it.

A waiter that times out or is cancelled leaves its (done) future in the deque; ``hand_over`` skips
done futures, so removal is O(1) and lazy. ``len()`` counts live waiters only. Every future is
accounted for exactly once: by ``hand_over`` (result set), by ``fail_all`` (exception set), or by
the waiter itself through ``discard`` (timed out or cancelled).

A waiter cancelled *after* the handoff (the result was set but its task was cancelled before it
ran) must give the connection back; the pool does that in its acquire path.

Deadlines. A timer per waiter (``call_later`` on arrival, ``cancel`` on handoff) is a large
share of a contended acquire's cost, and it is almost always wasted. Waiters usually share one
timeout, so their deadlines grow in arrival order: the earliest pending deadline is then the
one of the oldest live waiter. So the queue keeps *one* timer, armed for the oldest deadline;
when it fires it expires (result ``None``) every waiter whose deadline passed and re-arms for
the next one. With a 30 s timeout and waits of milliseconds it fires about once per 30 s instead
of being created and cancelled on every acquire. A waiter whose deadline is earlier than one
already queued (a shorter per-call timeout) would break that order: it gets a timer of its own
(``push`` returns it; the waiter cancels it), and the shared timer skips it.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._deadlines import EARLY, SharedTimer

__all__ = ("Waiters",)

T = TypeVar("T")

# Deadline of a waiter that has a timer of its own (the shared timer never expires it).
_OWN_TIMER = math.inf


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(None)


class Waiters(Generic[T]):
    """A FIFO queue of futures waiting for a ``T`` (or ``None``: timed out)."""

    __slots__ = ("_live", "_queue", "_tail", "_timer")

    def __init__(self) -> None:
        self._queue: deque[tuple[asyncio.Future[T | None], float]] = deque()
        self._live = 0
        self._timer = SharedTimer(self._on_timer)
        # The latest deadline kept by the shared timer among queued waiters.
        self._tail = -math.inf

    def __len__(self) -> int:
        return self._live

    def __bool__(self) -> bool:
        return self._live > 0

    def push(
        self, fut: asyncio.Future[T | None], deadline: float, loop: asyncio.AbstractEventLoop
    ) -> asyncio.TimerHandle | None:
        """Queue ``fut`` behind every waiter already there; expire it at ``deadline``.

        ``deadline`` is in ``loop.time()``. Returns the waiter's own timer when its deadline is
        earlier than one already queued (the caller cancels it once served), else ``None``.
        """
        self._live += 1
        if deadline < self._tail:
            self._queue.append((fut, _OWN_TIMER))
            return loop.call_at(deadline, _expire, fut)
        self._queue.append((fut, deadline))
        self._tail = deadline
        self._timer.arm(loop, deadline)
        return None

    def discard(self) -> None:
        """Account for a waiter that gave up (timed out or cancelled) before any handoff."""
        self._live -= 1
        if self._live == 0:
            self._queue.clear()
            self._tail = -math.inf

    def hand_over(self, value: T) -> bool:
        """Give ``value`` to the oldest live waiter; return ``False`` if there is none."""
        queue = self._queue
        while queue:
            fut = queue.popleft()[0]
            if not fut.done():
                fut.set_result(value)
                self._live -= 1
                if self._live == 0:
                    queue.clear()
                    self._tail = -math.inf
                return True
        return False

    def fail_all(self, make_exc: Callable[[], BaseException]) -> int:
        """Fail every live waiter with a fresh ``make_exc()``; return how many there were."""
        failed = 0
        while self._queue:
            fut = self._queue.popleft()[0]
            if not fut.done():
                fut.set_exception(make_exc())
                failed += 1
        self._live = 0
        self._tail = -math.inf
        self.cancel_timer()
        return failed

    def cancel_timer(self) -> None:
        """Cancel the shared timer (the queue is being dropped)."""
        self._timer.cancel()

    def _on_timer(self) -> None:
        """Expire every waiter whose deadline passed; re-arm for the next deadline."""
        loop = self._timer.loop
        queue = self._queue
        if loop is None:  # pragma: no cover - arm() sets it
            return
        while queue and queue[0][0].done():
            queue.popleft()
        now = loop.time() + EARLY
        for fut, deadline in queue:
            if deadline == _OWN_TIMER or fut.done():
                continue
            if deadline <= now:
                fut.set_result(None)  # the waiter sees None and calls discard()
                continue
            self._timer.arm(loop, deadline)
            return
