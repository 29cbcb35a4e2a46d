"""poolkit.mysql under faults: restarts, KILL, a blackholed network, a full server, misuse.

Faults are made with a throwaway ``mariadbd`` (restart, KILL, ``max_connections``) or the
loopback proxy in front of the shared server (blackhole); the shared server is never touched.
Every test bounds itself with ``asyncio.timeout`` well below the per-test timeout, so "nothing
hangs" is what a pass means.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomysql
import pytest

from fix_proxy import Proxy, ProxyFactory
from fix_servers import FdTracker, dsn_host_port
from fix_tempserver import TempMariaDB, TempMariaDBFactory
from poolkit.mysql import (
    AuthenticationError,
    MySQLPool,
    PoolTimeout,
    PoolUsageError,
    create_pool,
)

pytestmark = pytest.mark.mysql

CANARY = "canary-Zq81-secret"

PoolFactory = Callable[..., MySQLPool]

# Fast backoff so that healing is quick; no background checks unless a test asks.
FAST: dict[str, Any] = {
    "reconnect_initial_delay": 0.02,
    "reconnect_max_delay": 0.2,
    "health_check_interval": None,
    "environ": {},
}


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    """Build pools with fast reconnects; close them (bounded) after the test."""
    pools: list[MySQLPool] = []

    def make(dsn: str | None = None, **kwargs: Any) -> MySQLPool:
        pool = create_pool(dsn, **{**FAST, **kwargs})
        pools.append(pool)
        return pool

    yield make
    async with asyncio.timeout(10):
        for pool in pools:
            await pool.close()


async def fetch(conn: Any, sql: str) -> tuple[Any, ...]:
    """Run ``sql`` and return its first row."""
    async with conn.cursor() as cur:
        await cur.execute(sql)
        row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def proxied(tcp_proxy: ProxyFactory, dsn: str) -> tuple[Proxy, str]:
    """Start a proxy in front of ``dsn``'s server; return it and a DSN pointing at it."""
    host, port = dsn_host_port(dsn)
    proxy = await tcp_proxy(host, port)
    return proxy, f"mysql://root@{proxy.host}:{proxy.port}/test"


# -- server restarts and KILL ---------------------------------------------------------------------


async def test_pool_heals_after_a_server_restart(
    no_fd_leak: FdTracker, temp_mariadb: TempMariaDB, make_pool: PoolFactory
) -> None:
    """After a restart, dead idle connections are dropped for free and never handed out."""
    # "rollback": releases do no I/O, so both connections are idle when the server goes down.
    pool = make_pool(
        temp_mariadb.dsn, min_size=2, max_size=2, reset="rollback", check_on_acquire="never"
    )
    async with asyncio.timeout(30):
        await pool.open()
        async with pool.acquire() as a, pool.acquire() as b:
            await fetch(a, "SELECT 1")
            await fetch(b, "SELECT 1")
        await temp_mariadb.restart()
        async with pool.acquire() as conn:
            assert await fetch(conn, "SELECT 1") == (1,)
        assert pool.stats().closed.get("broken", 0) >= 1
        await pool.close()
    assert await temp_mariadb.client_connections() == 0


async def test_killed_idle_connections_are_replaced_without_an_error(
    temp_mariadb: TempMariaDB, make_pool: PoolFactory
) -> None:
    """KILL of every idle pooled session: the next acquires get fresh, working connections."""
    pool = make_pool(temp_mariadb.dsn, min_size=3, max_size=3, check_on_acquire="never")
    async with asyncio.timeout(20):
        await pool.open()
        assert await temp_mariadb.terminate_connections() == 3
        async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
            for conn in (a, b, c):
                assert await fetch(conn, "SELECT 2") == (2,)
        stats = pool.stats()
        assert stats.closed.get("broken", 0) == 3
        assert stats.size <= 3


async def test_kill_of_an_in_use_connection_fails_only_that_borrower(
    temp_mariadb: TempMariaDB, make_pool: PoolFactory
) -> None:
    """KILL during use: the borrower's query fails; the dead connection is not reused."""
    pool = make_pool(temp_mariadb.dsn, min_size=1, max_size=1, check_on_acquire="never")
    async with asyncio.timeout(20):
        with pytest.raises(aiomysql.OperationalError):
            async with pool.acquire() as conn:
                victim = conn.thread_id()
                await temp_mariadb.query(f"KILL CONNECTION {victim}")
                await fetch(conn, "SELECT 3")
        async with pool.acquire() as conn:
            assert conn.thread_id() != victim
            assert await fetch(conn, "SELECT 4") == (4,)
        assert pool.stats().in_use == 0


