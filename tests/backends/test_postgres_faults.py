"""poolkit.postgres under faults: restarts, pg_terminate_backend, a blackholed network, a full
server, a failover, and a canary password that must never show.

Faults are made with a throwaway PostgreSQL (restart, terminate, ``max_connections``) or the
loopback proxy in front of a server (blackhole, failover); the shared server is never touched.
Every test bounds itself with ``asyncio.timeout`` well below the per-test timeout, so "nothing
hangs" is what a pass means.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from fix_proxy import Proxy, ProxyFactory
from fix_servers import FdTracker, dsn_host_port
from fix_tempserver import TempPostgres, TempPostgresFactory
from poolkit import PoolEvent
from poolkit.postgres import AuthenticationError, PoolTimeout, PostgresPool, create_pool

CANARY = "canary-Pg7x-secret"

PoolFactory = Callable[..., PostgresPool]

# Fast backoff so that healing is quick; no background checks unless a test asks.
FAST: dict[str, Any] = {
    "reconnect_initial_delay": 0.02,
    "reconnect_max_delay": 0.2,
    "health_check_interval": None,
    "environ": {},
    "pgbouncer": False,
}


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    """Build pools with fast reconnects; close them (bounded) after the test."""
    pools: list[PostgresPool] = []

    def make(dsn: str, **kwargs: Any) -> PostgresPool:
        pool = create_pool(dsn, **{**FAST, **kwargs})
        pools.append(pool)
        return pool

    yield make
    async with asyncio.timeout(15):
        for pool in pools:
            await pool.close(timeout=5)


async def proxied(tcp_proxy: ProxyFactory, dsn: str) -> tuple[Proxy, str]:
    """Start a proxy in front of ``dsn``'s server; return it and a DSN pointing at it."""
    host, port = dsn_host_port(dsn)
    proxy = await tcp_proxy(host, port)
    return proxy, dsn.replace(f"{host}:{port}", f"{proxy.host}:{proxy.port}", 1)


async def server_port(conn: asyncpg.Connection) -> int:
    """The port of the server the connection really reached."""
    return int(await conn.fetchval("SELECT inet_server_port()"))


# -- restarts and pg_terminate_backend --------------------------------------------------------


async def test_pool_heals_after_a_server_restart(
    temp_postgres: TempPostgres, make_pool: PoolFactory
) -> None:
    """After a restart, dead idle connections are dropped and new ones serve at once."""
    pool = make_pool(temp_postgres.dsn, min_size=2, max_size=2)
    async with asyncio.timeout(40):
        async with pool:
            async with pool.acquire() as conn:
                before = conn.get_server_pid()
            await temp_postgres.restart()
            for _ in range(4):
                async with pool.acquire(timeout=10) as conn:
                    assert await conn.fetchval("SELECT 1") == 1
                    assert conn.get_server_pid() != before
            assert (
                pool.stats().closed.get("broken", 0) + pool.stats().closed.get("check_failed", 0)
                >= 1
            )


async def test_a_query_in_flight_during_a_restart_fails_only_its_borrower(
    temp_postgres: TempPostgres, make_pool: PoolFactory
) -> None:
    """The borrower whose session the restart killed gets the driver's error; others don't."""
    pool = make_pool(temp_postgres.dsn, min_size=1, max_size=2)
    async with asyncio.timeout(40), pool:
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            async with pool.acquire() as conn:
                await temp_postgres.restart()
                await conn.fetchval("SELECT 1")
        async with pool.acquire(timeout=10) as conn:
            assert await conn.fetchval("SELECT 2") == 2


async def test_idle_connections_terminated_server_side_are_replaced_silently(
    temp_postgres: TempPostgres, make_pool: PoolFactory
) -> None:
    """pg_terminate_backend on idle sessions: acquires never see the dead ones."""
    pool = make_pool(temp_postgres.dsn, min_size=3, max_size=3, check_on_acquire="never")
    async with asyncio.timeout(30), pool:
        killed = await temp_postgres.terminate_connections()
        assert killed == 3

        async def borrow() -> None:
            async with pool.acquire(timeout=10) as conn:
                assert await conn.fetchval("SELECT 1") == 1

        await asyncio.sleep(0.1)  # let the sockets' EOF arrive: the free is_closed() test
        await asyncio.gather(*(borrow() for _ in range(6)))
        stats = pool.stats()
        assert stats.closed.get("broken") == 3
        assert stats.created == 6


