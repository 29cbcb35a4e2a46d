"""Registry under uvloop: the scenarios of ``test_registry.py`` (fake connections) and
``test_registry_postgres.py`` (real asyncpg connections) with ``uvloop`` event loops.

uvloop's loops are not ``asyncio.BaseEventLoop``\\s, so the suite-wide check of loop errors does
not see them: each loop made here records its exception-handler calls and the test asserts none.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from typing import Any

import pytest

from core.registry_support import (
    LoopErrors,
    describe_errors,
    pg_pool_factory,
    recording_loop_factory,
    run_threads,
    unique_app_name,
    wait_server_connections_sync,
)
from core.util import settle
from fix_servers import FdTracker
from poolkit import Pool, Registry
from poolkit.testing import FakeConnection, FakeConnector

uvloop = pytest.importorskip("uvloop")

FakePool = Pool[FakeConnection]


@pytest.fixture
def uv_loops() -> tuple[Callable[[], asyncio.AbstractEventLoop], LoopErrors]:
    """A uvloop loop factory (debug on) and the loop errors its loops report.

    One loop is run first: libuv opens a process-wide pipe the first time, which is not a leak
    and must not count against the tests' fd baselines.
    """
    uvloop.run(asyncio.sleep(0))
    errors: LoopErrors = []
    return recording_loop_factory(uvloop.new_event_loop, errors), errors


def run_uv(factory: Callable[[], asyncio.AbstractEventLoop], main: Any) -> Any:
    """asyncio.run() with a uvloop loop (what uvloop.run() does)."""
    with asyncio.Runner(loop_factory=factory, debug=True) as runner:
        return runner.run(main)


async def use(pool: Pool[Any]) -> None:
    """Borrow a connection and give it back."""
    async with pool.acquire(timeout=10):
        pass


def test_uvloop_each_run_gets_its_own_working_pool(
    uv_loops: tuple[Callable[[], asyncio.AbstractEventLoop], LoopErrors],
) -> None:
    """100 consecutive uvloop runs with one key: each gets a new pool bound to its loop, closed
    gracefully when the loop shuts down; no loop error, no fd growth."""
    factory, errors = uv_loops
    reg = Registry("uv-runs")
    connector = FakeConnector()
    made: list[FakePool] = []
    fds = FdTracker()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, uvloop.Loop)
        pool = await reg.get("db", lambda: Pool(connector, min_size=1, max_size=2))
        assert pool.loop is loop
        assert all(p.closed for p in made)
        made.append(pool)
        await use(pool)

    for _ in range(100):
        run_uv(factory, main())
    assert len({id(p) for p in made}) == 100
    assert all(p.closed for p in made)
    assert connector.live == []
    assert all(c.closed and not c.aborted for c in connector.opened)
    assert not errors, describe_errors(errors)
    fds.check_sync()


def test_uvloop_loops_in_eight_threads_each_get_their_own_pool(
    uv_loops: tuple[Callable[[], asyncio.AbstractEventLoop], LoopErrors],
) -> None:
    """8 threads each running a uvloop loop use one key at once: 8 pools, all closed after."""
    factory, errors = uv_loops
    reg = Registry("uv-threads")
    made: list[FakePool] = []
    connectors: list[FakeConnector] = []
    lock = threading.Lock()
    together = threading.Barrier(8)

    async def main() -> None:
        connector = FakeConnector()
        pool = await reg.get("db", lambda: Pool(connector, min_size=1, max_size=2))
        with lock:
            made.append(pool)
            connectors.append(connector)
        assert pool.loop is asyncio.get_running_loop()
        await asyncio.gather(*(use(pool) for _ in range(20)))
        await asyncio.to_thread(together.wait, 10)

    run_threads(8, lambda _: run_uv(factory, main()))
    assert len({id(p) for p in made}) == 8
    assert all(p.closed for p in made)
    assert all(not c.live for c in connectors)
    assert not errors, describe_errors(errors)


def test_uvloop_loop_closed_by_hand_aborts_idle_and_in_use_connections(
    uv_loops: tuple[Callable[[], asyncio.AbstractEventLoop], LoopErrors],
) -> None:
    """A uvloop loop closed with loop.close(): its pool's idle and in-use connections are
    aborted at once, with no exception and no loop error."""
    factory, errors = uv_loops
    reg = Registry("uv-abrupt")
    connector = FakeConnector()

    async def main() -> tuple[FakePool, FakeConnection]:
        pool = await reg.get("db", lambda: Pool(connector, min_size=2, max_size=3))
        await settle(pool)  # the registry opened it: wait for min_size
        return pool, await pool.acquire()

    loop = factory()
    pool, conn = loop.run_until_complete(main())
    loop.close()
    assert pool.closed
    assert conn.aborted
    assert connector.live == []
    del loop
    gc.collect()
    assert not errors, describe_errors(errors)


@pytest.mark.postgres
def test_uvloop_postgres_runs_and_threads_leave_nothing_behind(
    pg_dsn: str, uv_loops: tuple[Callable[[], asyncio.AbstractEventLoop], LoopErrors]
) -> None:
    """Real connections under uvloop: 50 consecutive runs, then 8 threads at once, one key;
    each loop gets its own pool of working connections and closes them when it ends."""
    factory, errors = uv_loops
    reg = Registry("uv-pg")
    app = unique_app_name()
    make = pg_pool_factory(pg_dsn, app, min_size=1, max_size=2)
    made: list[Pool[Any]] = []
    lock = threading.Lock()
    fds = FdTracker()

    async def main() -> None:
        pool = await reg.get("db", make)
        assert pool.loop is asyncio.get_running_loop()
        with lock:
            assert pool not in made
            made.append(pool)
        async with pool.acquire(timeout=10) as conn:
            assert await conn.fetchval("SELECT 1") == 1

    for _ in range(50):
        run_uv(factory, main())
    run_threads(8, lambda _: run_uv(factory, main()))
    assert len(made) == 58
    assert all(p.closed for p in made)
    made.clear()
    assert not errors, describe_errors(errors)
    gc.collect()
    fds.check_sync()
    wait_server_connections_sync(pg_dsn, app, 0)


@pytest.mark.postgres
def test_uvloop_postgres_shutdown_closes_idle_and_in_use_connections(
    pg_dsn: str, uv_loops: tuple[Callable[[], asyncio.AbstractEventLoop], LoopErrors]
) -> None:
    """A uvloop run ending while a real connection is still in use: the pool's connections are
    all closed (the one in use aborted after close_timeout); no fd or session is left."""
    factory, errors = uv_loops
    reg = Registry("uv-pg-shutdown", close_timeout=0.1)
    app = unique_app_name()
    held: list[Any] = []
    fds = FdTracker()

    async def main() -> None:
        pool = await reg.get("db", pg_pool_factory(pg_dsn, app, min_size=2, max_size=3))
        await settle(pool)  # the registry opened it: wait for min_size
        held.append(await pool.acquire())
        await use(pool)

    run_uv(factory, main())
    assert held[0].is_closed()
    held.clear()
    assert not errors, describe_errors(errors)
    gc.collect()
    fds.check_sync()
    wait_server_connections_sync(pg_dsn, app, 0)
