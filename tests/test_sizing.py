"""The pool sizing rule of ``poolkit bench``: Little's law times headroom, and the limit check."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolkit._bench._sizing import (
    DEFAULT_HEADROOM,
    check_server_limit,
    recommend,
)


def test_recommend_applies_littles_law_with_default_headroom() -> None:
    """1000 req/s x 4 ms = 4 busy connections on average; x 1.5 headroom = 6."""
    advice = recommend(1000, 0.004)
    assert advice.headroom == DEFAULT_HEADROOM == 1.5
    assert advice.connections == pytest.approx(6.0)
    assert advice.min_size == 4
    assert advice.max_size == 6
    assert advice.total_max == 6


def test_recommend_rounds_up_fractional_connections() -> None:
    """250 req/s x 10 ms x 1.5 = 3.75 connections, so max_size 4 and min_size 3 (2.5 up)."""
    advice = recommend(250, 0.010)
    assert advice.connections == pytest.approx(3.75)
    assert (advice.min_size, advice.max_size) == (3, 4)


def test_recommend_never_suggests_an_empty_pool() -> None:
    """A tiny load still gets min_size 1 and max_size 1, never 0."""
    advice = recommend(1, 0.0001)
    assert (advice.min_size, advice.max_size) == (1, 1)
    zero = recommend(0, 0.05)
    assert (zero.min_size, zero.max_size) == (1, 1)


def test_recommend_splits_the_rate_across_workers() -> None:
    """4 workers share 2000 req/s: each pool sizes for 500 req/s; total is workers x max_size."""
    advice = recommend(2000, 0.004, workers=4)
    assert advice.connections == pytest.approx(3.0)
    assert (advice.min_size, advice.max_size) == (2, 3)
    assert advice.total_max == 12


def test_recommend_uses_the_given_headroom() -> None:
    """headroom=2 doubles the average instead of multiplying it by 1.5."""
    advice = recommend(100, 0.1, headroom=2.0)
    assert advice.connections == pytest.approx(20.0)
    assert advice.max_size == 20
    assert advice.min_size == 10


def test_recommend_ignores_float_noise_when_rounding_up() -> None:
    """A product that is an integer up to float noise (3.0000000000000004) is not rounded up."""
    assert recommend(1000, 0.004).max_size == 6
    assert recommend(0.1 * 3, 1.0, headroom=10.0).max_size == 3  # 3.0000000000000004 -> 3
    assert recommend(3, 0.1, headroom=1.0).max_size == 1  # 0.30000000000000004 -> 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rps": -1.0, "service_time": 0.01}, "rps"),
        ({"rps": math.nan, "service_time": 0.01}, "rps"),
        ({"rps": math.inf, "service_time": 0.01}, "rps"),
        ({"rps": 10.0, "service_time": -0.01}, "service_time"),
        ({"rps": 10.0, "service_time": 0.01, "headroom": 0.5}, "headroom"),
        ({"rps": 10.0, "service_time": 0.01, "headroom": 0.0}, "headroom"),
        ({"rps": 10.0, "service_time": 0.01, "workers": 0}, "workers"),
    ],
)
def test_recommend_rejects_invalid_input_naming_it(kwargs: dict[str, float], name: str) -> None:
    """Negative, non-finite or out-of-range arguments raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=name):
        recommend(**kwargs)  # type: ignore[arg-type]


@given(
    rps=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    service_time=st.floats(min_value=0, max_value=60, allow_nan=False),
    workers=st.integers(min_value=1, max_value=512),
    headroom=st.floats(min_value=1, max_value=4, allow_nan=False),
)
def test_recommend_bounds_hold_for_any_load(
    rps: float, service_time: float, workers: int, headroom: float
) -> None:
    """min_size <= max_size, max_size covers the headroomed average, and both are at least 1."""
    advice = recommend(rps, service_time, workers=workers, headroom=headroom)
    assert 1 <= advice.min_size <= advice.max_size
    assert advice.max_size >= advice.connections - 1e-6
    assert advice.max_size < advice.connections + 1 + 1e-6 or advice.max_size == 1
    assert advice.total_max == workers * advice.max_size


def test_server_limit_check_passes_when_pools_fit() -> None:
    """4 workers x max_size 20 = 80 connections fit under max_connections 100: no warning."""
    check = check_server_limit(100, workers=4, max_size=20)
    assert check.total == 80
    assert not check.exceeds
    assert check.warning() is None


def test_server_limit_check_warns_when_workers_times_max_size_exceed_it() -> None:
    """8 workers x 20 = 160 > 100: the warning names the numbers and the largest size that fits."""
    check = check_server_limit(100, workers=8, max_size=20)
    assert check.exceeds
    assert check.largest_max_size == 12
    warning = check.warning()
    assert warning is not None
    assert "8 worker(s) x max_size 20 = 160" in warning
    assert "max_connections (100)" in warning
    assert "max_size <= 12" in warning


def test_server_limit_check_at_exactly_the_limit_fits() -> None:
    """workers x max_size equal to max_connections is allowed (the limit is inclusive)."""
    assert not check_server_limit(100, workers=10, max_size=10).exceeds


@pytest.mark.parametrize(
    ("limit", "workers", "max_size", "name"),
    [(-1, 1, 1, "max_connections"), (10, 0, 1, "workers"), (10, 1, 0, "max_size")],
)
def test_server_limit_check_rejects_invalid_input(
    limit: int, workers: int, max_size: int, name: str
) -> None:
    """A negative limit or a zero worker count/pool size raises ValueError naming it."""
    with pytest.raises(ValueError, match=name):
        check_server_limit(limit, workers=workers, max_size=max_size)
