"""Counters, fixed-bucket histograms and the frozen :class:`PoolStats` snapshot.

Recording is O(1) and allocation-free on the acquire path (a ``bisect`` into fixed log-spaced
bucket bounds); percentiles are computed only when a snapshot is taken. Field names map one to
one to OpenTelemetry's ``db.client.connection.*`` metrics (see ``docs/stats.md``).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ("BUCKET_BOUNDS", "Histogram", "PoolStats", "Summary", "sizing_hint")

# Upper bounds (seconds) of the histogram buckets: 1 µs to ~140 s, ratio 1.25 (so a percentile
# read from a bucket is within 25 % of the true value). The last bucket is +inf.
BUCKET_BOUNDS: tuple[float, ...] = tuple(1e-6 * 1.25**i for i in range(85))
_BOUNDS = BUCKET_BOUNDS
_bisect = bisect_left


class Histogram:
    """A fixed-bucket histogram of durations in seconds."""

    __slots__ = ("_counts", "count", "max", "sum")

    def __init__(self) -> None:
        self._counts = [0] * (len(BUCKET_BOUNDS) + 1)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def record(self, value: float) -> None:
        """Add one observation."""
        if value < 0.0:
            value = 0.0
        self._counts[_bisect(_BOUNDS, value)] += 1
        self.count += 1
        self.sum += value
        if value > self.max:
            self.max = value

    def record_zero(self) -> None:
        """Add one observation of zero seconds (the fast path: no wait)."""
        self._counts[0] += 1
        self.count += 1

    def percentile(self, q: float) -> float:
        """Estimate the ``q``-th percentile (0-100) from the buckets (an upper bound)."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                if index == 0 and self.max == 0.0:
                    return 0.0
                bound = BUCKET_BOUNDS[index] if index < len(BUCKET_BOUNDS) else self.max
                return min(bound, self.max)
        return self.max

    def buckets(self) -> Iterator[tuple[float, int]]:
        """Yield ``(upper_bound, cumulative_count)`` pairs, ending with ``(inf, count)``."""
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            bound = BUCKET_BOUNDS[index] if index < len(BUCKET_BOUNDS) else math.inf
            yield bound, seen

    def summary(self) -> Summary:
        """A frozen summary of this histogram."""
        return Summary(
            count=self.count,
            sum=self.sum,
            mean=self.sum / self.count if self.count else 0.0,
            p50=self.percentile(50),
            p95=self.percentile(95),
            p99=self.percentile(99),
            max=self.max,
            buckets=tuple(self.buckets()),
        )

    def reset(self) -> None:
        """Forget every observation."""
        self._counts = [0] * (len(BUCKET_BOUNDS) + 1)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0


@dataclass(frozen=True, slots=True)
class Summary:
    """Distribution of a duration, in seconds.

    Attributes:
        count: number of observations.
        sum: total of the observations.
        mean: ``sum / count`` (0 when empty).
        p50: median (bucket upper bound, within 25 % of the exact value).
        p95: 95th percentile.
        p99: 99th percentile.
        max: largest observation (exact).
        buckets: cumulative ``(upper_bound, count)`` pairs, for exporting real histograms.
    """

    count: int = 0
    sum: float = 0.0
    mean: float = 0.0
    p50: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    buckets: tuple[tuple[float, int], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStats:
    """A frozen snapshot of a pool's state and counters, returned by ``pool.stats()``.

    State (instantaneous; ``size == idle + in_use + connecting + checking + resetting``):

    Attributes:
        name: the pool's name (``db.client.connection.pool.name``).
        target: the redacted target the pool connects to.
        size: open connections plus those being opened (never above ``max_size``).
        idle: connections ready to be handed out (``db.client.connection.count{state=idle}``).
        in_use: connections lent out (``db.client.connection.count{state=used}``).
        connecting: connections being opened (including retries after a failure).
        checking: idle connections under a background health check.
        resetting: released connections being reset before reuse.
        closing: connections being closed (no longer counted in ``size``).
        waiting: tasks waiting for a connection (``db.client.connection.pending_requests``).
        min_size: configured floor (``db.client.connection.idle.min``).
        max_size: configured cap (``db.client.connection.max``).

    Counters (since the pool was created):

    Attributes:
        acquires: successful acquires.
        timeouts: acquires that ended in ``PoolTimeout`` (``db.client.connection.timeouts``).
        overloads: acquires refused at once because ``max_waiting`` was reached.
        cancelled: acquires cancelled while waiting.
        created: connections opened.
        closed: connections closed, by reason (``idle``, ``lifetime``, ``max_uses``, ``broken``,
            ``check_failed``, ``reset_failed``, ``discarded``, ``drained``, ``resized``,
            ``pool_closed``, ``terminated``).
        connect_errors: failed connection attempts.
        check_failures: failed health checks (on acquire or in the background).
        reset_failures: failed resets after release.
        leaks: connections reported as held past ``leak_threshold``.

    Distributions:

    Attributes:
        wait_time: time to obtain a connection (``db.client.connection.wait_time``).
        use_time: time between acquire and release (``db.client.connection.use_time``).
        create_time: time to open a connection (``db.client.connection.create_time``).

    Derived:

    Attributes:
        arrival_rate: acquires per second over the pool's life.
        sizing_hint: connections needed by Little's law: arrival rate x mean hold time x 1.5.
        last_connect_error: the last connection error (redacted), if any since the last success.
        extra: backend counters (e.g. HTTP requests by status class, WebSocket messages).
    """

    name: str
    target: str
    size: int
    idle: int
    in_use: int
    connecting: int
    checking: int
    resetting: int
    closing: int
    waiting: int
    min_size: int
    max_size: int
    acquires: int
    timeouts: int
    overloads: int
    cancelled: int
    created: int
    closed: Mapping[str, int]
    connect_errors: int
    check_failures: int
    reset_failures: int
    leaks: int
    wait_time: Summary
    use_time: Summary
    create_time: Summary
    arrival_rate: float
    sizing_hint: int
    last_connect_error: str | None = None
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def closed_total(self) -> int:
        """Connections closed, all reasons together."""
        return sum(self.closed.values())

    @property
    def utilization(self) -> float:
        """``in_use / max_size`` (0 to 1)."""
        return self.in_use / self.max_size if self.max_size else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly ``dict`` of the snapshot (bucket lists omitted)."""
        data = asdict(self)
        for key in ("wait_time", "use_time", "create_time"):
            data[key].pop("buckets", None)
        data["closed"] = dict(self.closed)
        data["extra"] = dict(self.extra)
        return data


def sizing_hint(arrival_rate: float, mean_hold_time: float, headroom: float = 1.5) -> int:
    """Connections needed to serve ``arrival_rate`` requests/s held ``mean_hold_time`` s each.

    Little's law gives the mean number of connections in use (``L = λ × W``); ``headroom`` covers
    bursts. The result is at least 1.
    """
    if arrival_rate < 0 or mean_hold_time < 0 or headroom <= 0:
        raise ValueError(
            f"sizing_hint needs non-negative rate and hold time and a positive headroom, got "
            f"arrival_rate={arrival_rate!r}, mean_hold_time={mean_hold_time!r}, "
            f"headroom={headroom!r}"
        )
    return max(1, math.ceil(arrival_rate * mean_hold_time * headroom))
