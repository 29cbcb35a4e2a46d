"""PostgreSQL: poolkit against asyncpg.Pool, psycopg_pool, SQLAlchemy async and raw asyncpg.

Scenarios (each a group of rows compared as ratios against the reference row, poolkit's):

* ``no-query acquire+release cycle``: the pool's own bookkeeping, no query in between.
  poolkit with ``reset="rollback"`` is the reference (a release then does no I/O); its default
  ``"clean"`` is shown too. asyncpg.Pool runs with its default reset and with the reset
  disabled (``reset=`` a no-op coroutine: only the rollback-if-needed part remains).
* ``SELECT 1, one task``: the per-query overhead of each pool; the raw asyncpg connection (no
  pool at all) is the floor. poolkit's default ``"clean"`` reset runs off the caller's path:
  with ``max_size`` above 1, the next query uses another connection while one resets.
* ``SELECT 1, 64 tasks / 10 connections``: throughput under contention, plus the acquire wait
  p50/p99/max, Jain's fairness index of the work each task got done, and the fraction of
  acquires overtaken by a later arrival (barging).
  Two ceilings close the group: a minimal FIFO pool (raw connections, direct handoff, none of
  a pool's safety), without and with a reset round trip per release: no fair pool doing that
  work goes faster.
* ``pooled vs connect-per-request``: what pooling buys over ``asyncpg.connect()`` per query.

Every pool keeps its connections warm (min size = max size, except the one-task rows that
show poolkit's defaults) and uses autocommit; no contender checks connections on acquire.
Contenders take turns: each round opens, warms up, measures once and closes every contender of
a group, so that a change in the machine's load hits all of them alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

import poolkit.postgres
from _common import (
    Measurement,
    MinimalFifo,
    Options,
    SQLAlchemyEngine,
    interleaved,
    jain_index,
    measure_rate,
    overtaken_fraction,
    pin_postgres_backends,
    run_alone,
)

__all__ = ("run",)

TASKS = 64
CONNECTIONS = 10


class _Contender:
    """One pool under test: open, borrow, query, close."""

    name: str

    async def open(self) -> None:
        raise NotImplementedError

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def query(self, conn: Any) -> None:
        await conn.fetchval("SELECT 1")

    async def close(self) -> None:
        raise NotImplementedError


class _Poolkit(_Contender):
    def __init__(
        self,
        dsn: str,
        reset: poolkit.postgres.ResetPolicy,
        min_size: int,
        max_size: int,
    ) -> None:
        self.name = f'poolkit (reset="{reset}", min={min_size}, max={max_size})'
        self.dsn = dsn
        self.reset: poolkit.postgres.ResetPolicy = reset
        self.min_size = min_size
        self.max_size = max_size
        self.pool: poolkit.postgres.PostgresPool | None = None

    async def open(self) -> None:
        self.pool = poolkit.postgres.create_pool(
            self.dsn,
            reset=self.reset,
            min_size=self.min_size,
            max_size=self.max_size,
            check_on_acquire="never",
            pgbouncer=False,
            environ={},
        )
        await self.pool.open()

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        assert self.pool is not None
        return self.pool.acquire()

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


async def _no_reset(conn: Any) -> None:
    """asyncpg.Pool's reset hook doing nothing (its rollback-if-needed still runs)."""


class _AsyncpgPool(_Contender):
    def __init__(self, dsn: str, size: int, *, reset: bool) -> None:
        self.name = "asyncpg.Pool" + ("" if reset else " (reset disabled)")
        self.dsn = dsn
        self.size = size
        self.reset = reset
        self.pool: Any = None

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self.size,
            max_size=self.size,
            reset=None if self.reset else _no_reset,
        )

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.pool.acquire()  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.pool.close()


