"""poolkit.postgres reset policies: what "clean" clears, what "rollback" skips, custom resets.

With ``max_size=1`` the second borrower always gets the first borrower's physical connection
(asserted through ``pg_backend_pid()``), so each test shows directly what crosses a release.
All against the shared local PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from poolkit.backends import postgres as backend
from poolkit.postgres import PostgresConnector, PostgresPool, create_pool

pytestmark = pytest.mark.postgres

PoolFactory = Callable[..., PostgresPool]


@pytest.fixture
async def make_pool(pg_dsn: str) -> AsyncIterator[PoolFactory]:
    """Single-connection pools on the shared server; closed after the test."""
    pools: list[PostgresPool] = []

    def make(**kwargs: Any) -> PostgresPool:
        options: dict[str, Any] = {
            "environ": {},
            "min_size": 1,
            "max_size": 1,
            "health_check_interval": None,
            "check_on_acquire": "never",
            "pgbouncer": False,
        }
        options.update(kwargs)
        pool = create_pool(pg_dsn, **options)
        pools.append(pool)
        return pool

    yield make
    async with asyncio.timeout(15):
        for pool in pools:
            await pool.close(timeout=5)


@pytest.fixture
async def role(pg_dsn: str) -> AsyncIterator[str]:
    """A throwaway NOLOGIN role on the shared server (granted to the test user)."""
    name = f"poolkit_role_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f"CREATE ROLE {name} NOLOGIN")
        yield name
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()


def connector_of(pool: PostgresPool) -> PostgresConnector:
    """The pool's connector, typed."""
    connector = pool.connector
    assert isinstance(connector, PostgresConnector)
    return connector


async def two_borrowers(
    pool: PostgresPool,
    first: Callable[[asyncpg.Connection], Awaitable[None]],
    second: Callable[[asyncpg.Connection], Awaitable[None]],
) -> None:
    """Run ``first`` and then ``second`` on the same physical connection, released between."""
    async with pool:
        async with pool.acquire(timeout=10) as conn:
            pid = conn.get_server_pid()
            await first(conn)
        async with pool.acquire(timeout=10) as conn:
            assert conn.get_server_pid() == pid, "not the same physical connection"
            await second(conn)
        assert pool.stats().reset_failures == 0


@dataclass(frozen=True)
class Leak:
    """One kind of session state: how a borrower leaves it, and the probe that must be clean."""

    name: str
    dirty: str
    probe: str


SERVER_STATE = [
    Leak("setting", "SET work_mem = '3MB'", "SELECT current_setting('work_mem') <> '3MB'"),
    Leak(
        "set_config",
        "SELECT set_config('search_path', 'pg_temp', false)",
        "SELECT current_setting('search_path') = '\"$user\", public'",
    ),
    Leak(
        "temp table",
        "CREATE TEMP TABLE leak_t (x int); INSERT INTO leak_t VALUES (1)",
        "SELECT to_regclass('pg_temp.leak_t') IS NULL",
    ),
    Leak(
        "open transaction",
        "BEGIN; SET LOCAL work_mem = '3MB'; CREATE TEMP TABLE leak_tx (x int)",
        "SELECT to_regclass('pg_temp.leak_tx') IS NULL AND current_setting('work_mem') <> '3MB'",
    ),
    Leak(
        "advisory lock",
        "SELECT pg_advisory_lock(918273)",
        "SELECT NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
        "AND pid = pg_backend_pid())",
    ),
    Leak("listen", "LISTEN leak_channel", "SELECT NOT EXISTS (SELECT pg_listening_channels())"),
    Leak(
        "prepared statement",
        'PREPARE leak_stmt AS SELECT 1; PREPARE "Mixed Case" AS SELECT 2',
        "SELECT NOT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE from_sql)",
    ),
    Leak(
        "cursor with hold",
        "DECLARE leak_cur CURSOR WITH HOLD FOR SELECT 1",
        "SELECT NOT EXISTS (SELECT 1 FROM pg_cursors WHERE name = 'leak_cur')",
    ),
    Leak(
        "sequence state",
        "CREATE TEMP SEQUENCE leak_seq; SELECT nextval('leak_seq')",
        "SELECT to_regclass('pg_temp.leak_seq') IS NULL",
    ),
]


