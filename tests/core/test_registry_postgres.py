"""Registry with real asyncpg connections to the local PostgreSQL server.

The scenarios of ``test_registry.py`` with real sockets: the fd count and the server's own
session count (``pg_stat_activity``, by ``application_name``) prove that every connection of a
loop's pool is closed when the loop ends, however it ends. These tests need the server: they
skip locally without it and fail in CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from core.registry_support import (
    pg_pool_factory,
    run_threads,
    server_connections,
    unique_app_name,
    wait_server_connections,
    wait_server_connections_sync,
)
from core.util import settle
from fix_servers import FdTracker
from poolkit import Pool, Registry

pytestmark = pytest.mark.postgres

PgPool = Pool[Any]


async def backend_pid(pool: PgPool) -> int:
    """Run a query on a pooled connection; return the server process serving it."""
    async with pool.acquire(timeout=10) as conn:
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
    return pid


def test_each_asyncio_run_gets_its_own_working_pool(pg_dsn: str) -> None:
    """100 consecutive asyncio.run() calls with one key: each gets a new pool of working
    connections; when each loop ends its connections are closed: no fd growth, no session
    left on the server, no warning."""
    reg = Registry("pg-runs")
    app = unique_app_name()
    factory = pg_pool_factory(pg_dsn, app, min_size=1, max_size=2)
    made: list[PgPool] = []
    fds = FdTracker()

    async def main() -> None:
        pool = await reg.get("db", factory)
        assert pool.loop is asyncio.get_running_loop()
        assert pool not in made
        made.append(pool)
        assert await backend_pid(pool) > 0

    for _ in range(100):
        asyncio.run(main(), debug=True)

    assert len(made) == 100
    assert all(p.closed for p in made)
    made.clear()
    gc.collect()
    fds.check_sync()
    wait_server_connections_sync(pg_dsn, app, 0)


def test_loops_in_eight_threads_at_once_each_get_their_own_connections(pg_dsn: str) -> None:
    """8 threads, each with its own loop, use one key at once: 8 pools whose connections are
    all distinct server sessions, alive together; all closed when the loops end."""
    reg = Registry("pg-threads")
    app = unique_app_name()
    factory = pg_pool_factory(pg_dsn, app, min_size=1, max_size=2)
    pids: dict[int, set[int]] = {}
    lock = threading.Lock()
    all_used = threading.Barrier(8)
    all_counted = threading.Barrier(8)
    fds = FdTracker()

    async def main(index: int) -> None:
        pool = await reg.get("db", factory)
        assert pool.loop is asyncio.get_running_loop()
        seen = set(await asyncio.gather(*(backend_pid(pool) for _ in range(10))))
        with lock:
            pids[index] = seen
        await asyncio.to_thread(all_used.wait, 20)
        if index == 0:
            sessions = await server_connections(pg_dsn, app)
            assert sessions == sum(len(p) for p in pids.values()), (sessions, pids)
        await asyncio.to_thread(all_counted.wait, 20)

    run_threads(8, lambda i: asyncio.run(main(i), debug=True))
    every = [pid for seen in pids.values() for pid in seen]
    assert len(every) == len(set(every)), "two loops shared a server session"
    gc.collect()
    fds.check_sync()
    wait_server_connections_sync(pg_dsn, app, 0)


def test_loop_closed_by_hand_closes_idle_and_in_use_connections(pg_dsn: str) -> None:
    """A loop closed with loop.close() while its pool has idle and in-use connections: the
    sockets are closed without touching the closed loop; no exception, no warning, fds back to
    the baseline, no session left on the server."""
    reg = Registry("pg-abrupt")
    app = unique_app_name()
    factory = pg_pool_factory(pg_dsn, app, min_size=2, max_size=3)
    fds = FdTracker()

    async def main() -> tuple[PgPool, Any]:
        pool = await reg.get("db", factory)
        await settle(pool)  # the registry opened it: wait for min_size
        conn = await pool.acquire()  # still in use when the loop closes
        await conn.fetchval("SELECT 1")
        assert await backend_pid(pool) > 0
        await wait_server_connections(pg_dsn, app, pool.stats().size)
        return pool, conn

    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    pool, conn = loop.run_until_complete(main())
    assert pool.stats().in_use == 1 and pool.stats().idle >= 1
    loop.close()
    assert pool.closed
    assert conn.is_closed()
    del loop, pool, conn
    gc.collect()
    fds.check_sync()
    wait_server_connections_sync(pg_dsn, app, 0)


def test_loop_shutdown_closes_idle_and_in_use_connections(pg_dsn: str) -> None:
    """asyncio.run() ending while a connection is still in use: idle connections are closed
    gracefully, the one in use is aborted after close_timeout; nothing is left behind."""
    reg = Registry("pg-shutdown", close_timeout=0.1)
    app = unique_app_name()
    factory = pg_pool_factory(pg_dsn, app, min_size=2, max_size=3)
    held: list[Any] = []
    fds = FdTracker()

    async def main() -> None:
        pool = await reg.get("db", factory)
        await settle(pool)  # the registry opened it: wait for min_size
        held.append(await pool.acquire())  # never released
        assert await backend_pid(pool) > 0

    asyncio.run(main(), debug=True)
    assert held[0].is_closed()
    held.clear()
    gc.collect()
    fds.check_sync()
    wait_server_connections_sync(pg_dsn, app, 0)


@pytest.fixture(scope="module")
def pg_shared(pg_dsn: str) -> Iterator[tuple[Registry, list[PgPool], str, str]]:
    """A registry shared by tests that each run in their own pytest-asyncio loop."""
    app = unique_app_name()
    yield Registry("pg-pytest-asyncio"), [], app, pg_dsn
    wait_server_connections_sync(pg_dsn, app, 0)


@pytest.mark.parametrize("round_", range(3))
async def test_pytest_asyncio_per_test_loops_get_their_own_connections(
    round_: int, pg_shared: tuple[Registry, list[PgPool], str, str]
) -> None:
    """With pytest-asyncio's loop per test, a registry shared across tests gives each test a
    pool bound to its own loop; earlier tests' sessions are gone from the server."""
    reg, seen, app, dsn = pg_shared
    pool = await reg.get("db", pg_pool_factory(dsn, app, min_size=1, max_size=2))
    assert pool.loop is asyncio.get_running_loop()
    assert all(p.closed for p in seen)
    await backend_pid(pool)
    await wait_server_connections(dsn, app, pool.stats().size)
    seen.append(pool)
