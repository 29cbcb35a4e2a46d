"""poolkit.mysql resets: nothing a borrower leaves on a connection reaches the next borrower.

Pools here have ``max_size=1``, so two borrows in a row get the *same* physical connection (the
tests check the server thread id); whatever the first borrower leaves behind must be gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomysql
import pytest

from poolkit.mysql import MySQLConnector, MySQLPool, ResetPolicy, create_pool

pytestmark = pytest.mark.mysql

PoolFactory = Callable[..., MySQLPool]


@pytest.fixture
async def make_pool(mysql_dsn: str) -> AsyncIterator[PoolFactory]:
    """Build one-connection pools on the shared server; close them after the test."""
    pools: list[MySQLPool] = []

    def make(reset: ResetPolicy = "clean", **kwargs: Any) -> MySQLPool:
        kwargs.setdefault("environ", {})
        kwargs.setdefault("min_size", 1)
        kwargs.setdefault("max_size", 1)
        kwargs.setdefault("check_on_acquire", "never")
        pool = create_pool(mysql_dsn, reset=reset, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


async def fetch(conn: Any, sql: str) -> tuple[Any, ...] | None:
    """Run ``sql`` and return its first row (None for statements without rows)."""
    async with conn.cursor() as cur:
        await cur.execute(sql)
        row = await cur.fetchone()
    return None if row is None else tuple(row)


async def borrow_twice(
    pool: MySQLPool, dirty: list[str], probe: str
) -> tuple[tuple[Any, ...] | None, bool]:
    """Run ``dirty`` statements in one borrow, then ``probe`` in the next.

    Returns:
        The probe's first row, and whether both borrows used the same server session.
    """
    async with pool.acquire() as conn:
        first = conn.thread_id()
        for sql in dirty:
            await fetch(conn, sql)
    async with pool.acquire() as conn:
        row = await fetch(conn, probe)
        same = conn.thread_id() == first
    return row, same


# -- "clean" --------------------------------------------------------------------------------------

ISOLATION_CASES = {
    "user variable": (["SET @secret = 'alice'"], "SELECT @secret", (None,)),
    "session variable": (
        ["SET SESSION sql_mode = 'ANSI', SESSION max_join_size = 1000"],
        ("SELECT @@sql_mode = @@global.sql_mode, @@max_join_size = @@global.max_join_size"),
        (1, 1),
    ),
    "isolation level": (
        ["SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"],
        "SELECT @@tx_isolation = @@global.tx_isolation",
        (1,),
    ),
    "named lock": (
        ["SELECT GET_LOCK('poolkit_reset_test_lock', 0)"],
        "SELECT IS_USED_LOCK('poolkit_reset_test_lock')",
        (None,),
    ),
    "prepared statement": (
        ["PREPARE leftover_stmt FROM 'SELECT 1'"],
        (
            "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS "
            "WHERE VARIABLE_NAME = 'PREPARED_STMT_COUNT'"
        ),
        ("0",),
    ),
    "open transaction": (
        ["START TRANSACTION", "SELECT 1"],
        "SELECT @@in_transaction",
        (0,),
    ),
    "autocommit switched off": (["SET autocommit = 0"], "SELECT @@autocommit", (1,)),
    "time zone": (["SET time_zone = '+11:00'"], "SELECT @@time_zone", ("+00:00",)),
    "character set": (["SET NAMES latin1"], "SELECT @@character_set_client", ("utf8mb4",)),
    "default database": (["USE information_schema"], "SELECT DATABASE()", ("test",)),
}


@pytest.mark.parametrize("case", sorted(ISOLATION_CASES))
async def test_clean_reset_leaves_nothing_for_the_next_borrower(
    make_pool: PoolFactory, case: str
) -> None:
    """Under "clean", state left by one borrower is gone for the next, on the same session."""
    dirty, probe, expected = ISOLATION_CASES[case]
    pool = make_pool(time_zone="+00:00")
    row, same = await borrow_twice(pool, dirty, probe)
    assert same, "max_size=1: both borrows must share one server session"
    assert row == expected


async def test_clean_reset_drops_temporary_tables(make_pool: PoolFactory) -> None:
    """A temporary table created by one borrower does not exist for the next."""
    pool = make_pool()
    async with pool.acquire() as conn:
        first = conn.thread_id()
        await fetch(conn, "CREATE TEMPORARY TABLE leftover (a INT)")
        await fetch(conn, "INSERT INTO leftover VALUES (1)")
    async with pool.acquire() as conn:
        assert conn.thread_id() == first
        with pytest.raises(aiomysql.ProgrammingError) as info:
            await fetch(conn, "SELECT a FROM leftover")
        assert info.value.args[0] == 1146  # ER_NO_SUCH_TABLE


async def test_clean_reset_rolls_back_uncommitted_writes(make_pool: PoolFactory) -> None:
    """Rows written in a transaction the borrower never committed are rolled back."""
    setup = make_pool(min_size=0)
    async with setup.acquire() as conn:
        await fetch(conn, "CREATE TABLE IF NOT EXISTS poolkit_mysql_reset (v INT)")
        await fetch(conn, "DELETE FROM poolkit_mysql_reset")
    pool = make_pool()
    try:
        row, same = await borrow_twice(
            pool,
            ["BEGIN", "INSERT INTO poolkit_mysql_reset VALUES (1)"],
            "SELECT COUNT(*) FROM poolkit_mysql_reset",
        )
        assert same
        assert row == (0,)
    finally:
        async with setup.acquire() as conn:
            await fetch(conn, "DROP TABLE IF EXISTS poolkit_mysql_reset")


async def test_clean_reset_releases_table_locks(make_pool: PoolFactory) -> None:
    """LOCK TABLES held by one borrower are released before the next borrower."""
    pool = make_pool()
    async with pool.acquire() as conn:
        await fetch(conn, "CREATE TABLE IF NOT EXISTS poolkit_mysql_lock_a (x INT)")
        await fetch(conn, "CREATE TABLE IF NOT EXISTS poolkit_mysql_lock_b (x INT)")
    try:
        row, same = await borrow_twice(
            pool,
            ["LOCK TABLES poolkit_mysql_lock_a WRITE"],
            "SELECT COUNT(*) FROM poolkit_mysql_lock_b",  # fails while LOCK TABLES holds
        )
        assert same
        assert row == (0,)
    finally:
        async with pool.acquire() as conn:
            await fetch(conn, "DROP TABLE IF EXISTS poolkit_mysql_lock_a, poolkit_mysql_lock_b")


async def test_clean_reset_reapplies_the_pool_session_settings(make_pool: PoolFactory) -> None:
    """After COM_RESET_CONNECTION the pool's own settings and init commands are back."""
    pool = make_pool(
        autocommit=False,
        collation="utf8mb4_bin",
        time_zone="-05:00",
        sql_mode="ANSI_QUOTES",
        init_command="SET @from_init = 'yes'",
    )
    row, same = await borrow_twice(
        pool,
        [
            "SET autocommit = 1, collation_connection = 'utf8mb4_general_ci'",
            "SET time_zone = '+00:00', sql_mode = '', @from_init = 'no'",
        ],
        "SELECT @@autocommit, @@collation_connection, @@time_zone, @@sql_mode, @from_init",
    )
    assert same
    assert row == (0, "utf8mb4_bin", "-05:00", "ANSI_QUOTES", "yes")
    async with pool.acquire() as conn:
        assert conn.get_autocommit() is False


