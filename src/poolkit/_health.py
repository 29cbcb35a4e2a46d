"""Pool health: the conditions operators should alert on, computed from stats snapshots.

:func:`pool_health` is a pure function over a history of :class:`~poolkit.PoolStats` samples
(each with the monotonic time it was taken); :class:`HealthMonitor` keeps such a history for one
pool and reports on demand. Nothing here runs on the acquire path: a sample is one
``pool.stats()`` call.

The findings, by code:

* ``exhausted`` (critical): acquires failed with ``PoolTimeout`` or ``PoolOverloaded`` in the
  window. Requests were turned away.
* ``connect_errors`` (critical): the share of failed connection attempts in the window reached
  ``connect_error_rate``. The server is down, refusing, or unreachable.
* ``utilization`` (warning): ``in_use / max_size`` stayed above ``utilization`` in every sample
  for at least ``utilization_for`` seconds. The pool is close to exhaustion.
* ``wait_time`` (warning): the 95th percentile of the acquire wait in the window exceeded
  ``wait_time``. Requests queue for connections.
* ``leaks`` (warning): connections were reported held past ``leak_threshold`` in the window.
* ``undersized`` (info): the Little's-law sizing hint exceeds ``max_size``.

Counters are compared between the newest sample and the newest sample at least ``window``
seconds older (or the oldest one available). With a single sample the baseline is zero, so the
report covers the pool's whole life.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ._stats import PoolStats, Summary
from .errors import ConfigError

__all__ = (
    "Finding",
    "HealthMonitor",
    "HealthReport",
    "HealthSample",
    "HealthThresholds",
    "Severity",
    "Status",
    "pool_health",
)

Severity = Literal["info", "warning", "critical"]
Status = Literal["ok", "warning", "critical"]

_RANK: dict[str, int] = {"ok": 0, "info": 0, "warning": 1, "critical": 2}


class HealthSample(NamedTuple):
    """One stats snapshot and the monotonic time (seconds) it was taken."""

    at: float
    stats: PoolStats


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthThresholds:
    """When a condition becomes a finding.

    Attributes:
        utilization: ``in_use / max_size`` above this is "high" (0 to 1).
        utilization_for: seconds utilization must stay high to be reported (sustained).
        wait_time: seconds; a windowed 95th-percentile acquire wait above this is reported.
        connect_error_rate: failed / attempted connections in the window at or above this is
            reported (0 to 1).
        window: seconds of history counters are compared over.
    """

    utilization: float = 0.8
    utilization_for: float = 60.0
    wait_time: float = 0.1
    connect_error_rate: float = 0.1
    window: float = 60.0

    def __post_init__(self) -> None:
        for name in ("utilization", "connect_error_rate", "utilization_for", "wait_time", "window"):
            value = getattr(self, name)
            fraction = name in ("utilization", "connect_error_rate")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(name, value, "must be a number")
            if not math.isfinite(value) or value < 0 or (fraction and value > 1):
                rule = "must be between 0 and 1" if fraction else "must be a finite number >= 0"
                raise ConfigError(name, value, rule)


@dataclass(frozen=True, slots=True)
class Finding:
    """One condition worth an operator's attention.

    Attributes:
        code: stable identifier (``exhausted``, ``connect_errors``, ``utilization``,
            ``wait_time``, ``leaks``, ``undersized``), for alert rules.
        severity: ``info``, ``warning`` or ``critical``.
        message: one human-readable line.
        value: the measured value.
        threshold: the limit it was compared with.
    """

    code: str
    severity: Severity
    message: str
    value: float
    threshold: float


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The verdict on one pool.

    Attributes:
        pool: the pool's name.
        status: the worst severity among the findings (``info`` counts as ``ok``).
        findings: what was found, worst first.
        utilization: ``in_use / max_size`` in the newest sample.
        wait_p95: windowed 95th-percentile acquire wait, seconds.
        timeouts: ``PoolTimeout`` plus ``PoolOverloaded`` in the window.
        connect_errors: failed connection attempts in the window.
        connect_error_rate: failed / attempted connections in the window (0 when none).
        window: seconds actually covered by the comparison (0 with one sample).
    """

    pool: str
    status: Status
    findings: tuple[Finding, ...] = field(default=())
    utilization: float = 0.0
    wait_p95: float = 0.0
    timeouts: int = 0
    connect_errors: int = 0
    connect_error_rate: float = 0.0
    window: float = 0.0

    @property
    def ok(self) -> bool:
        """``True`` when no warning or critical finding was made."""
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly ``dict`` of the report."""
        return {
            "pool": self.pool,
            "status": self.status,
            "findings": [
                {
                    "code": f.code,
                    "severity": f.severity,
                    "message": f.message,
                    "value": f.value,
                    "threshold": f.threshold,
                }
                for f in self.findings
            ],
            "utilization": self.utilization,
            "wait_p95": self.wait_p95,
            "timeouts": self.timeouts,
            "connect_errors": self.connect_errors,
            "connect_error_rate": self.connect_error_rate,
            "window": self.window,
        }


def pool_health(
    samples: Iterable[HealthSample | tuple[float, PoolStats]],
    thresholds: HealthThresholds | None = None,
) -> HealthReport:
    """Judge a pool's health from a history of stats samples (a pure function).

    Args:
        samples: ``(monotonic_time, stats)`` pairs for one pool, in any order; at least one.
        thresholds: the limits (defaults: :class:`HealthThresholds`).

    Returns:
        The report; ``report.status`` is ``"ok"``, ``"warning"`` or ``"critical"``.

    Raises:
        ValueError: ``samples`` is empty.
    """
    limits = thresholds if thresholds is not None else HealthThresholds()
    history = sorted((HealthSample(*s) for s in samples), key=lambda s: s.at)
    if not history:
        raise ValueError("pool_health() needs at least one stats sample")
    last = history[-1]
    now = last.stats
    base = _baseline(history, limits.window)
    before = base.stats if base is not None else None
    covered = last.at - base.at if base is not None else 0.0

    def delta(attr: str) -> int:
        new = int(getattr(now, attr))
        if before is None:
            return new
        old = int(getattr(before, attr))
        return new if new < old else new - old  # a smaller value means the pool was recreated

    findings: list[Finding] = []
    name = now.name

    timeouts = delta("timeouts")
    overloads = delta("overloads")
    exhausted = timeouts + overloads
    if exhausted:
        findings.append(
            Finding(
                "exhausted",
                "critical",
                f"pool {name!r}: {timeouts} acquire timeout(s) and {overloads} overload(s) "
                f"{_span(covered)}",
                float(exhausted),
                0.0,
            )
        )

    errors = delta("connect_errors")
    created = delta("created")
    attempts = errors + created
    error_rate = errors / attempts if attempts else 0.0
    if errors and error_rate >= limits.connect_error_rate:
        last_error = f"; last: {now.last_connect_error}" if now.last_connect_error else ""
        findings.append(
            Finding(
                "connect_errors",
                "critical",
                f"pool {name!r}: {errors} of {attempts} connection attempt(s) failed "
                f"{_span(covered)} ({error_rate:.0%}){last_error}",
                error_rate,
                limits.connect_error_rate,
            )
        )

    high_since = _high_utilization_since(history, limits.utilization)
    if high_since is not None and last.at - high_since >= limits.utilization_for:
        findings.append(
            Finding(
                "utilization",
                "warning",
                f"pool {name!r}: {now.in_use}/{now.max_size} connections in use, above "
                f"{limits.utilization:.0%} for {last.at - high_since:.0f}s",
                now.utilization,
                limits.utilization,
            )
        )

    wait_p95 = _window_p95(before.wait_time if before else None, now.wait_time)
    if wait_p95 > limits.wait_time:
        findings.append(
            Finding(
                "wait_time",
                "warning",
                f"pool {name!r}: 95% of acquires waited up to {wait_p95 * 1000:.1f} ms "
                f"{_span(covered)} (limit {limits.wait_time * 1000:.1f} ms)",
                wait_p95,
                limits.wait_time,
            )
        )

    leaks = delta("leaks")
    if leaks:
        findings.append(
            Finding(
                "leaks",
                "warning",
                f"pool {name!r}: {leaks} connection(s) held past the leak threshold "
                f"{_span(covered)}",
                float(leaks),
                0.0,
            )
        )

    if now.sizing_hint > now.max_size:
        findings.append(
            Finding(
                "undersized",
                "info",
                f"pool {name!r}: Little's law suggests {now.sizing_hint} connections, "
                f"max_size is {now.max_size}",
                float(now.sizing_hint),
                float(now.max_size),
            )
        )

    findings.sort(key=lambda f: -_RANK[f.severity])
    worst = max((_RANK[f.severity] for f in findings), default=0)
    status: Status = "critical" if worst == 2 else "warning" if worst == 1 else "ok"
    return HealthReport(
        pool=name,
        status=status,
        findings=tuple(findings),
        utilization=now.utilization,
        wait_p95=wait_p95,
        timeouts=exhausted,
        connect_errors=errors,
        connect_error_rate=error_rate,
        window=covered,
    )


def _baseline(history: Sequence[HealthSample], window: float) -> HealthSample | None:
    """The newest sample at least ``window`` s older than the last, else the oldest."""
    if len(history) < 2:
        return None
    cutoff = history[-1].at - window
    chosen = history[0]
    for sample in history[:-1]:
        if sample.at <= cutoff:
            chosen = sample
        else:
            break
    return chosen


def _high_utilization_since(history: Sequence[HealthSample], limit: float) -> float | None:
    """Time of the earliest sample of the trailing run of samples above ``limit``."""
    since: float | None = None
    for sample in reversed(history):
        if sample.stats.utilization > limit:
            since = sample.at
        else:
            break
    return since


def _window_p95(before: Summary | None, now: Summary) -> float:
    """The 95th percentile of the observations recorded between two summaries."""
    if before is None:
        return now.p95
    count = now.count - before.count
    if count == 0:
        return 0.0
    if count < 0 or not now.buckets or len(before.buckets) != len(now.buckets):
        return now.p95  # recreated pool, or no buckets to subtract: the cumulative estimate
    rank = max(1, math.ceil(count * 0.95))
    for (bound, seen_now), (_, seen_before) in zip(now.buckets, before.buckets, strict=True):
        if seen_now - seen_before >= rank:
            return min(bound, now.max)
    return now.max


def _span(seconds: float) -> str:
    return f"in the last {seconds:.0f}s" if seconds > 0 else "since the pool opened"


class HealthMonitor:
    """Keeps a short stats history of one pool and reports on its health.

    Call :meth:`sample` periodically (or let :meth:`run` do it) and :meth:`report` whenever
    needed; ``report()`` also takes a fresh sample. Memory is bounded: samples older than the
    thresholds need are dropped.

    Args:
        pool: a pool (anything with ``stats() -> PoolStats``; a keyed pool's ``total_stats()``
            is used when it has one).
        thresholds: the limits (defaults: :class:`HealthThresholds`).
        clock: monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        pool: Any,
        thresholds: HealthThresholds | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.thresholds = thresholds if thresholds is not None else HealthThresholds()
        self._clock = clock
        self._samples: deque[HealthSample] = deque()

    @property
    def samples(self) -> tuple[HealthSample, ...]:
        """The history kept, oldest first."""
        return tuple(self._samples)

    def sample(self) -> HealthSample:
        """Take one stats snapshot now and add it to the history."""
        total = getattr(self.pool, "total_stats", None)
        stats = total() if callable(total) else self.pool.stats()
        entry = HealthSample(self._clock(), stats)
        self._samples.append(entry)
        self._trim(entry.at)
        return entry

    def report(self) -> HealthReport:
        """Take a sample and judge the history (see :func:`pool_health`)."""
        self.sample()
        return pool_health(self._samples, self.thresholds)

    async def run(self, interval: float = 5.0) -> None:
        """Sample every ``interval`` seconds until cancelled.

        Args:
            interval: seconds between samples (must be > 0).
        """
        if not interval > 0:
            raise ValueError(f"HealthMonitor.run(interval={interval!r}): must be > 0")
        while True:
            self.sample()
            await asyncio.sleep(interval)

    def _trim(self, now: float) -> None:
        keep = max(self.thresholds.window, self.thresholds.utilization_for)
        cutoff = now - keep
        # Keep one sample at or before the cutoff: it is the baseline for the window.
        while len(self._samples) >= 2 and self._samples[1].at <= cutoff:
            self._samples.popleft()

    def __repr__(self) -> str:
        name = getattr(self.pool, "name", None)
        return f"<HealthMonitor pool={name!r} samples={len(self._samples)}>"