class _Psycopg(_Contender):
    name = "psycopg_pool (autocommit)"

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self.size = size
        self.pool: Any = None

    async def open(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(
            self.dsn,
            min_size=self.size,
            max_size=self.size,
            kwargs={"autocommit": True},
            open=False,
        )
        await self.pool.open(wait=True)

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.pool.connection()  # type: ignore[no-any-return]

    async def query(self, conn: Any) -> None:
        cur = await conn.execute("SELECT 1")
        await cur.fetchone()

    async def close(self) -> None:
        await self.pool.close()


def _sqlalchemy(dsn: str, size: int) -> SQLAlchemyEngine:
    return SQLAlchemyEngine(
        "SQLAlchemy async (asyncpg)",
        "postgresql+asyncpg://" + dsn.split("://", 1)[1],
        size,
        isolation_level="AUTOCOMMIT",
    )


class _Raw(_Contender):
    """One asyncpg connection, no pool: the floor for one task."""

    name = "raw asyncpg connection"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: Any = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.dsn)

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[Any]:
        yield self.conn

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._held()

    async def close(self) -> None:
        await self.conn.close()


class _MinimalFifo(_Contender):
    """:class:`~_common.MinimalFifo` over raw asyncpg connections; with ``reset=True`` each
    release first awaits asyncpg's own reset query (what asyncpg.Pool sends): the ceiling of a
    pool that resets with one round trip per release."""

    def __init__(self, dsn: str, size: int, *, reset: bool) -> None:
        what = "+ one reset round trip per release" if reset else "no reset"
        self.name = f"minimal FIFO handoff over raw connections, {what} (ceiling)"
        self.pool = MinimalFifo(
            lambda: asyncpg.connect(dsn),
            lambda conn: conn.close(),
            size,
            reset=(lambda conn: conn.execute(conn.get_reset_query())) if reset else None,
        )

    async def open(self) -> None:
        await self.pool.open()

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.pool.borrow()

    async def close(self) -> None:
        await self.pool.close()


class _ConnectPerRequest(_Contender):
    name = "asyncpg.connect() per request"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def open(self) -> None:
        return None

    @contextlib.asynccontextmanager
    async def _fresh(self) -> AsyncIterator[Any]:
        conn = await asyncpg.connect(self.dsn)
        try:
            yield conn
        finally:
            await conn.close()

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._fresh()

    async def close(self) -> None:
        return None


# -- scenarios ------------------------------------------------------------------------------------


async def _one_task(contender: _Contender, ops: int, repeat: int, *, query: bool) -> list[float]:
    async def with_query(n: int) -> None:
        for _ in range(n):
            async with contender.borrow() as conn:
                await contender.query(conn)

    async def without_query(n: int) -> None:
        for _ in range(n):
            async with contender.borrow():
                pass

    await contender.open()
    try:
        return await measure_rate(
            with_query if query else without_query,
            ops=ops,
            repeat=repeat,
            before_each=pin_postgres_backends,
        )
    finally:
        await contender.close()


async def _contended(
    contender: _Contender, ops: int, repeat: int
) -> tuple[list[float], dict[str, float]]:
    """64 tasks share ``ops`` queries; returns rates and fairness figures of the last run."""
    extra: dict[str, float] = {}

    async def body(n: int) -> None:
        remaining = n
        arrivals: list[int] = []
        served: list[int] = []
        waits: list[float] = []
        done = [0] * TASKS
        ticket = 0

        async def worker(index: int) -> None:
            nonlocal remaining, ticket
            while remaining > 0:
                remaining -= 1
                me = ticket
                ticket += 1
                arrivals.append(me)
                start = time.perf_counter()
                async with contender.borrow() as conn:
                    waits.append(time.perf_counter() - start)
                    served.append(me)
                    await contender.query(conn)
                done[index] += 1

        await asyncio.gather(*(worker(i) for i in range(TASKS)))
        waits.sort()
        extra.clear()
        extra["wait_p50_ms"] = statistics.median(waits) * 1000
        extra["wait_p99_ms"] = waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000
        extra["wait_max_ms"] = waits[-1] * 1000
        extra["jain"] = jain_index([float(d) for d in done])
        extra["overtaken"] = overtaken_fraction(arrivals, served)

    await contender.open()
    try:
        rates = await measure_rate(body, ops=ops, repeat=repeat, before_each=pin_postgres_backends)
    finally:
        await contender.close()
    return rates, dict(extra)


