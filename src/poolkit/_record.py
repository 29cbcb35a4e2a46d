"""ConnectionRecord: the pool's unit of ownership, one per physical connection.

Pool metadata lives here, never on the driver object (psycopg's ``conn._expire_at`` is the
counter-example). A record is in exactly one state at a time and held by exactly one structure
(the idle stack, the in-use map) or one pool-owned task (connecting, checking, resetting,
closing).
"""

from __future__ import annotations

import enum
import itertools
import linecache
import random
import sys
from types import CodeType, FrameType
from typing import Generic, TypeVar

__all__ = ("ConnectionRecord", "State", "capture_stack", "format_stack")

C = TypeVar("C")

_ids = itertools.count(1)


class State(enum.Enum):
    """Where a record is."""

    IDLE = "idle"
    IN_USE = "in_use"
    CHECKING = "checking"
    RESETTING = "resetting"
    CLOSING = "closing"
    CLOSED = "closed"


class ConnectionRecord(Generic[C]):
    """One physical connection and everything the pool knows about it."""

    __slots__ = (
        "acquired_at",
        "conn",
        "created_at",
        "expires_at",
        "generation",
        "id",
        "idle_since",
        "last_checked",
        "leak_reported",
        "lease",
        "stack",
        "state",
        "uses",
    )

    def __init__(
        self,
        conn: C,
        *,
        now: float,
        generation: int,
        max_lifetime: float | None,
        jitter: float,
    ) -> None:
        self.id = next(_ids)
        self.conn = conn
        self.state = State.IDLE
        self.created_at = now
        self.idle_since = now
        self.last_checked = now
        self.acquired_at = 0.0
        self.generation = generation
        self.uses = 0
        self.lease = 0
        self.leak_reported = False
        self.stack: tuple[tuple[CodeType, int], ...] | None = None
        self.expires_at = expiry(now, max_lifetime, jitter)

    def __repr__(self) -> str:
        return f"<ConnectionRecord #{self.id} {self.state.value} uses={self.uses}>"


def expiry(now: float, max_lifetime: float | None, jitter: float) -> float:
    """When a connection created at ``now`` retires: ``max_lifetime`` minus up to ``jitter``."""
    if max_lifetime is None:
        return float("inf")
    return now + max_lifetime * (1.0 - jitter * random.random())


def capture_stack(skip: int = 2, limit: int = 10) -> tuple[tuple[CodeType, int], ...]:
    """Capture the caller's stack cheaply as ``(code, lineno)`` pairs, innermost first.

    Only code objects and line numbers are kept (no frame, so no local variable is kept alive);
    formatting happens only if a leak is reported. ``limit`` frames are enough to show the call
    site and its callers through an application's await chain.
    """
    frames: list[tuple[CodeType, int]] = []
    append = frames.append
    frame: FrameType | None = sys._getframe(skip)
    for _ in range(limit):
        if frame is None:
            break
        append((frame.f_code, frame.f_lineno))
        frame = frame.f_back
    return tuple(frames)


def format_stack(stack: tuple[tuple[CodeType, int], ...]) -> str:
    """Format a stack captured by :func:`capture_stack` like a traceback."""
    lines: list[str] = []
    for code, lineno in reversed(stack):
        lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n')
        source = linecache.getline(code.co_filename, lineno).strip()
        if source:
            lines.append(f"    {source}\n")
    return "".join(lines)