async def test_clean_reset_restores_the_driver_side_session_view(make_pool: PoolFactory) -> None:
    """conn.autocommit() and conn.set_charset() by a borrower are undone on both sides."""
    pool = make_pool()
    async with pool.acquire() as conn:
        first = conn.thread_id()
        await conn.autocommit(False)
        await conn.set_charset("latin1")
    async with pool.acquire() as conn:
        assert conn.thread_id() == first
        assert (conn.autocommit_mode, conn.charset, conn.encoding) == (True, "utf8mb4", "utf8")
        assert await fetch(conn, "SELECT @@autocommit, @@character_set_client, 'h\u00e9'") == (
            1,
            "utf8mb4",
            "h\u00e9",
        )


async def test_unread_multi_statement_results_are_drained_not_discarded(
    make_pool: PoolFactory,
) -> None:
    """A borrower that reads only the first result of a multi-statement keeps it reusable."""
    pool = make_pool()
    async with pool.acquire() as conn:
        first = conn.thread_id()
        async with conn.cursor() as cur:
            await cur.execute("SELECT 1; SELECT 2; SELECT 3")
    async with pool.acquire() as conn:
        assert conn.thread_id() == first
        assert await fetch(conn, "SELECT 4") == (4,)
    assert pool.stats().reset_failures == 0


