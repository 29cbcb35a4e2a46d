"""Shared vocabulary of the benchmark modules.

Each ``benchmarks/bench_<area>.py`` exposes ``async def run(opts: Options) -> list[Measurement]``.
The runner (``benchmarks/run.py``) calls every module in one process, under the loop asked for,
then prints medians and ratios and writes ``benchmarks/results/latest.{md,json}``.

A *group* is one scenario (e.g. "postgres: SELECT 1, one task"); every row in a group measures
the same work with a different contender, so the rows can be compared as ratios. The row marked
``reference=True`` is the one ratios are computed against (poolkit's own row, usually).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = (
    "Measurement",
    "Options",
    "jain_index",
    "measure_rate",
    "overtaken_fraction",
    "run_alone",
    "server_process",
)


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


@contextlib.asynccontextmanager
async def server_process(script: str) -> AsyncIterator[tuple[int, int, Path]]:
    """Run ``script --serve --cert C --key K`` in a subprocess, with a fresh trustme CA.

    The script prints ``PORTS <plain> <tls>`` once listening (on 127.0.0.1). Yields the two
    ports and the CA file to trust; the process is terminated on exit. A server in its own
    process does not compete with the measured client's event loop.
    """
    import trustme  # only the benchmarks need it (the `bench` group has it)

    with tempfile.TemporaryDirectory(prefix="poolkit-bench-") as tmp:
        directory = Path(tmp)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        cert, key, ca_file = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        ca.cert_pem.write_to_path(str(ca_file))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            script,
            "--serve",
            "--cert",
            str(cert),
            "--key",
            str(key),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                line = (await proc.stdout.readline()).decode()
            if not line.startswith("PORTS "):
                raise RuntimeError(f"benchmark server did not start: {line!r}")
            plain, tls = (int(port) for port in line.split()[1:])
            yield plain, tls, ca_file
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()


def run_alone(run: Callable[[Options], Awaitable[list[Measurement]]]) -> None:
    """Run one module by itself (``python benchmarks/bench_x.py [--quick]``): print each group's
    medians and ratios to its reference row (``benchmarks/run.py`` does the full report)."""
    results = asyncio.run(run(Options(quick="--quick" in sys.argv)))
    groups: dict[str, list[Measurement]] = {}
    for m in results:
        groups.setdefault(m.group, []).append(m)
    for group, rows in groups.items():
        ref = next((r for r in rows if r.reference), rows[0])
        print(f"\n{group}")
        for r in rows:
            if r.higher_is_better:
                ratio = r.median / ref.median if ref.median else float("nan")
            else:
                ratio = ref.median / r.median if r.median else float("nan")
            figures = " ".join(f"{k}={v:.3g}" for k, v in r.extra.items())
            print(f"  {r.name:56} {r.median:12.3f} {r.unit}  x{ratio:5.2f}  {figures}")
