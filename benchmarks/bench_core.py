"""Core pool machinery with a fake connector: what the pool itself costs, without a network.

Scenarios:

* ``core: uncontended acquire+release`` — one task, an idle connection always available. The
  floor is a bare ``asyncio.Queue`` ``get_nowait``/``put_nowait`` cycle. poolkit runs with its
  default configuration (stats, and the timestamps that leak detection reads), then with
  ``leak_threshold`` set (the acquiring stack is captured on every acquire).
* ``core: 64 tasks / 10 connections`` — contended throughput, acquire wait percentiles,
  Jain's fairness index over per-task service counts and the fraction of acquires that
  overtook an earlier waiter. Compared with a minimal FIFO pool (``asyncio.Queue`` of
  connections) as the floor of what any pool must do.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from _common import Measurement, Options, jain_index, measure_rate, overtaken_fraction, run_alone
from poolkit import Pool
from poolkit.testing import FakeConnection, FakeConnector

UNCONTENDED = "core: uncontended acquire+release (µs per cycle)"
CONTENDED = "core: 64 tasks / 10 connections (cycles/s)"


async def _queue_floor(ops: int) -> None:
    queue: asyncio.Queue[FakeConnection] = asyncio.Queue()
    queue.put_nowait(FakeConnection())
    get, put = queue.get_nowait, queue.put_nowait
    for _ in range(ops):
        conn = get()
        put(conn)


def _fast_pool(**extra: object) -> Pool[FakeConnection]:
    return Pool(
        FakeConnector(needs_reset=False),
        min_size=1,
        max_size=10,
        health_check_interval=None,
        **extra,  # type: ignore[arg-type]
    )


async def _uncontended(opts: Options, ops: int) -> list[Measurement]:
    results: list[Measurement] = []

    def per_cycle_us(rates: list[float]) -> list[float]:
        return [1e6 / r for r in rates]

    floor = await measure_rate(_queue_floor, ops=ops, repeat=opts.repeat)
    results.append(
        Measurement(UNCONTENDED, "asyncio.Queue get/put (floor)", "µs", per_cycle_us(floor), False)
    )

    for label, extra, reference in (
        ("poolkit: async with acquire() (default: stats, leak timestamps)", {}, True),
        ("poolkit: async with acquire() + leak stack capture", {"leak_threshold": 300.0}, False),
    ):
        async with _fast_pool(**extra) as pool:

            async def cycle(n: int, pool: Pool[FakeConnection] = pool) -> None:
                acquire = pool.acquire
                for _ in range(n):
                    async with acquire():
                        pass

            rates = await measure_rate(cycle, ops=ops, repeat=opts.repeat)
        results.append(
            Measurement(UNCONTENDED, label, "µs", per_cycle_us(rates), False, reference=reference)
        )

    pool = _fast_pool()
    async with pool:

        async def cycle_await(n: int) -> None:
            acquire, release = pool.acquire, pool.release
            for _ in range(n):
                conn = await acquire()
                await release(conn)

        aw = await measure_rate(cycle_await, ops=ops, repeat=opts.repeat)
    results.append(
        Measurement(
            UNCONTENDED,
            "poolkit: await acquire() + release()",
            "µs",
            per_cycle_us(aw),
            False,
        )
    )
    return results


class _MinimalFifoPool:
    """The least a FIFO pool must do: an asyncio.Queue of connections (no stats, no checks)."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[FakeConnection] = asyncio.Queue()
        for _ in range(size):
            self._queue.put_nowait(FakeConnection())

    async def acquire(self) -> FakeConnection:
        return await self._queue.get()

    def release(self, conn: FakeConnection) -> None:
        self._queue.put_nowait(conn)


async def _contended_run(
    acquire: object, release: object, tasks: int, per_task: int
) -> tuple[float, list[float], list[int], list[int], list[int]]:
    """Run ``tasks`` workers; return elapsed, waits, per-task counts, arrival and service order."""
    waits: list[float] = []
    counts = [0] * tasks
    arrivals: list[int] = []
    services: list[int] = []
    seq = 0
    perf = time.perf_counter

    async def worker(index: int) -> None:
        nonlocal seq
        for _ in range(per_task):
            ticket = seq
            seq += 1
            arrivals.append(ticket)
            start = perf()
            conn = await acquire()  # type: ignore[operator]
            waits.append(perf() - start)
            services.append(ticket)
            counts[index] += 1
            await asyncio.sleep(0)  # hold the connection across one loop iteration
            result = release(conn)  # type: ignore[operator]
            if result is not None:
                await result

    start = perf()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return perf() - start, waits, counts, arrivals, services


async def _contended(opts: Options) -> list[Measurement]:
    tasks, per_task = 64, (20 if opts.quick else 200)
    ops = tasks * per_task
    rows: list[Measurement] = []
    for name, make, reference in (
        ("minimal FIFO pool (asyncio.Queue, floor)", "queue", False),
        ("poolkit", "poolkit", True),
    ):
        rates: list[float] = []
        all_waits: list[float] = []
        jains: list[float] = []
        overtaken: list[float] = []
        for i in range(opts.repeat + 1):
            if make == "queue":
                q = _MinimalFifoPool(10)
                elapsed, waits, counts, arrivals, services = await _contended_run(
                    q.acquire, q.release, tasks, per_task
                )
            else:
                pool = Pool(
                    FakeConnector(needs_reset=False),
                    min_size=10,
                    max_size=10,
                    health_check_interval=None,
                    acquire_timeout=60,
                )
                async with pool:
                    elapsed, waits, counts, arrivals, services = await _contended_run(
                        pool.acquire, pool.release, tasks, per_task
                    )
            if i == 0:
                continue  # warm-up
            rates.append(ops / elapsed)
            all_waits.extend(waits)
            jains.append(jain_index([float(c) for c in counts]))
            overtaken.append(overtaken_fraction(arrivals, services))
        all_waits.sort()
        mean_wait = statistics.fmean(all_waits)
        rows.append(
            Measurement(
                CONTENDED,
                name,
                "ops/s",
                rates,
                True,
                reference=reference,
                extra={
                    "wait_p50_us": all_waits[len(all_waits) // 2] * 1e6,
                    "wait_p99_us": all_waits[int(len(all_waits) * 0.99)] * 1e6,
                    "wait_max_us": all_waits[-1] * 1e6,
                    "max_wait_over_mean": all_waits[-1] / mean_wait if mean_wait else 0.0,
                    "jain": statistics.median(jains),
                    "overtaken_pct": statistics.median(overtaken) * 100,
                },
            )
        )
    return rows


async def run(opts: Options) -> list[Measurement]:
    """Run the core scenarios."""
    ops = 2_000 if opts.quick else 100_000
    return [*(await _uncontended(opts, ops)), *(await _contended(opts))]


if __name__ == "__main__":  # pragma: no cover - manual use: add --quick for a short run
    run_alone(run)