@pytest.mark.parametrize("leak", SERVER_STATE, ids=lambda leak: leak.name)
async def test_clean_reset_clears_each_kind_of_server_session_state(
    make_pool: PoolFactory, leak: Leak
) -> None:
    """Under "clean", the next borrower finds none of the previous borrower's session state."""

    async def first(conn: asyncpg.Connection) -> None:
        await conn.execute(leak.dirty)
        assert not await conn.fetchval(leak.probe), "the dirtying statement changed nothing"

    async def second(conn: asyncpg.Connection) -> None:
        assert await conn.fetchval(leak.probe)
        assert not conn.is_in_transaction()

    await two_borrowers(make_pool(), first, second)


async def test_clean_reset_restores_role_and_authorization(
    make_pool: PoolFactory, role: str
) -> None:
    """SET ROLE and SET SESSION AUTHORIZATION by a borrower do not reach the next one."""

    async def first(conn: asyncpg.Connection) -> None:
        await conn.execute(f"SET ROLE {role}")
        assert await conn.fetchval("SELECT current_user") == role
        await conn.execute("RESET ROLE")
        await conn.execute(f"SET SESSION AUTHORIZATION {role}")
        assert await conn.fetchval("SELECT session_user") == role

    async def second(conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow("SELECT current_user AS cu, session_user AS su")
        assert row is not None
        assert (row["cu"], row["su"]) == ("postgres", "postgres")

    await two_borrowers(make_pool(), first, second)


async def test_clean_reset_after_a_failed_transaction(make_pool: PoolFactory) -> None:
    """A transaction aborted by an error is rolled back in the same reset round trip."""

    async def first(conn: asyncpg.Connection) -> None:
        await conn.execute("BEGIN")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await conn.execute("SELECT 1/0")
        assert conn.is_in_transaction()

    async def second(conn: asyncpg.Connection) -> None:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT 2") == 2

    await two_borrowers(make_pool(), first, second)


async def test_clean_reset_drops_client_side_callbacks_and_transaction_objects(
    make_pool: PoolFactory,
) -> None:
    """A borrower's asyncpg callbacks and started Transaction are gone for the next one."""
    second_borrower = False

    def callback(*args: Any) -> None:
        if second_borrower:
            raise AssertionError("a previous borrower's callback ran")

    async def first(conn: asyncpg.Connection) -> None:
        await conn.add_listener("leak_chan", callback)
        conn.add_log_listener(callback)
        conn.add_termination_listener(callback)
        conn.add_query_logger(callback)
        await conn.transaction().start()

    async def second(conn: asyncpg.Connection) -> None:
        nonlocal second_borrower
        second_borrower = True
        assert conn._listeners == {}  # type: ignore[attr-defined]
        assert not conn._log_listeners  # type: ignore[attr-defined]
        assert not conn._termination_listeners  # type: ignore[attr-defined]
        assert not conn._query_loggers  # type: ignore[attr-defined]
        await conn.execute("DO $$BEGIN RAISE NOTICE 'no one listens'; END$$")
        await conn.execute("NOTIFY leak_chan, 'hello'")
        async with conn.transaction():  # not a savepoint of the abandoned transaction
            assert await conn.fetchval("SELECT 3") == 3

    await two_borrowers(make_pool(), first, second)


async def test_clean_reset_keeps_asyncpg_statement_cache(make_pool: PoolFactory) -> None:
    """asyncpg's cached statements survive the reset and are reused, not prepared again."""

    async def cached(conn: asyncpg.Connection) -> set[str]:
        rows = await conn.fetch("SELECT name FROM pg_prepared_statements WHERE NOT from_sql")
        return {str(r["name"]) for r in rows}

    before: set[str] = set()

    async def first(conn: asyncpg.Connection) -> None:
        assert await conn.fetchval("SELECT $1::int * 2", 21) == 42
        await conn.execute("PREPARE user_stmt AS SELECT 1")
        before.update(await cached(conn))

    async def second(conn: asyncpg.Connection) -> None:
        assert before <= await cached(conn)
        count = len(conn._stmt_cache)  # type: ignore[attr-defined]
        assert await conn.fetchval("SELECT $1::int * 2", 5) == 10
        assert len(conn._stmt_cache) == count  # type: ignore[attr-defined]

    await two_borrowers(make_pool(), first, second)


def queries_sent(conn: asyncpg.Connection) -> int:
    """How many queries asyncpg's protocol has sent on ``conn`` (a private counter)."""
    return int(conn._protocol.queries_count)  # type: ignore[attr-defined]


async def test_clean_reset_is_one_round_trip(pg_dsn: str) -> None:
    """Rollback included, the reset is one query; a user PREPARE costs one more, once."""
    connector = PostgresConnector(pg_dsn, pgbouncer=False)
    conn = await connector.connect()
    try:
        await conn.execute("BEGIN; SET LOCAL work_mem = '3MB'; LISTEN a; SET work_mem = '2MB'")
        sent = queries_sent(conn)
        await connector.reset(conn)
        assert queries_sent(conn) - sent == 1
        await conn.execute("PREPARE p AS SELECT 1")
        sent = queries_sent(conn)
        await connector.reset(conn)
        assert queries_sent(conn) - sent == 2
        assert not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE from_sql)"
        )
    finally:
        await connector.close(conn)


