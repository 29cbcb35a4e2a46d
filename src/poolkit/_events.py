"""Pool events: what happened to which connection, sent to a logger and an optional callback.

Every event goes to the ``poolkit`` logger at DEBUG (warnings such as leaks at WARNING) and to
the pool's ``on_event`` callback, if any. Events carry the pool's name, the connection's record
id and never a credential.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

__all__ = ("EventName", "PoolEvent", "logger")

logger = logging.getLogger("poolkit")

EventName = Literal[
    "pool.open",
    "pool.close",
    "pool.resize",
    "pool.drain",
    "connect",
    "connect.failed",
    "acquire",
    "acquire.timeout",
    "acquire.overloaded",
    "release",
    "check.failed",
    "reset.failed",
    "close",
    "leak",
]


@dataclass(frozen=True, slots=True)
class PoolEvent:
    """One thing that happened in a pool.

    Attributes:
        name: what happened (``"connect"``, ``"acquire"``, ``"close"``, ...).
        pool: the pool's name.
        connection_id: the record id of the connection involved (0 if none).
        duration: how long the operation took, in seconds, when it has one.
        reason: why (for ``"close"``: ``"idle"``, ``"lifetime"``, ``"broken"``, ...).
        error: the exception involved, if any.
    """

    name: EventName
    pool: str
    connection_id: int = 0
    duration: float | None = None
    reason: str | None = None
    error: BaseException | None = None

    def describe(self) -> str:
        """A one-line human-readable description (the log message)."""
        parts = [f"pool {self.pool!r}: {self.name}"]
        if self.connection_id:
            parts.append(f"connection #{self.connection_id}")
        if self.reason:
            parts.append(f"reason={self.reason}")
        if self.duration is not None:
            parts.append(f"in {self.duration * 1000:.2f} ms")
        if self.error is not None:
            parts.append(f"error={type(self.error).__name__}: {self.error}")
        return " ".join(parts)
