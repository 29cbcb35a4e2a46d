"""Pool sizing from Little's law: pure functions, no I/O.

Little's law says that the average number of requests in service equals the arrival rate times
the average time each one spends in service: ``L = λ × W``. A pool must hold at least ``L``
connections on average, and needs headroom above that for bursts (arrivals are not evenly
spaced). The rule used here, as in the seeds of this project and HikariCP's sizing notes::

    connections = rps × mean service time × headroom      (headroom 1.5 by default)

``min_size`` is the steady-state average (``rps × service time``, rounded up) and ``max_size``
the average with headroom (rounded up). With several worker processes each has its own pool,
and the database sees ``workers × max_size`` connections at worst.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = (
    "DEFAULT_HEADROOM",
    "ServerLimitCheck",
    "SizingAdvice",
    "check_server_limit",
    "recommend",
)

#: Extra capacity above the Little's-law average, for bursts.
DEFAULT_HEADROOM = 1.5


@dataclass(frozen=True, slots=True)
class SizingAdvice:
    """A recommended pool size for one worker process.

    Attributes:
        rps: the target request rate of the whole service (all workers).
        workers: the number of worker processes sharing that rate, each with its own pool.
        service_time: mean time a request holds a connection, in seconds.
        headroom: the factor applied above the average.
        connections: ``rps / workers × service_time × headroom`` (unrounded, per worker).
        min_size: recommended ``min_size`` per worker (the average in use, rounded up).
        max_size: recommended ``max_size`` per worker (``connections``, rounded up).
    """

    rps: float
    workers: int
    service_time: float
    headroom: float
    connections: float
    min_size: int
    max_size: int

    @property
    def total_max(self) -> int:
        """Connections the server may see from all workers at once (``workers × max_size``)."""
        return self.workers * self.max_size


def recommend(
    rps: float,
    service_time: float,
    *,
    workers: int = 1,
    headroom: float = DEFAULT_HEADROOM,
) -> SizingAdvice:
    """Recommend ``min_size``/``max_size`` for a target rate from Little's law with headroom.

    Args:
        rps: target requests per second for the whole service (shared evenly by ``workers``).
        service_time: mean time one request holds a connection, in seconds.
        workers: worker processes, each with its own pool.
        headroom: factor above the average number of busy connections (``>= 1``).

    Returns:
        The advice; ``min_size`` and ``max_size`` are at least 1.

    Raises:
        ValueError: a negative, zero (``workers``) or non-finite argument, or ``headroom < 1``.
        TypeError: a non-numeric argument.

    Example:
        >>> recommend(1000, 0.004).max_size  # 1000 req/s x 4 ms x 1.5 = 6 connections
        6
    """
    _finite("rps", rps, allow_zero=True)
    _finite("service_time", service_time, allow_zero=True)
    _finite("headroom", headroom, allow_zero=False)
    if headroom < 1:
        raise ValueError(f"headroom={headroom!r}: must be >= 1")
    if workers < 1:
        raise ValueError(f"workers={workers!r}: must be >= 1")
    busy = rps / workers * service_time
    connections = busy * headroom
    return SizingAdvice(
        rps=rps,
        workers=workers,
        service_time=service_time,
        headroom=headroom,
        connections=connections,
        min_size=max(1, _ceil(busy)),
        max_size=max(1, _ceil(connections)),
    )


@dataclass(frozen=True, slots=True)
class ServerLimitCheck:
    """How the pools of all workers compare with the server's connection limit.

    Attributes:
        max_connections: the server's limit (Postgres ``max_connections``, MySQL
            ``@@max_connections``).
        workers: worker processes, each with its own pool.
        max_size: ``max_size`` of each pool.
        total: ``workers × max_size``.
        exceeds: ``total > max_connections``.
        largest_max_size: the largest per-worker ``max_size`` that fits (0 if none does).
    """

    max_connections: int
    workers: int
    max_size: int
    total: int
    exceeds: bool
    largest_max_size: int

    def warning(self) -> str | None:
        """A one-line warning when the pools can exceed the limit, else ``None``."""
        if not self.exceeds:
            return None
        return (
            f"{self.workers} worker(s) x max_size {self.max_size} = {self.total} connections "
            f"exceeds the server's max_connections ({self.max_connections}); use max_size <= "
            f"{self.largest_max_size} per worker, raise the server limit, or put a pooler "
            "(e.g. PgBouncer) in front of the server"
        )


def check_server_limit(max_connections: int, *, workers: int, max_size: int) -> ServerLimitCheck:
    """Compare ``workers × max_size`` with the server's connection limit.

    Args:
        max_connections: the server's limit.
        workers: worker processes, each with its own pool.
        max_size: ``max_size`` of each pool.

    Raises:
        ValueError: a negative limit, or ``workers``/``max_size`` below 1.
    """
    if max_connections < 0:
        raise ValueError(f"max_connections={max_connections!r}: must be >= 0")
    if workers < 1:
        raise ValueError(f"workers={workers!r}: must be >= 1")
    if max_size < 1:
        raise ValueError(f"max_size={max_size!r}: must be >= 1")
    total = workers * max_size
    return ServerLimitCheck(
        max_connections=max_connections,
        workers=workers,
        max_size=max_size,
        total=total,
        exceeds=total > max_connections,
        largest_max_size=max_connections // workers,
    )


def _ceil(value: float) -> int:
    # Guard against float noise: 0.1 x 3 x 10 is 3.0000000000000004, which means 3.
    return math.ceil(round(value, 9))


def _finite(name: str, value: float, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}={value!r}: must be a number")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name}={value!r}: must be finite")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}={value!r}: must be {'>= 0' if allow_zero else '> 0'}")