async def _rounds(
    group: str,
    contenders: list[tuple[_Contender, bool, int]],
    repeat: int,
    *,
    kind: str,
) -> list[Measurement]:
    """Measure every contender ``repeat`` times, taking turns (each round opens, warms up,
    measures once and closes every contender). ``kind``: "cycle", "query" or "contended"."""

    async def measure(contender: _Contender, ops: int) -> tuple[float, dict[str, float]]:
        if kind == "contended":
            rates, extra = await _contended(contender, ops, 1)
            return rates[0], extra
        rates = await _one_task(contender, ops, 1, query=kind == "query")
        return rates[0], {}

    unit = "cycles/s" if kind == "cycle" else "queries/s"
    return await interleaved(group, contenders, repeat, measure, unit)


async def run(opts: Options) -> list[Measurement]:
    """Run every PostgreSQL scenario once per contender and return the measurements.

    Args:
        opts: the runner's options (``quick`` shrinks everything to a smoke test).

    Returns:
        One :class:`Measurement` per contender and scenario.
    """
    dsn = opts.pg_dsn
    repeat = 1 if opts.quick else opts.repeat
    cycle_ops = 300 if opts.quick else 50_000
    contended_ops = 300 if opts.quick else 20_000
    single_ops = 200 if opts.quick else 5_000
    connect_ops = 20 if opts.quick else 300

    out = await _rounds(
        "postgres: no-query acquire+release cycle (one task)",
        [
            (_Poolkit(dsn, "rollback", 1, 1), True, cycle_ops),
            (_Poolkit(dsn, "clean", 1, 1), False, cycle_ops // 10),
            (_AsyncpgPool(dsn, 1, reset=True), False, cycle_ops // 10),
            (_AsyncpgPool(dsn, 1, reset=False), False, cycle_ops),
            (_Psycopg(dsn, 1), False, cycle_ops),
            (_sqlalchemy(dsn, 1), False, cycle_ops // 10),
        ],
        repeat,
        kind="cycle",
    )
    out += await _rounds(
        "postgres: SELECT 1, one task",
        [
            # poolkit's default sizes: while one connection resets, the next query uses another.
            (_Poolkit(dsn, "clean", 1, 10), True, single_ops),
            (_Poolkit(dsn, "clean", 2, 10), False, single_ops),
            (_Poolkit(dsn, "clean", 1, 1), False, single_ops),
            (_Poolkit(dsn, "rollback", 1, 1), False, single_ops),
            (_AsyncpgPool(dsn, 1, reset=True), False, single_ops),
            (_AsyncpgPool(dsn, 1, reset=False), False, single_ops),
            (_Psycopg(dsn, 1), False, single_ops),
            (_sqlalchemy(dsn, 1), False, single_ops),
            (_Raw(dsn), False, single_ops),
        ],
        repeat,
        kind="query",
    )
    out += await _rounds(
        f"postgres: SELECT 1, {TASKS} tasks / {CONNECTIONS} connections",
        [
            (_Poolkit(dsn, "clean", CONNECTIONS, CONNECTIONS), True, contended_ops),
            (_Poolkit(dsn, "rollback", CONNECTIONS, CONNECTIONS), False, contended_ops),
            (_AsyncpgPool(dsn, CONNECTIONS, reset=True), False, contended_ops),
            (_AsyncpgPool(dsn, CONNECTIONS, reset=False), False, contended_ops),
            (_Psycopg(dsn, CONNECTIONS), False, contended_ops),
            (_sqlalchemy(dsn, CONNECTIONS), False, contended_ops),
            (_MinimalFifo(dsn, CONNECTIONS, reset=False), False, contended_ops),
            (_MinimalFifo(dsn, CONNECTIONS, reset=True), False, contended_ops),
        ],
        repeat,
        kind="contended",
    )
    out += await _rounds(
        "postgres: pooled vs connect-per-request (one task)",
        [
            (_Poolkit(dsn, "clean", 1, 10), True, single_ops),
            (_ConnectPerRequest(dsn), False, connect_ops),
        ],
        repeat,
        kind="query",
    )
    return out


if __name__ == "__main__":  # pragma: no cover - manual use: add --quick for a short run
    run_alone(run)