async def test_half_read_unbuffered_result_discards_the_connection(make_pool: PoolFactory) -> None:
    """A half-read server-side cursor is not drained: the connection is replaced, quietly."""
    pool = make_pool()
    async with pool.acquire() as conn:
        first = conn.thread_id()
        cur = await conn.cursor(aiomysql.SSCursor)
        await cur.execute("SELECT seq FROM seq_1_to_100000")
        assert await cur.fetchone() == (1,)
    async with pool.acquire() as conn:
        assert conn.thread_id() != first
        assert await fetch(conn, "SELECT 5") == (5,)
    stats = pool.stats()
    assert stats.reset_failures == 1
    assert stats.closed.get("reset_failed") == 1


async def test_server_without_com_reset_connection_gets_connections_closed(
    make_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Where COM_RESET_CONNECTION is unknown (error 1047) connections are closed, not reused.

    An old server is simulated by sending an unassigned command byte in its place: MariaDB
    answers exactly as a pre-10.2.4 server answers COM_RESET_CONNECTION.
    """
    pool = make_pool()
    connector = pool.connector
    assert isinstance(connector, MySQLConnector)
    payload = bytearray(connector._reset_payload)
    payload[4] = 0x3F  # not a command any server knows
    connector._reset_payload = bytes(payload)
    seen: list[int] = []
    with caplog.at_level(logging.WARNING, logger="poolkit.mysql"):
        for _ in range(3):
            async with pool.acquire() as conn:
                seen.append(conn.thread_id())
                await fetch(conn, "SET @dirty = 1")
            async with pool.acquire() as conn:
                assert await fetch(conn, "SELECT @dirty") == (None,)
    assert len(set(seen)) == 3
    assert pool.stats().closed.get("reset_failed", 0) >= 3
    warnings = [r for r in caplog.records if "COM_RESET_CONNECTION" in r.getMessage()]
    assert len(warnings) == 1


# -- "rollback" and custom ------------------------------------------------------------------------


async def test_rollback_policy_skips_the_reset_outside_a_transaction(
    make_pool: PoolFactory,
) -> None:
    """Under "rollback" with autocommit on, a release outside a transaction does no I/O.

    Session state is therefore kept (that is the policy's documented trade-off).
    """
    pool = make_pool("rollback")
    connector = pool.connector
    assert isinstance(connector, MySQLConnector)
    async with pool.acquire() as conn:
        await fetch(conn, "SET @kept = 7")
        assert connector.needs_reset(conn) is False
    row, same = await borrow_twice(pool, [], "SELECT @kept")
    assert same
    assert row == (7,)


async def test_rollback_policy_rolls_back_an_open_transaction(make_pool: PoolFactory) -> None:
    """Under "rollback" an open transaction is rolled back and autocommit restored."""
    pool = make_pool("rollback")
    connector = pool.connector
    assert isinstance(connector, MySQLConnector)
    async with pool.acquire() as conn:
        await conn.begin()
        assert connector.needs_reset(conn) is True
    async with pool.acquire() as conn:
        assert await fetch(conn, "SELECT @@in_transaction, @@autocommit") == (0, 1)
        await fetch(conn, "SET autocommit = 0")
        assert connector.needs_reset(conn) is True
    async with pool.acquire() as conn:
        assert await fetch(conn, "SELECT @@autocommit") == (1,)


async def test_rollback_policy_with_autocommit_off_always_resets(make_pool: PoolFactory) -> None:
    """With autocommit off any statement may open a transaction: every release rolls back."""
    pool = make_pool("rollback", autocommit=False)
    connector = pool.connector
    assert isinstance(connector, MySQLConnector)
    async with pool.acquire() as conn:
        await fetch(conn, "SELECT 1")
        assert connector.needs_reset(conn) is True
    async with pool.acquire() as conn:
        assert await fetch(conn, "SELECT @@in_transaction") == (0,)


async def test_custom_reset_runs_on_release_and_its_failure_discards(
    make_pool: PoolFactory,
) -> None:
    """A custom async reset runs at each release; when it raises, the connection is closed."""
    calls: list[int] = []
    fail = False

    async def reset(conn: Any) -> None:
        nonlocal fail
        calls.append(conn.thread_id())
        await fetch(conn, "SET @custom = NULL")
        if fail:
            fail = False  # refuse once
            raise RuntimeError("custom reset refuses")

    pool = make_pool(reset)
    row, same = await borrow_twice(pool, ["SET @custom = 1"], "SELECT @custom")
    assert same and row == (None,)
    assert len(calls) >= 1
    async with pool.acquire() as conn:
        first = conn.thread_id()
        fail = True  # the reset of *this* release fails
    async with pool.acquire() as conn:
        assert conn.thread_id() != first
    assert pool.stats().reset_failures == 1


# -- pool.transaction() ---------------------------------------------------------------------------


async def test_transaction_commits_when_the_block_ends(make_pool: PoolFactory) -> None:
    """pool.transaction() commits on normal exit."""
    pool = make_pool(max_size=2)
    async with pool.acquire() as conn:
        await fetch(conn, "CREATE TABLE IF NOT EXISTS poolkit_mysql_tx (v INT)")
        await fetch(conn, "DELETE FROM poolkit_mysql_tx")
    try:
        async with pool.transaction() as conn:
            assert await fetch(conn, "SELECT @@in_transaction") == (1,)
            await fetch(conn, "INSERT INTO poolkit_mysql_tx VALUES (1)")
        async with pool.acquire() as conn:
            assert await fetch(conn, "SELECT COUNT(*) FROM poolkit_mysql_tx") == (1,)

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            async with pool.transaction() as conn:
                await fetch(conn, "INSERT INTO poolkit_mysql_tx VALUES (2)")
                raise Boom
        async with pool.acquire() as conn:
            assert await fetch(conn, "SELECT COUNT(*) FROM poolkit_mysql_tx") == (1,)
    finally:
        async with pool.acquire() as conn:
            await fetch(conn, "DROP TABLE IF EXISTS poolkit_mysql_tx")


async def test_cancelled_transaction_is_rolled_back_by_the_reset(make_pool: PoolFactory) -> None:
    """A transaction block cancelled while idle releases its connection; nothing is committed."""
    for reset in ("clean", "rollback"):
        pool = make_pool(reset)
        started = asyncio.Event()

        async def body(p: MySQLPool = pool, ev: asyncio.Event = started) -> None:
            async with p.transaction() as conn:
                await fetch(conn, "SET @in_tx = 1")
                ev.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(body())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.acquire() as conn:
            assert await fetch(conn, "SELECT @@in_transaction") == (0,)
        assert pool.stats().in_use == 0


async def test_transaction_timeout_bounds_the_acquire(make_pool: PoolFactory) -> None:
    """pool.transaction(timeout=...) bounds the wait for a connection."""
    from poolkit.mysql import PoolTimeout

    pool = make_pool()
    async with pool.acquire():
        with pytest.raises(PoolTimeout):
            async with pool.transaction(timeout=0.05):
                pass