async def test_full_server_times_out_acquires_with_the_cause_then_heals(
    temp_mariadb_factory: TempMariaDBFactory, make_pool: PoolFactory
) -> None:
    """At max_connections, acquire fails within its timeout naming error 1040; then heals."""
    server = temp_mariadb_factory(max_connections=10)  # MariaDB's minimum
    # root has CONNECTION ADMIN, which may exceed max_connections: use a plain user.
    await server.query(
        "CREATE USER 'plain'@'127.0.0.1'; GRANT SELECT ON test.* TO 'plain'@'127.0.0.1'"
    )
    host, port = dsn_host_port(server.dsn)
    dsn = server.make_dsn(user="plain")
    hogs: list[Any] = []
    try:
        async with asyncio.timeout(30):
            for _ in range(20):
                try:
                    hogs.append(
                        await aiomysql.connect(host=host, port=port, user="plain", db="test")
                    )
                except aiomysql.OperationalError as exc:
                    assert exc.args[0] == 1040
                    break
            else:
                pytest.fail("the server never refused a connection")
            pool = make_pool(dsn, min_size=0, max_size=2)
            with pytest.raises(PoolTimeout) as info:
                await pool.acquire(timeout=0.5)
            assert "Too many connections" in repr(info.value.__cause__) + str(info.value)
            for hog in hogs:
                hog.close()
            hogs.clear()
            async with pool.acquire(timeout=5) as conn:
                assert await fetch(conn, "SELECT 5") == (5,)
    finally:
        for hog in hogs:
            hog.close()


# -- a network that stops answering ---------------------------------------------------------------


async def test_blackhole_during_a_query_is_bounded_and_the_pool_recovers(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory, mysql_dsn: str, make_pool: PoolFactory
) -> None:
    """A query on a blackholed link times out; the connection is dropped, not reused."""
    proxy, dsn = await proxied(tcp_proxy, mysql_dsn)
    pool = make_pool(dsn, min_size=1, max_size=1, check_on_acquire="never")
    async with asyncio.timeout(20):
        with pytest.raises(TimeoutError):
            async with pool.acquire() as conn:
                victim = conn.thread_id()
                proxy.blackhole()
                async with asyncio.timeout(0.3):
                    await fetch(conn, "SELECT 6")
        proxy.restore()
        async with pool.acquire(timeout=5) as conn:
            assert conn.thread_id() != victim
            assert await fetch(conn, "SELECT 7") == (7,)
        await pool.close()


async def test_blackhole_during_release_is_bounded_by_reset_timeout(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory, mysql_dsn: str, make_pool: PoolFactory
) -> None:
    """A reset that never gets an answer ends at reset_timeout; the slot is refilled."""
    proxy, dsn = await proxied(tcp_proxy, mysql_dsn)
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
            victim = conn.thread_id()
            await fetch(conn, "SELECT @x := 1")
            proxy.blackhole()
        proxy.restore()
        async with pool.acquire(timeout=5) as conn:  # waits for the reset to give up
            assert conn.thread_id() != victim
            assert await fetch(conn, "SELECT @x") == (None,)
        stats = pool.stats()
        assert stats.reset_failures == 1
        assert stats.closed.get("reset_failed") == 1
        await pool.close()


async def test_ping_on_acquire_drops_a_silently_dead_connection(
    tcp_proxy: ProxyFactory, mysql_dsn: str, make_pool: PoolFactory
) -> None:
    """A connection whose link went silent passes the free check; the ping catches it."""
    proxy, dsn = await proxied(tcp_proxy, mysql_dsn)
    pool = make_pool(
        dsn,
        min_size=1,
        max_size=1,
        reset="rollback",  # the release does no I/O: the connection is idle before the fault
        check_on_acquire="always",
        check_timeout=0.3,
    )
    async with asyncio.timeout(20):
        async with pool.acquire() as conn:
            victim = conn.thread_id()
        proxy.blackhole()
        proxy.restore()  # new connections work again; the pooled one stays silent
        async with pool.acquire(timeout=5) as conn:
            assert conn.thread_id() != victim
            assert await fetch(conn, "SELECT 8") == (8,)
        assert pool.stats().check_failures == 1


