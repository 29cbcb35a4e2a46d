"""MySQL/MariaDB: poolkit against aiomysql.Pool, asyncmy's pool, SQLAlchemy async and raw aiomysql.

Scenarios (each a group of rows compared as ratios against poolkit's default row):

* ``SELECT 1, 64 tasks / 10 connections``: throughput, plus the acquire wait p50/p99/max, Jain's
  fairness index of the work each task got done, and the fraction of acquires overtaken by a
  later arrival (barging).
* ``SELECT 1, one task``: the per-query overhead of each pool; the raw aiomysql connection (no
  pool at all) is the floor.
* ``pooled vs connect-per-request``: what pooling buys over ``aiomysql.connect()`` per query.

poolkit is measured with both reset policies: ``"clean"`` (its default, a
``COM_RESET_CONNECTION`` round trip per release, which no other contender does) and
``"rollback"`` (the same work as aiomysql's pool: a rollback only when a transaction is open, so
a release costs no I/O here). The ``"rollback"`` rows measure the pool's own overhead; the
``"clean"`` rows what isolation between borrowers costs on top. The contended group ends with a
ceiling: a minimal FIFO pool (raw connections, direct handoff, none of a pool's safety): no
fair aiomysql pool doing that work goes faster.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import poolkit.mysql
from _common import (
    Measurement,
    MinimalFifo,
    Options,
    SQLAlchemyEngine,
    interleaved,
    jain_index,
    overtaken_fraction,
    pin_mariadb_threads,
    run_alone,
)

__all__ = ("run",)

TASKS = 64
CONNECTIONS = 10


async def _select1_aiomysql(conn: Any) -> None:
    async with conn.cursor() as cur:
        await cur.execute("SELECT 1")
        await cur.fetchone()


def _params(dsn: str) -> dict[str, Any]:
    params = poolkit.mysql.parse_dsn(dsn)
    return {
        "host": params.get("host", "127.0.0.1"),
        "port": params.get("port", 3306),
        "user": params.get("user", "root"),
        "password": params.get("password", ""),
        "db": params.get("db"),
    }


class _Contender:
    """One pool under test: open, borrow-and-query, close."""

    name: str

    async def open(self) -> None:
        raise NotImplementedError

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def query(self, conn: Any) -> None:
        await _select1_aiomysql(conn)

    async def close(self) -> None:
        raise NotImplementedError


class _Poolkit(_Contender):
    def __init__(
        self, dsn: str, reset: poolkit.mysql.ResetPolicy, size: int, max_size: int | None = None
    ) -> None:
        self.dsn = dsn
        self.reset: poolkit.mysql.ResetPolicy = reset
        self.size = size
        self.max_size = size if max_size is None else max_size
        self.name = f'poolkit (reset="{reset}", max_size={self.max_size})'
        self.pool: poolkit.mysql.MySQLPool | None = None

    async def open(self) -> None:
        self.pool = poolkit.mysql.create_pool(
            self.dsn,
            reset=self.reset,
            min_size=self.size,
            max_size=self.max_size,
            check_on_acquire="never",
            environ={},
        )
        await self.pool.open()

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        assert self.pool is not None
        return self.pool.acquire()

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


class _AiomysqlPool(_Contender):
    name = "aiomysql.Pool"

    def __init__(self, dsn: str, size: int) -> None:
        self.params = _params(dsn)
        self.size = size
        self.pool: Any = None

    async def open(self) -> None:
        import aiomysql

        self.pool = await aiomysql.create_pool(
            minsize=self.size, maxsize=self.size, autocommit=True, **self.params
        )

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.pool.acquire()  # type: ignore[no-any-return]

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()


class _AsyncmyPool(_Contender):
    name = "asyncmy pool"

    def __init__(self, dsn: str, size: int) -> None:
        self.params = _params(dsn)
        self.params["database"] = self.params.pop("db")
        self.size = size
        self.pool: Any = None

    async def open(self) -> None:
        import asyncmy

        self.pool = await asyncmy.create_pool(
            minsize=self.size, maxsize=self.size, autocommit=True, **self.params
        )

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.pool.acquire()  # type: ignore[no-any-return]

    async def query(self, conn: Any) -> None:
        async with conn.cursor() as cur:
            await cur.execute("SELECT 1")
            await cur.fetchone()

    async def close(self) -> None:
        self.pool.close()
        await self.pool.wait_closed()


def _sqlalchemy(dsn: str, size: int) -> SQLAlchemyEngine:
    return SQLAlchemyEngine("SQLAlchemy async (aiomysql)", _mysql_url(dsn), size)


def _mysql_url(dsn: str) -> str:
    p = _params(dsn)
    return f"mysql+aiomysql://{p['user']}:{p['password']}@{p['host']}:{p['port']}/{p['db'] or ''}"


class _Raw(_Contender):
    """One aiomysql connection, no pool: the floor for one task."""

    name = "raw aiomysql connection"

    def __init__(self, dsn: str) -> None:
        self.params = _params(dsn)
        self.conn: Any = None

    async def open(self) -> None:
        import aiomysql

        self.conn = await aiomysql.connect(autocommit=True, **self.params)

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[Any]:
        yield self.conn

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._held()

    async def close(self) -> None:
        self.conn.close()


class _MinimalFifo(_Contender):
    """:class:`~_common.MinimalFifo` over raw aiomysql connections (no reset): the ceiling of
    every fair aiomysql pool here."""

    name = "minimal FIFO handoff over raw aiomysql connections (ceiling)"

    def __init__(self, dsn: str, size: int) -> None:
        params = _params(dsn)

        async def connect() -> Any:
            import aiomysql

            return await aiomysql.connect(autocommit=True, **params)

        async def close(conn: Any) -> None:
            conn.close()

        self.pool = MinimalFifo(connect, close, size)

    async def open(self) -> None:
        await self.pool.open()

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.pool.borrow()

    async def close(self) -> None:
        await self.pool.close()


class _ConnectPerRequest(_Contender):
    name = "aiomysql.connect() per request"

    def __init__(self, dsn: str) -> None:
        self.params = _params(dsn)

    async def open(self) -> None:
        return None

    @contextlib.asynccontextmanager
    async def _fresh(self) -> AsyncIterator[Any]:
        import aiomysql

        conn = await aiomysql.connect(autocommit=True, **self.params)
        try:
            yield conn
        finally:
            await conn.ensure_closed()

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._fresh()

    async def close(self) -> None:
        return None


# -- scenarios ------------------------------------------------------------------------------------
#
# Contenders are interleaved: each round opens, warms, measures and closes every contender in
# turn, so that a burst of load from elsewhere on the machine hits all of them alike.


Pin = Callable[[], Awaitable[int]]


async def _no_pin() -> int:
    return 0


async def _one_task(contender: _Contender, ops: int, pin: Pin = _no_pin) -> float:
    """One task, ``ops`` borrow-query-release cycles; returns queries/s."""
    for _ in range(max(ops // 10, 5)):  # warm-up
        async with contender.borrow() as conn:
            await contender.query(conn)
    await pin()  # (the server threads of connections opened so far, see _common.py)
    start = time.perf_counter()
    for _ in range(ops):
        async with contender.borrow() as conn:
            await contender.query(conn)
    return ops / (time.perf_counter() - start)


async def _contended(
    contender: _Contender, ops: int, pin: Pin = _no_pin
) -> tuple[float, dict[str, float]]:
    """64 tasks share ``ops`` queries; returns queries/s and fairness figures."""
    remaining = ops
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

    await _one_task(contender, 0, pin)  # warm-up (and placement) only
    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(TASKS)))
    rate = ops / (time.perf_counter() - start)
    waits.sort()
    extra = {
        "wait_p50_ms": statistics.median(waits) * 1000,
        "wait_p99_ms": waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000,
        "wait_max_ms": waits[-1] * 1000,
        "jain": jain_index([float(d) for d in done]),
        "overtaken": overtaken_fraction(arrivals, served),
    }
    return rate, extra


async def _rounds(
    group: str,
    contenders: list[tuple[_Contender, bool, int]],
    repeat: int,
    *,
    contended: bool,
    pin: Pin = _no_pin,
) -> list[Measurement]:
    """Measure every contender ``repeat`` times, taking turns (each round opens, warms up,
    measures once and closes every contender)."""

    async def measure(contender: _Contender, ops: int) -> tuple[float, dict[str, float]]:
        await contender.open()
        try:
            if contended:
                return await _contended(contender, ops, pin)
            return await _one_task(contender, ops, pin), {}
        finally:
            await contender.close()

    return await interleaved(group, contenders, repeat, measure, "queries/s")


async def run(opts: Options) -> list[Measurement]:
    """Run every MySQL scenario once per contender and return the measurements.

    Args:
        opts: the runner's options (``quick`` shrinks everything to a smoke test).

    Returns:
        One :class:`Measurement` per contender and scenario.
    """
    dsn = opts.mysql_dsn
    repeat = 1 if opts.quick else opts.repeat
    contended_ops = 300 if opts.quick else 20_000
    single_ops = 200 if opts.quick else 5_000
    connect_ops = 20 if opts.quick else 300
    import aiomysql

    control = await aiomysql.connect(autocommit=True, **_params(dsn))
    try:
        return await _scenarios(dsn, repeat, contended_ops, single_ops, connect_ops, control)
    finally:
        control.close()


async def _scenarios(
    dsn: str, repeat: int, contended_ops: int, single_ops: int, connect_ops: int, control: Any
) -> list[Measurement]:
    async def pin() -> int:
        return await pin_mariadb_threads(control)

    group = f"mysql: SELECT 1, {TASKS} tasks / {CONNECTIONS} connections"
    out = await _rounds(
        group,
        [
            (_Poolkit(dsn, "clean", CONNECTIONS), True, contended_ops),
            (_Poolkit(dsn, "rollback", CONNECTIONS), False, contended_ops),
            (_AiomysqlPool(dsn, CONNECTIONS), False, contended_ops),
            (_AsyncmyPool(dsn, CONNECTIONS), False, contended_ops),
            (_sqlalchemy(dsn, CONNECTIONS), False, contended_ops),
            (_MinimalFifo(dsn, CONNECTIONS), False, contended_ops),
        ],
        repeat,
        contended=True,
        pin=pin,
    )
    out += await _rounds(
        "mysql: SELECT 1, one task",
        [
            # The default sizes: while one connection resets, the next query may use another.
            (_Poolkit(dsn, "clean", 1, max_size=10), True, single_ops),
            (_Poolkit(dsn, "clean", 1), False, single_ops),
            (_Poolkit(dsn, "rollback", 1), False, single_ops),
            (_AiomysqlPool(dsn, 1), False, single_ops),
            (_AsyncmyPool(dsn, 1), False, single_ops),
            (_sqlalchemy(dsn, 1), False, single_ops),
            (_Raw(dsn), False, single_ops),
        ],
        repeat,
        contended=False,
        pin=pin,
    )
    out += await _rounds(
        "mysql: pooled vs connect-per-request (one task)",
        [
            (_Poolkit(dsn, "clean", 1, max_size=10), True, single_ops),
            (_ConnectPerRequest(dsn), False, connect_ops),
        ],
        repeat,
        contended=False,
        pin=pin,
    )
    return out


if __name__ == "__main__":  # pragma: no cover - manual use: add --quick for a short run
    run_alone(run)
