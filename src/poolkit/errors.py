"""The exceptions poolkit raises.

Every class derives from :class:`PoolError`. Some also derive from a builtin so that generic
handlers keep working: :class:`PoolTimeout` is a :class:`TimeoutError`, :class:`PoolUsageError` a
:class:`RuntimeError` and :class:`ConfigError` a :class:`ValueError`.

Messages name the pool, the value and the limit involved, and never contain a password or a
token: targets are always shown redacted. An exception raised by your own code inside
``async with pool.acquire()`` propagates unchanged.

::

    PoolError
    ├── PoolTimeout (TimeoutError)        .phase: "wait" | "connect" | "check" | "reset" | "close"
    ├── PoolOverloaded                    max_waiting reached: raised at once
    ├── PoolClosed                        the pool is closing or closed
    ├── ConnectError                      opening a connection failed (driver error chained)
    │   ├── AuthenticationError           the server refused the credentials
    │   └── TLSError                      the TLS handshake or verification failed
    ├── ConnectionBroken                  a connection died and could not be used
    ├── PoolUsageError (RuntimeError)     misuse: double release, foreign connection, wrong loop
    └── ConfigError (ValueError)          an invalid configuration value
"""

from __future__ import annotations

from typing import Literal

__all__ = (
    "AuthenticationError",
    "ConfigError",
    "ConnectError",
    "ConnectionBroken",
    "PoolClosed",
    "PoolError",
    "PoolOverloaded",
    "PoolTimeout",
    "PoolUsageError",
    "TLSError",
)

Phase = Literal["wait", "connect", "check", "reset", "close", "open"]


class PoolError(Exception):
    """Base class of every exception raised by poolkit."""

    def __init__(self, message: str, *, pool: str | None = None) -> None:
        super().__init__(message)
        #: The name of the pool involved, if any.
        self.pool = pool


class PoolTimeout(PoolError, TimeoutError):
    """Raised when a bounded operation ran out of time.

    ``phase`` says which: ``"wait"`` (no connection became available within the acquire
    timeout), ``"connect"``, ``"check"``, ``"reset"``, ``"close"`` or ``"open"`` (warming the pool
    up to ``min_size``). The message names the timeout, ``max_size`` and the pool's state; the
    last connection error, if any, is chained as ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        *,
        pool: str | None = None,
        phase: Phase = "wait",
        timeout: float | None = None,
        max_size: int | None = None,
        in_use: int | None = None,
        waiting: int | None = None,
    ) -> None:
        super().__init__(message, pool=pool)
        self.phase: Phase = phase
        self.timeout = timeout
        self.max_size = max_size
        self.in_use = in_use
        self.waiting = waiting


class PoolOverloaded(PoolError):
    """Raised at once by ``acquire()`` when ``max_waiting`` tasks are already waiting."""

    def __init__(self, message: str, *, pool: str | None = None, max_waiting: int = 0) -> None:
        super().__init__(message, pool=pool)
        self.max_waiting = max_waiting


class PoolClosed(PoolError):
    """Raised when acquiring from a closing or closed pool, and to waiters failed by ``close()``."""


class ConnectError(PoolError):
    """Raised when a new connection could not be opened.

    The driver's exception is chained as ``__cause__``; the message shows the redacted target.
    """

    def __init__(self, message: str, *, pool: str | None = None, target: str | None = None) -> None:
        super().__init__(message, pool=pool)
        #: The redacted target (e.g. ``postgresql://app@db:5432/main``).
        self.target = target


class AuthenticationError(ConnectError):
    """Raised when the server rejected the credentials (not retried: it fails fast)."""


class TLSError(ConnectError):
    """Raised when the TLS handshake failed or the server's certificate did not verify."""


class ConnectionBroken(PoolError):
    """Raised when a connection died (failed check or reset) and no replacement could be made."""


class PoolUsageError(PoolError, RuntimeError):
    """Raised on misuse of a pool.

    Examples: releasing a connection twice, releasing a connection to a pool it does not come
    from, using a pool from an event loop other than its own, or a child process using its
    parent's pool after ``os.fork()``.
    """


class ConfigError(PoolError, ValueError):
    """Raised for an invalid configuration value; the message names the field and the value."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        shown = "<redacted>" if _looks_secret(field) else repr(value)
        super().__init__(f"invalid pool configuration: {field}={shown}: {rule}")
        self.field = field
        self.rule = rule


def _looks_secret(field: str) -> bool:
    lowered = field.lower()
    return any(word in lowered for word in ("password", "secret", "token", "dsn", "url"))


for _cls in (
    PoolError,
    PoolTimeout,
    PoolOverloaded,
    PoolClosed,
    ConnectError,
    AuthenticationError,
    TLSError,
    ConnectionBroken,
    PoolUsageError,
    ConfigError,
):
    _cls.__module__ = "poolkit"
del _cls
