"""Shared vocabulary of the benchmark modules.

Each ``benchmarks/bench_<area>.py`` exposes ``async def run(opts: Options) -> list[Measurement]``.
The runner (``benchmarks/run.py``) calls every module in one process, under the loop asked for,
then prints medians and ratios and writes ``benchmarks/results/latest.{md,json}``.

A *group* is one scenario (e.g. "postgres: SELECT 1, one task"); every row in a group measures
the same work with a different contender, so the rows can be compared as ratios. The row marked
``reference=True`` is the one ratios are computed against (poolkit's own row, usually).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ("Measurement", "Options", "jain_index", "measure_rate", "overtaken_fraction")


@dataclass(frozen=True, slots=True)
class Options:
    """What the runner passes to every benchmark module."""

    quick: bool = False
    repeat: int = 5
    pg_dsn: str = os.environ.get(
        "POOLKIT_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"
    )
    mysql_dsn: str = os.environ.get("POOLKIT_BENCH_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
    loop: str = "asyncio"


@dataclass(slots=True)
class Measurement:
    """One contender in one scenario: repeated samples of a rate or a duration."""

    group: str
    name: str
    unit: str
    samples: list[float]
    higher_is_better: bool = True
    reference: bool = False
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> float:
        """The median of the samples."""
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Half the distance between the smallest and the largest sample, relative to the median."""
        if len(self.samples) < 2 or self.median == 0:
            return 0.0
        return (max(self.samples) - min(self.samples)) / 2 / self.median


async def measure_rate(
    body: Callable[[int], Awaitable[None]], *, ops: int, repeat: int, warmup: int = 1
) -> list[float]:
    """Run ``body(ops)`` ``warmup + repeat`` times and return ``repeat`` rates in ops/s."""
    rates: list[float] = []
    for i in range(warmup + repeat):
        start = time.perf_counter()
        await body(ops)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            rates.append(ops / elapsed)
    return rates


def jain_index(values: list[float]) -> float:
    """Jain's fairness index of ``values`` (1.0 = perfectly even)."""
    if not values:
        return 1.0
    total = sum(values)
    squares = sum(v * v for v in values)
    return (total * total) / (len(values) * squares) if squares else 1.0


def overtaken_fraction(arrival_order: list[int], service_order: list[int]) -> float:
    """The fraction of requests served after a request that arrived later (barging)."""
    if not arrival_order:
        return 0.0
    rank = {req: i for i, req in enumerate(service_order)}
    overtaken = 0
    latest_served = -1
    for req in arrival_order:
        if rank[req] < latest_served:
            overtaken += 1
        latest_served = max(latest_served, rank[req])
    return overtaken / len(arrival_order)
