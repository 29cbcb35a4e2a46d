"""Health report: the pure ``pool_health`` function and the stateful ``HealthMonitor``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from typing import Any

import pytest

from poolkit import ConfigError, Pool, PoolStats, PoolTimeout
from poolkit._health import (
    HealthMonitor,
    HealthReport,
    HealthSample,
    HealthThresholds,
    pool_health,
)
from poolkit._stats import Histogram, Summary
from poolkit.testing import FakeConnection, FakeConnector


def summary(values: Iterable[float] = ()) -> Summary:
    """A real bucketed summary of ``values``."""
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    return histogram.summary()


def stats(**changes: Any) -> PoolStats:
    """A quiet pool's stats with ``changes`` applied."""
    base = PoolStats(
        name="db",
        target="fake://test",
        size=2,
        idle=2,
        in_use=0,
        connecting=0,
        checking=0,
        resetting=0,
        closing=0,
        waiting=0,
        min_size=1,
        max_size=10,
        acquires=0,
        timeouts=0,
        overloads=0,
        cancelled=0,
        created=2,
        closed={},
        connect_errors=0,
        check_failures=0,
        reset_failures=0,
        leaks=0,
        wait_time=summary(),
        use_time=summary(),
        create_time=summary(),
        arrival_rate=0.0,
        sizing_hint=1,
    )
    return dataclasses.replace(base, **changes)


def codes(report: HealthReport) -> list[str]:
    """The finding codes of ``report``."""
    return [f.code for f in report.findings]


def test_quiet_pool_is_ok() -> None:
    """A pool with nothing going on reports ok and no findings."""
    report = pool_health([HealthSample(0.0, stats()), HealthSample(60.0, stats(acquires=50))])
    assert report.status == "ok"
    assert report.ok
    assert report.findings == ()
    assert report.window == 60.0


def test_sustained_high_utilization_is_a_warning() -> None:
    """in_use / max_size above 80 % in every sample for 60 s is reported."""
    samples = [HealthSample(t, stats(in_use=9, idle=1)) for t in range(0, 65, 5)]
    report = pool_health(samples)
    assert codes(report) == ["utilization"]
    assert report.status == "warning"
    finding = report.findings[0]
    assert finding.value == pytest.approx(0.9)
    assert finding.threshold == 0.8
    assert "9/10" in finding.message


def test_short_utilization_burst_is_not_reported() -> None:
    """High utilization for less than ``utilization_for`` seconds is not a finding."""
    samples = [HealthSample(float(t), stats(in_use=1)) for t in range(0, 40, 5)]
    samples += [HealthSample(float(t), stats(in_use=10, idle=0)) for t in range(40, 95, 5)]
    report = pool_health(samples)
    assert "utilization" not in codes(report)
    assert report.utilization == 1.0


def test_utilization_dip_restarts_the_sustained_clock() -> None:
    """One sample at or below the threshold breaks the run of high samples."""
    samples = [HealthSample(float(t), stats(in_use=9)) for t in range(0, 120, 5)]
    samples[-5] = HealthSample(samples[-5].at, stats(in_use=8))  # exactly 80 %: not above
    assert "utilization" not in codes(pool_health(samples))


def test_timeouts_in_window_mean_exhaustion() -> None:
    """Acquire timeouts or overloads in the window are a critical finding."""
    report = pool_health(
        [
            HealthSample(0.0, stats(timeouts=3, overloads=1)),
            HealthSample(30.0, stats(timeouts=5, overloads=2)),
        ]
    )
    assert codes(report) == ["exhausted"]
    assert report.status == "critical"
    assert report.timeouts == 3
    assert "2 acquire timeout(s) and 1 overload(s) in the last 30s" in report.findings[0].message


def test_timeouts_older_than_the_window_are_forgotten() -> None:
    """Counters are compared with the newest sample at least ``window`` seconds old."""
    samples = [
        HealthSample(0.0, stats(timeouts=0)),
        HealthSample(10.0, stats(timeouts=4)),
        HealthSample(100.0, stats(timeouts=4)),
        HealthSample(170.0, stats(timeouts=4)),
    ]
    report = pool_health(samples, HealthThresholds(window=60.0))
    assert report.status == "ok"
    assert report.window == 70.0  # baseline: the sample at t=100


def test_single_sample_covers_the_pools_whole_life() -> None:
    """With one sample the counters are compared with zero ("since the pool opened")."""
    report = pool_health([(5.0, stats(timeouts=1))])
    assert codes(report) == ["exhausted"]
    assert "since the pool opened" in report.findings[0].message
    assert report.window == 0.0


def test_recreated_pool_counter_reset_is_not_negative() -> None:
    """A counter that went down (new pool, same name) counts from zero again."""
    report = pool_health(
        [HealthSample(0.0, stats(timeouts=9)), HealthSample(60.0, stats(timeouts=2))]
    )
    assert report.timeouts == 2


def test_connect_error_rate_is_critical_above_threshold() -> None:
    """Failed / attempted connections at or above the limit is reported with the last error."""
    report = pool_health(
        [
            HealthSample(0.0, stats(created=2, connect_errors=0)),
            HealthSample(
                60.0,
                stats(created=3, connect_errors=3, last_connect_error="ConnectionRefusedError"),
            ),
        ]
    )
    assert codes(report) == ["connect_errors"]
    assert report.connect_error_rate == pytest.approx(0.75)
    assert "3 of 4 connection attempt(s) failed" in report.findings[0].message
    assert "ConnectionRefusedError" in report.findings[0].message


