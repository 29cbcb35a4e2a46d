"""Bounding pool-owned tasks (resets, checks) with one timer instead of one
``asyncio.timeout`` each.

``asyncio.timeout()`` costs a ``Timeout`` object, a timer handle scheduled and cancelled, and a
few Python frames: measured here at 5-7 µs per use, more than the rest of a release. Every reset
of a pool has the same ``reset_timeout`` (every check the same ``check_timeout``: the pool keeps
one instance for each), so deadlines grow in the order resets start, and resets mostly finish
in that order too. So, as for waiters (``_waiters.py``), one timer armed for
the oldest unfinished deadline serves them all: when it fires, it cancels every watched task
past its deadline (marking the watch as expired, so the task can tell our cancellation from
anyone else's) and re-arms for the next. A watch whose deadline is earlier than one already
queued gets its own timer. Finished watches leave the queue from the front, so it stays as
short as the number of resets in flight.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from types import TracebackType

__all__ = ("EARLY", "SharedTimer", "TaskDeadlines", "Watch")

# Timers may fire a little early (uvloop's have millisecond resolution): a deadline this close
# counts as passed.
EARLY = 0.001


class SharedTimer:
    """One timer handle, armed for the earliest of many deadlines (``loop.time()``).

    ``arm`` only ever moves the timer earlier; when it fires, ``callback`` runs and re-arms it
    for whatever deadline comes next.
    """

    __slots__ = ("_callback", "_handle", "at", "loop")

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        #: The deadline the timer is armed for (``inf``: not armed).
        self.at = math.inf
        self.loop: asyncio.AbstractEventLoop | None = None

    def arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """Make sure the timer fires by ``deadline``."""
        if deadline < self.at:
            if self._handle is not None:
                self._handle.cancel()
            self.loop = loop
            self._handle = loop.call_at(deadline, self._fire)
            self.at = deadline

    def cancel(self) -> None:
        """Disarm the timer (its owner is going away)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.at = math.inf

    @property
    def armed(self) -> bool:
        """Whether a timer handle is scheduled."""
        return self._handle is not None

    def _fire(self) -> None:
        self._handle = None
        self.at = math.inf
        self._callback()


class Watch:
    """One task's deadline. ``expired`` is set just before the task is cancelled for it.

    Also a context manager around the bounded work (``with deadlines.watch(...):``): on exit it
    finishes the watch and turns the cancellation it caused into a ``TimeoutError``; anyone
    else's cancellation propagates untouched.
    """

    __slots__ = (
        "_owner",
        "_timeout",
        "_what",
        "deadline",
        "expired",
        "finished",
        "own_timer",
        "task",
    )

    def __init__(
        self,
        owner: TaskDeadlines,
        task: asyncio.Task[object],
        deadline: float,
        what: str,
        timeout: float,
    ) -> None:
        self._owner = owner
        self._what = what
        self._timeout = timeout
        self.task = task
        self.deadline = deadline
        self.expired = False
        self.finished = False
        self.own_timer: asyncio.TimerHandle | None = None

    def expire(self) -> None:
        """Cancel the task for its deadline (once; not after it finished)."""
        if not self.finished and not self.expired:
            self.expired = True
            self.task.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._owner.finish(self)
        if self.expired and exc_type is asyncio.CancelledError:
            self.task.uncancel()
            raise TimeoutError(f"{self._what} did not finish within {self._timeout:g} s") from None


class TaskDeadlines:
    """Cancels watched tasks that outlive their deadline, with one shared timer."""

    __slots__ = ("_queue", "_tail", "_timer")

    def __init__(self) -> None:
        self._queue: deque[Watch] = deque()
        self._timer = SharedTimer(self._on_timer)
        self._tail = -math.inf  # the latest deadline queued

    def __len__(self) -> int:
        """Watches queued (finished ones not yet dropped included)."""
        return len(self._queue)

    def watch(self, loop: asyncio.AbstractEventLoop, timeout: float, what: str = "task") -> Watch:
        """Watch the current task: cancel it ``timeout`` seconds from now unless finished.

        Use the watch as a context manager around the work, or call :meth:`finish` when the
        work ends, however it ends.
        """
        task = asyncio.current_task(loop)
        assert task is not None, "watch() is called from a task"
        deadline = loop.time() + timeout
        watch = Watch(self, task, deadline, what, timeout)
        if deadline < self._tail:
            watch.own_timer = loop.call_at(deadline, watch.expire)
            return watch
        self._queue.append(watch)
        self._tail = deadline
        self._timer.arm(loop, deadline)
        return watch

    def finish(self, watch: Watch) -> None:
        """The watched work ended: never cancel its task; drop finished watches at the front."""
        watch.finished = True
        if watch.own_timer is not None:
            watch.own_timer.cancel()
            return
        queue = self._queue
        while queue and queue[0].finished:
            queue.popleft()
        if not queue:
            self._tail = -math.inf

    def cancel_timer(self) -> None:
        """Cancel the shared timer (the owner is going away)."""
        self._timer.cancel()

    @property
    def timer_armed(self) -> bool:
        """Whether the shared timer is scheduled."""
        return self._timer.armed

    def _on_timer(self) -> None:
        loop = self._timer.loop
        if loop is None:  # pragma: no cover - arm() sets it
            return
        now = loop.time() + EARLY
        for watch in self._queue:
            if watch.finished or watch.expired:
                continue
            if watch.deadline <= now:
                watch.expire()
                continue
            self._timer.arm(loop, watch.deadline)
            return
