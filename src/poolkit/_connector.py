"""The seam between the pool and a backend.

A backend implements :class:`Connector`: four coroutines that do I/O and hold no policy. The pool
decides *when* each runs and bounds each call with its own timeout; the connector never sees
timeouts, ages or counts.

Optional synchronous capabilities are probed once when the pool is created:

* ``is_closed(conn) -> bool``: no I/O; lets the pool drop dead idle connections for free.
* ``needs_reset(conn) -> bool``: no I/O; ``False`` lets a release skip the reset task entirely
  (e.g. a Postgres connection idle outside any transaction under the ``"rollback"`` policy).
* ``abort(conn) -> None``: no I/O, no await; closes the transport at once. Used by
  ``terminate()``, after a failed graceful close, and when a pool's event loop is gone.
* ``describe() -> str``: the redacted target, for reprs, logs and error messages.
"""

from __future__ import annotations

from typing import Protocol, TypeVar, runtime_checkable

__all__ = (
    "Connector",
    "SupportsAbort",
    "SupportsDescribe",
    "SupportsIsClosed",
    "SupportsNeedsReset",
)

C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)


@runtime_checkable
class Connector(Protocol[C]):
    """Opens, checks, resets and closes one kind of connection.

    Implementations do I/O and hold no policy. Each method may raise; the pool translates the
    failure (a failed ``check`` or ``reset`` discards the connection, a failed ``connect`` is
    retried with backoff and reported to waiters).
    """

    async def connect(self) -> C:
        """Open one physical connection and return it."""
        ...

    async def check(self, conn: C) -> None:
        """Raise if ``conn`` is unusable (a cheap liveness probe)."""
        ...

    async def reset(self, conn: C) -> None:
        """Clear ``conn``'s session state before the next borrower; raising discards it."""
        ...

    async def close(self, conn: C) -> None:
        """Close ``conn`` gracefully; must not raise for an already-dead connection."""
        ...


@runtime_checkable
class SupportsIsClosed(Protocol[C_contra]):
    """Optional capability: a synchronous, I/O-free liveness test."""

    def is_closed(self, conn: C_contra) -> bool:
        """Return ``True`` if ``conn`` is known to be dead."""
        ...


@runtime_checkable
class SupportsNeedsReset(Protocol[C_contra]):
    """Optional capability: tell, without I/O, whether a released connection needs a reset."""

    def needs_reset(self, conn: C_contra) -> bool:
        """Return ``False`` if ``conn`` can go straight back to the idle set."""
        ...


@runtime_checkable
class SupportsAbort(Protocol[C_contra]):
    """Optional capability: close a connection at once, without awaiting anything."""

    def abort(self, conn: C_contra) -> None:
        """Close ``conn``'s transport now; must never raise."""
        ...


@runtime_checkable
class SupportsDescribe(Protocol):
    """Optional capability: a redacted, human-readable target for reprs, logs and errors."""

    def describe(self) -> str:
        """Return the target with any password or token removed."""
        ...