def test_rare_connect_errors_below_threshold_are_ok() -> None:
    """One failure in twenty attempts stays under the default 10 % rate."""
    report = pool_health(
        [
            HealthSample(0.0, stats(created=0)),
            HealthSample(60.0, stats(created=19, connect_errors=1)),
        ]
    )
    assert report.status == "ok"
    assert report.connect_errors == 1
    assert report.connect_error_rate == pytest.approx(0.05)


def test_wait_time_uses_only_the_window_observations() -> None:
    """The wait p95 is computed from the bucket counts added since the baseline."""
    slow_past = [0.5] * 100
    before = stats(wait_time=summary(slow_past))
    fast_now = stats(wait_time=summary(slow_past + [0.001] * 1000))
    report = pool_health([HealthSample(0.0, before), HealthSample(60.0, fast_now)])
    assert "wait_time" not in codes(report)
    assert report.wait_p95 <= 0.00125  # the bucket bound above 1 ms (25 % resolution)

    slow_now = stats(wait_time=summary(slow_past + [0.3] * 50 + [0.001] * 10))
    report = pool_health([HealthSample(0.0, before), HealthSample(60.0, slow_now)])
    assert codes(report) == ["wait_time"]
    assert 0.3 <= report.wait_p95 <= 0.375
    assert report.status == "warning"


def test_no_acquires_in_window_means_no_wait() -> None:
    """Without new acquires the windowed wait percentile is zero."""
    old = stats(wait_time=summary([2.0] * 10))
    report = pool_health([HealthSample(0.0, old), HealthSample(60.0, old)])
    assert report.wait_p95 == 0.0


def test_leaks_and_undersized_findings() -> None:
    """Leaks are a warning; a sizing hint above max_size is info and keeps status ok."""
    report = pool_health([HealthSample(0.0, stats(sizing_hint=14))])
    assert codes(report) == ["undersized"]
    assert report.status == "ok"
    report = pool_health([HealthSample(0.0, stats(leaks=2, sizing_hint=14))])
    assert codes(report) == ["leaks", "undersized"]
    assert report.status == "warning"


def test_findings_are_sorted_worst_first_and_serialisable() -> None:
    """Critical findings come first; as_dict() is plain data."""
    report = pool_health([HealthSample(0.0, stats(leaks=1, timeouts=1))])
    assert codes(report) == ["exhausted", "leaks"]
    data = report.as_dict()
    assert data["status"] == "critical"
    assert [f["code"] for f in data["findings"]] == ["exhausted", "leaks"]


def test_samples_in_any_order_are_sorted() -> None:
    """Samples are sorted by time before being judged."""
    report = pool_health(
        [HealthSample(60.0, stats(timeouts=1)), HealthSample(0.0, stats(timeouts=1))]
    )
    assert report.status == "ok"


def test_no_samples_is_an_error() -> None:
    """pool_health() refuses an empty history."""
    with pytest.raises(ValueError, match="at least one"):
        pool_health([])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("utilization", 1.5),
        ("connect_error_rate", -0.1),
        ("window", float("nan")),
        ("wait_time", "1"),
    ],
)
def test_invalid_thresholds_name_the_field(field: str, value: object) -> None:
    """A bad threshold raises ConfigError naming the field and the value."""
    with pytest.raises(ConfigError, match=field):
        HealthThresholds(**{field: value})  # type: ignore[arg-type]


async def test_monitor_reports_sustained_use_of_a_real_pool() -> None:
    """A monitor sampling a saturated pool over 60 (fake) seconds reports utilization."""
    now = [0.0]
    pool: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=4)
    monitor = HealthMonitor(pool, clock=lambda: now[0])
    async with pool:
        held = [await pool.acquire() for _ in range(4)]
        for t in range(0, 65, 5):
            now[0] = float(t)
            monitor.sample()
        report = monitor.report()
        assert codes(report) == ["utilization"]
        assert report.pool == pool.name
        for conn in held:
            await pool.release(conn)


async def test_monitor_reports_exhaustion_of_a_real_pool() -> None:
    """An acquire that times out on a full pool shows up as a critical finding."""
    pool: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=1)
    monitor = HealthMonitor(pool)
    async with pool:
        monitor.sample()
        async with pool.acquire():
            with pytest.raises(PoolTimeout):
                await pool.acquire(timeout=0.01)
        report = monitor.report()
    assert report.status == "critical"
    assert codes(report)[0] == "exhausted"


async def test_monitor_history_is_bounded() -> None:
    """Samples older than the thresholds need are dropped, keeping one baseline."""
    now = [0.0]
    pool: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=2)
    monitor = HealthMonitor(
        pool, HealthThresholds(window=30.0, utilization_for=20.0), clock=lambda: now[0]
    )
    async with pool:
        for t in range(0, 1000, 5):
            now[0] = float(t)
            monitor.sample()
    kept = monitor.samples
    assert len(kept) == 7  # the baseline at the cutoff (965) and the 30 s after it
    assert kept[0].at == 965.0
    assert "samples=7" in repr(monitor)


async def test_monitor_run_samples_until_cancelled() -> None:
    """run() keeps sampling in the background and stops cleanly on cancellation."""
    pool: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=2)
    monitor = HealthMonitor(pool)
    async with pool:
        task = asyncio.create_task(monitor.run(interval=0.001))
        while len(monitor.samples) < 3:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    with pytest.raises(ValueError, match="interval"):
        await monitor.run(interval=0)