async def test_clean_reset_returns_to_what_on_connect_set_up(
    make_pool: PoolFactory, role: str
) -> None:
    """What on_connect set up (settings, role, LISTEN, callbacks) survives every reset."""
    received: list[str] = []

    def on_notify(conn: object, pid: int, channel: str, payload: object) -> None:
        received.append(str(payload))

    async def setup(conn: asyncpg.Connection) -> None:
        await conn.execute(f"SET search_path = app, public; SET work_mem = '6MB'; SET ROLE {role}")
        await conn.add_listener("setup_chan", on_notify)

    async def first(conn: asyncpg.Connection) -> None:
        await conn.execute("RESET ROLE; SET search_path = x; RESET work_mem; UNLISTEN *")
        await conn.remove_listener("setup_chan", on_notify)
        await conn.add_listener("other_chan", on_notify)

    async def second(conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow(
            "SELECT current_setting('search_path') AS sp, current_setting('work_mem') AS wm, "
            "current_user AS cu, array(SELECT pg_listening_channels()) AS ch"
        )
        assert row is not None
        assert (row["sp"], row["wm"], row["cu"]) == ("app, public", "6MB", role)
        assert row["ch"] == ["setup_chan"]
        assert list(conn._listeners) == ["setup_chan"]  # type: ignore[attr-defined]
        await conn.execute("NOTIFY setup_chan, 'still here'")
        async with asyncio.timeout(5):
            while not received:
                await asyncio.sleep(0.01)
        assert received == ["still here"]

    await two_borrowers(make_pool(on_connect=setup), first, second)


async def test_server_settings_survive_the_clean_reset(make_pool: PoolFactory) -> None:
    """Settings sent at connect (server_settings) are the defaults RESET ALL returns to."""

    async def first(conn: asyncpg.Connection) -> None:
        await conn.execute("SET application_name = 'changed'")

    async def second(conn: asyncpg.Connection) -> None:
        assert await conn.fetchval("SELECT current_setting('application_name')") == "kept"

    pool = make_pool(server_settings={"application_name": "kept"})
    await two_borrowers(pool, first, second)


async def test_a_non_standard_server_gets_asyncpgs_reset_query(
    make_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-PostgreSQL server (CockroachDB...) gets asyncpg's reset query and a rollback."""
    monkeypatch.setattr(backend, "_is_standard_server", lambda conn: False)

    async def first(conn: asyncpg.Connection) -> None:
        await conn.execute("BEGIN; SET work_mem = '3MB'")

    async def second(conn: asyncpg.Connection) -> None:
        assert await conn.fetchval("SELECT current_setting('work_mem') <> '3MB'")

    await two_borrowers(make_pool(), first, second)


# -- "rollback" and custom policies ---------------------------------------------------------------


class CountingConnector(PostgresConnector):
    """Counts reset() calls."""

    resets = 0

    async def reset(self, conn: asyncpg.Connection) -> None:
        """Count, then reset as usual."""
        self.resets += 1
        await super().reset(conn)


async def test_rollback_policy_skips_the_reset_outside_a_transaction(pg_dsn: str) -> None:
    """Under "rollback", a release after plain queries runs no reset task at all."""
    connector = CountingConnector(pg_dsn, reset="rollback", pgbouncer=False)
    pool = PostgresPool(connector, min_size=1, max_size=1, health_check_interval=None)
    async with pool:
        for _ in range(5):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT $1::int", 1)
                await conn.execute("SET work_mem = '3MB'")  # session state is kept: by design
        assert connector.resets == 0
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_setting('work_mem')") == "3MB"


async def test_rollback_policy_rolls_back_an_open_or_failed_transaction(
    make_pool: PoolFactory,
) -> None:
    """Under "rollback", an open (or failed) transaction is rolled back before reuse."""

    async def first(conn: asyncpg.Connection) -> None:
        await conn.execute("BEGIN; CREATE TEMP TABLE rb (x int)")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await conn.execute("SELECT 1/0")

    async def second(conn: asyncpg.Connection) -> None:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT to_regclass('pg_temp.rb') IS NULL")

    await two_borrowers(make_pool(reset="rollback"), first, second)


async def test_rollback_policy_still_drops_client_side_callbacks(
    make_pool: PoolFactory,
) -> None:
    """Under "rollback", a borrower's callbacks never fire for the next borrower."""

    def callback(*args: Any) -> None:
        raise AssertionError("a previous borrower's callback ran")

    pool = make_pool(reset="rollback")

    async def first(conn: asyncpg.Connection) -> None:
        conn.add_log_listener(callback)
        await conn.add_listener("rb_chan", callback)
        assert connector_of(pool).needs_reset(conn)

    async def second(conn: asyncpg.Connection) -> None:
        assert not connector_of(pool).needs_reset(conn)
        await conn.execute("DO $$BEGIN RAISE NOTICE 'no one listens'; END$$")
        await conn.execute("NOTIFY rb_chan, 'x'")
        await asyncio.sleep(0.05)

    await two_borrowers(pool, first, second)


async def test_custom_reset_runs_after_the_rollback(make_pool: PoolFactory) -> None:
    """A custom reset coroutine gets the connection outside any transaction."""
    calls: list[bool] = []

    async def custom(conn: asyncpg.Connection) -> None:
        calls.append(conn.is_in_transaction())
        await conn.execute("RESET work_mem")

    async def first(conn: asyncpg.Connection) -> None:
        await conn.execute("SET work_mem = '3MB'; BEGIN")

    async def second(conn: asyncpg.Connection) -> None:
        assert await conn.fetchval("SELECT current_setting('work_mem') <> '3MB'")

    await two_borrowers(make_pool(reset=custom), first, second)
    assert calls == [False, False]  # a custom reset runs at every release


async def test_a_failing_custom_reset_discards_the_connection(make_pool: PoolFactory) -> None:
    """When the custom reset raises, the connection is closed and replaced."""

    async def custom(conn: asyncpg.Connection) -> None:
        raise RuntimeError("cannot reset")

    pool = make_pool(reset=custom)
    async with pool:
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()
        async with pool.acquire(timeout=10) as conn:
            assert conn.get_server_pid() != pid
        stats = pool.stats()
        assert stats.reset_failures == 1
        assert stats.closed.get("reset_failed") == 1


def test_asyncpg_still_has_the_private_state_the_reset_clears() -> None:
    """The asyncpg.Connection slots the reset clears still exist (fail loudly on upgrade)."""
    slots = set(asyncpg.Connection.__slots__)
    needed = {
        "_listeners",
        "_log_listeners",
        "_termination_listeners",
        "_query_loggers",
        "_top_xact",
        "_transport",
    }
    assert needed <= slots