async def test_close_is_bounded_with_a_connection_stuck_in_use(
    tcp_proxy: ProxyFactory, mysql_dsn: str, make_pool: PoolFactory
) -> None:
    """pool.close(timeout) returns on time although a borrower hangs on a dead link."""
    proxy, dsn = await proxied(tcp_proxy, mysql_dsn)
    pool = make_pool(dsn, min_size=1, max_size=1, close_timeout=0.3)
    started = asyncio.Event()

    async def stuck() -> None:
        async with pool.acquire() as conn:
            proxy.blackhole()
            started.set()
            await fetch(conn, "SELECT SLEEP(0)")

    task = asyncio.create_task(stuck())
    async with asyncio.timeout(10):
        await started.wait()
        await pool.close(timeout=0.5)
        assert pool.closed
        task.cancel()
        with pytest.raises((asyncio.CancelledError, aiomysql.Error, PoolUsageError)):
            await task


# -- misuse ---------------------------------------------------------------------------------------


async def test_double_release_and_release_to_another_pool_raise_clear_errors(
    mysql_dsn: str, make_pool: PoolFactory
) -> None:
    """Releasing twice, or to the wrong pool, raises PoolUsageError saying what happened."""
    first = make_pool(mysql_dsn, min_size=0, name="first")
    second = make_pool(mysql_dsn, min_size=0, name="second")
    conn = await first.acquire()
    await first.release(conn)
    with pytest.raises(PoolUsageError, match="released twice"):
        await first.release(conn)
    conn = await first.acquire()
    with pytest.raises(PoolUsageError, match="release it to the pool it came from"):
        await second.release(conn)
    await first.release(conn)


def test_misuse_errors_survive_python_optimize_mode(mysql_dsn: str) -> None:
    """Under ``python -O`` (asserts stripped) misuse still raises PoolUsageError."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from poolkit.mysql import PoolUsageError, create_pool

        assert False, "asserts must be off under -O"

        async def main():
            one = create_pool({mysql_dsn!r}, min_size=0, environ={{}}, name="one")
            two = create_pool({mysql_dsn!r}, min_size=0, environ={{}}, name="two")
            async with one, two:
                conn = await one.acquire()
                await one.release(conn)
                try:
                    await one.release(conn)
                except PoolUsageError as exc:
                    print("double:", exc)
                conn = await one.acquire()
                try:
                    await two.release(conn)
                except PoolUsageError as exc:
                    print("foreign:", exc)
                await one.release(conn)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-O", "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "double: " in done.stdout and "released twice" in done.stdout
    assert "foreign: " in done.stdout and "pool it came from" in done.stdout


# -- secrets --------------------------------------------------------------------------------------


async def test_canary_password_appears_nowhere(
    temp_mariadb_factory: TempMariaDBFactory,
    make_pool: PoolFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The password is absent from reprs, errors, log records, events and stats."""
    server = temp_mariadb_factory(password=CANARY)
    seen: list[str] = []

    def on_event(event: Any) -> None:
        seen.append(event.describe())
        seen.append(repr(event))

    caplog.set_level(logging.DEBUG)
    async with asyncio.timeout(20):
        good = make_pool(server.password_dsn, min_size=1, max_size=2, on_event=on_event)
        async with good, good.acquire() as conn:
            assert await fetch(conn, "SELECT 1") == (1,)
            seen.append(repr(conn.__dict__.get("_host")))
        bad_dsn = server.make_dsn(user=server.password_user, password=CANARY + "-wrong")
        bad = make_pool(bad_dsn, min_size=0, on_event=on_event)
        with pytest.raises(AuthenticationError) as info:
            await bad.acquire(timeout=5)
        for pool in (good, bad):
            seen += [repr(pool), str(pool), pool.target, repr(pool.connector)]
            seen.append(repr(pool.stats()))
            seen.append(repr(pool.stats().as_dict()))
    error: BaseException | None = info.value
    while error is not None:
        seen += [str(error), repr(error)]
        error = error.__cause__ or error.__context__
    seen += [r.getMessage() for r in caplog.records]
    seen += [repr(r.args) for r in caplog.records]
    leaks = [text for text in seen if CANARY in text]
    assert leaks == []
    assert any("Access denied" in text for text in seen)