async def test_a_session_terminated_while_in_use_is_not_reused(
    temp_postgres: TempPostgres, make_pool: PoolFactory
) -> None:
    """The borrower of a terminated session fails; the release drops the dead connection."""
    pool = make_pool(temp_postgres.dsn, min_size=1, max_size=1, check_on_acquire="never")
    async with asyncio.timeout(30), pool:
        # asyncpg raises ConnectionDoesNotExistError, AdminShutdownError or, racing the
        # server's FATAL message, InternalClientError: any driver error will do.
        with pytest.raises(
            (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
        ):
            async with pool.acquire() as conn:
                victim = conn.get_server_pid()
                assert await temp_postgres.terminate_connections() == 1
                await conn.fetchval("SELECT 1")
        async with pool.acquire(timeout=10) as conn:
            assert conn.get_server_pid() != victim
            assert await conn.fetchval("SELECT 1") == 1


# -- network faults -------------------------------------------------------------------------------


async def test_blackhole_during_a_query_is_bounded_and_the_pool_recovers(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory, pg_dsn: str, make_pool: PoolFactory
) -> None:
    """A query on a blackholed link times out; the connection is dropped, never reused."""
    proxy, dsn = await proxied(tcp_proxy, pg_dsn)
    pool = make_pool(
        dsn,
        min_size=1,
        max_size=1,
        check_on_acquire="never",
        reset_timeout=0.3,
        close_timeout=0.3,
    )
    async with asyncio.timeout(20):
        with pytest.raises(TimeoutError):
            async with pool.acquire() as conn:
                victim = conn.get_server_pid()
                proxy.blackhole()
                await conn.fetchval("SELECT 6", timeout=0.3)
        proxy.restore()
        async with pool.acquire(timeout=5) as conn:
            assert conn.get_server_pid() != victim
            assert await conn.fetchval("SELECT 7") == 7
        await pool.close()


async def test_blackhole_during_release_is_bounded_by_reset_timeout(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory, pg_dsn: str, make_pool: PoolFactory
) -> None:
    """A reset that never gets an answer ends at reset_timeout; the slot is refilled."""
    proxy, dsn = await proxied(tcp_proxy, pg_dsn)
    pool = make_pool(
        dsn,
        min_size=1,
        max_size=1,
        reset_timeout=0.3,
        close_timeout=0.3,
        check_on_acquire="never",
    )
    async with asyncio.timeout(20):
        async with pool.acquire() as conn:
            victim = conn.get_server_pid()
            await conn.execute("SET work_mem = '3MB'")
            proxy.blackhole()
        proxy.restore()
        async with pool.acquire(timeout=5) as conn:  # waits for the reset to give up
            assert conn.get_server_pid() != victim
            assert await conn.fetchval("SELECT current_setting('work_mem') <> '3MB'")
        stats = pool.stats()
        assert stats.reset_failures == 1
        assert stats.closed.get("reset_failed") == 1
        await pool.close()


async def test_check_on_acquire_drops_a_silently_dead_connection(
    tcp_proxy: ProxyFactory, pg_dsn: str, make_pool: PoolFactory
) -> None:
    """A connection whose link went silent passes the free check; the round trip catches it."""
    proxy, dsn = await proxied(tcp_proxy, pg_dsn)
    pool = make_pool(
        dsn,
        min_size=1,
        max_size=1,
        reset="rollback",  # the release does no I/O: the connection is idle before the fault
        check_on_acquire="always",
        check_timeout=0.3,
        close_timeout=0.3,
    )
    async with asyncio.timeout(20):
        async with pool.acquire() as conn:
            victim = conn.get_server_pid()
        proxy.blackhole()
        proxy.restore()  # new connections work again; the pooled one stays silent
        async with pool.acquire(timeout=5) as conn:
            assert conn.get_server_pid() != victim
            assert await conn.fetchval("SELECT 8") == 8
        assert pool.stats().check_failures == 1


async def test_close_is_bounded_with_a_connection_stuck_in_use(
    tcp_proxy: ProxyFactory, pg_dsn: str, make_pool: PoolFactory
) -> None:
    """pool.close(timeout) returns on time although a borrower hangs on a dead link."""
    proxy, dsn = await proxied(tcp_proxy, pg_dsn)
    pool = make_pool(dsn, min_size=1, max_size=1, close_timeout=0.3)
    started = asyncio.Event()

    async def stuck() -> None:
        async with pool.acquire() as conn:
            proxy.blackhole()
            started.set()
            await conn.fetchval("SELECT pg_sleep(0)")

    async with asyncio.timeout(20):
        await pool.open()
        task = asyncio.create_task(stuck())
        await started.wait()
        await pool.close(timeout=0.3)
        assert pool.stats().size == 0
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await task  # the aborted connection fails its borrower


async def test_drain_after_a_failover_moves_every_connection(
    temp_postgres_factory: TempPostgresFactory, tcp_proxy: ProxyFactory, make_pool: PoolFactory
) -> None:
    """After the proxy points at a new primary, drain() replaces idle and in-use connections."""
    old = temp_postgres_factory()
    new = temp_postgres_factory()
    proxy, dsn = await proxied(tcp_proxy, old.dsn)
    pool = make_pool(dsn, min_size=2, max_size=3)
    async with asyncio.timeout(30), pool:
        held = await pool.acquire()
        assert await server_port(held) == old.port
        proxy.retarget(new.host, new.port)
        await pool.drain()
        async with pool.acquire(timeout=10) as conn:
            assert await server_port(conn) == new.port
        await pool.release(held)
        conns = [await pool.acquire(timeout=10) for _ in range(3)]
        try:
            assert {await server_port(c) for c in conns} == {new.port}
        finally:
            for conn in conns:
                await pool.release(conn)
        assert pool.stats().closed.get("drained", 0) >= 2


# -- a full server --------------------------------------------------------------------------------


async def test_a_full_server_times_out_acquires_with_the_cause_then_heals(
    temp_postgres_factory: TempPostgresFactory, make_pool: PoolFactory
) -> None:
    """At max_connections acquires time out naming the refusal; then the pool heals."""
    server = temp_postgres_factory(
        max_connections=3, settings={"superuser_reserved_connections": 0}
    )
    hogs = [await asyncpg.connect(server.dsn) for _ in range(3)]
    pool = make_pool(server.dsn, min_size=0, max_size=2)
    try:
        async with asyncio.timeout(30):
            with pytest.raises(PoolTimeout) as info:
                await pool.acquire(timeout=1.0)
            assert "too many clients" in str(info.value)
            assert isinstance(info.value.__cause__, Exception)
            assert pool.stats().connect_errors >= 1
            for hog in hogs[:2]:
                await hog.close()
            async with pool.acquire(timeout=10) as conn:
                assert await conn.fetchval("SELECT 1") == 1
    finally:
        for hog in hogs:
            await hog.close()


# -- credentials ----------------------------------------------------------------------------------


async def test_canary_password_appears_nowhere(
    temp_postgres_factory: TempPostgresFactory,
    make_pool: PoolFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The password is absent from reprs, errors, log records, events and stats."""
    server = temp_postgres_factory(password=CANARY)
    seen: list[str] = []

    def on_event(event: PoolEvent) -> None:
        seen.append(event.describe())
        seen.append(repr(event))

    caplog.set_level(logging.DEBUG)
    async with asyncio.timeout(20):
        good = make_pool(server.dsn, min_size=1, max_size=2, on_event=on_event)
        async with good, good.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
        keyword = make_pool(
            f"postgresql://postgres@127.0.0.1:{server.port}/test",
            password=CANARY,
            min_size=1,
            on_event=on_event,
        )
        async with keyword, keyword.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
        bad = make_pool(server.make_dsn(password=CANARY + "-wrong"), min_size=0, on_event=on_event)
        with pytest.raises(AuthenticationError) as info:
            await bad.acquire(timeout=5)
        timed = make_pool(
            server.make_dsn(password=CANARY + "-wrong"), min_size=0, acquire_timeout=0.5
        )
        with pytest.raises(AuthenticationError) as info2:
            await timed.acquire()
        for pool in (good, keyword, bad, timed):
            seen += [repr(pool), str(pool), pool.target, pool.name, repr(pool.connector)]
            seen.append(repr(pool.stats()))
            seen.append(repr(pool.stats().as_dict()))
    for raised in (info.value, info2.value):
        error: BaseException | None = raised
        while error is not None:
            seen += [str(error), repr(error), repr(error.args)]
            error = error.__cause__ or error.__context__
    seen += [r.getMessage() for r in caplog.records]
    seen += [repr(r.args) for r in caplog.records]
    seen += [str(r.exc_info) for r in caplog.records if r.exc_info]
    leaks = [text for text in seen if CANARY in text]
    assert leaks == []
    assert any("password authentication failed" in text for text in seen)
