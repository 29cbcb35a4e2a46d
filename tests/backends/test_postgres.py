"""poolkit.postgres: options, DSN and environment, connect errors, TLS, close and abort,
transactions and PgBouncer.

Everything that talks to a server uses a real one: the shared local PostgreSQL, or a throwaway
server (``temp_postgres_factory``) when a test needs a password, TLS or a pgbouncer.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from fix_proxy import DeafListener, Endpoint
from fix_servers import FdTracker
from fix_tempserver import PgBouncerFactory, TempPostgresFactory
from fix_tls import TLSFiles
from poolkit.postgres import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    ConnectionBroken,
    PoolConfig,
    PoolTimeout,
    PostgresConnector,
    PostgresPool,
    TLSError,
    create_pool,
    redact_dsn,
)

CANARY = "canary-pw-4b1d9e"

PoolFactory = Callable[..., PostgresPool]


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    """Build pools (``environ={}``: no environment leaks in); close them (bounded) after."""
    pools: list[PostgresPool] = []

    def make(dsn: str | None = None, **kwargs: Any) -> PostgresPool:
        kwargs.setdefault("environ", {})
        kwargs.setdefault("health_check_interval", None)
        pool = create_pool(dsn, **kwargs)
        pools.append(pool)
        return pool

    yield make
    async with asyncio.timeout(15):
        for pool in pools:
            await pool.close(timeout=5)


# -- DSN, options, environment ----------------------------------------------------------------


def test_redact_dsn_removes_the_password_from_user_info_and_query() -> None:
    """Passwords in the user info and in ``?password=`` are gone; sslmode is kept."""
    assert redact_dsn("postgresql://app:s3cr%40t@db:5433/shop") == "postgresql://app@db:5433/shop"
    redacted = redact_dsn("postgres://app@db/shop?password=hunter22&sslmode=require")
    assert redacted == "postgres://app@db/shop?sslmode=require"
    assert redact_dsn("postgresql://u:pw@h1:5432,h2:5433/db") == "postgresql://u@h1:5432,h2:5433/db"


@pytest.mark.parametrize(
    ("dsn", "kwargs", "expected"),
    [
        ("postgresql://app:pw@db.internal/shop", {}, "postgresql://app@db.internal:5432/shop"),
        ("postgresql://app:pw@db/shop", {"port": 6432}, "postgresql://app@db:6432/shop"),
        (
            "postgresql://app:pw@h1:5432,h2/shop",
            {},
            "postgresql://app@h1:5432,h2:5432/shop",
        ),
        (None, {"host": "::1", "user": "u", "database": "d"}, "postgresql://u@[::1]:5432/d"),
        (
            "postgresql://app@db/shop?sslmode=verify-full",
            {"user": "other"},
            "postgresql://other@db:5432/shop?sslmode=verify-full",
        ),
        (
            "postgresql:///shop?host=/var/run/postgresql",
            {"user": "app"},
            "postgresql://app@/var/run/postgresql/shop",
        ),
    ],
)
def test_connector_describes_its_target_without_the_password(
    dsn: str | None, kwargs: dict[str, Any], expected: str
) -> None:
    """describe() merges the DSN and keyword overrides like asyncpg, and shows no password."""
    connector = PostgresConnector(dsn, password="kw-" + CANARY, **kwargs)
    assert connector.describe() == expected
    assert CANARY not in repr(connector)
    assert "pw" not in connector.describe().split("@")[0]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"reset": "discard"}, "reset"),
        ({"pgbouncer": "yes"}, "pgbouncer"),
        ({"close_timeout": 0}, "close_timeout"),
        ({"connect_timeout": -1.0}, "connect_timeout"),
        ({"on_connect": 42}, "on_connect"),
        ({"server_settings": {"application_name": 3}}, "server_settings"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_connector_rejects_an_invalid_option_naming_it(options: dict[str, Any], field: str) -> None:
    """A bad connector option raises ConfigError naming the option."""
    with pytest.raises(ConfigError) as info:
        PostgresConnector("postgresql://u@h/db", **options)
    assert info.value.field == field


def test_create_pool_rejects_bad_dsns_and_unknown_keywords_without_the_password() -> None:
    """Bad keywords and non-PostgreSQL DSNs get a ConfigError naming them, never the value."""
    with pytest.raises(ConfigError, match="max_sise"):
        create_pool("postgresql://u@h/db", max_sise=3, environ={})
    with pytest.raises(ConfigError, match="passwd") as unknown:
        create_pool("postgresql://u@h/db", passwd=CANARY, environ={})
    assert CANARY not in str(unknown.value)
    with pytest.raises(ConfigError, match="loop"):
        create_pool("postgresql://u@h/db", loop=object(), environ={})
    with pytest.raises(ConfigError, match="connect_timeout"):
        create_pool("postgresql://u@h/db", timeout=3, environ={})
    with pytest.raises(ConfigError) as info:
        create_pool(f"mysql://u:{CANARY}@h/db", environ={})
    assert info.value.field == "dsn"
    assert CANARY not in str(info.value)


def test_create_pool_splits_pool_fields_from_driver_parameters() -> None:
    """PoolConfig fields configure the pool; asyncpg.connect parameters reach the driver."""
    pool = create_pool(
        "postgresql://u@h/db",
        environ={},
        max_size=7,
        acquire_timeout=2.5,
        command_timeout=9,
        statement_cache_size=17,
        server_settings={"application_name": "x"},
    )
    assert isinstance(pool, PostgresPool)
    assert (pool.config.max_size, pool.config.acquire_timeout) == (7, 2.5)
    connector = pool.connector
    assert isinstance(connector, PostgresConnector)
    assert connector._kwargs == {
        "command_timeout": 9,
        "statement_cache_size": 17,
        "server_settings": {"application_name": "x"},
    }


def test_create_pool_reads_the_dsn_and_pool_config_from_the_environment() -> None:
    """POSTGRES_DSN and POSTGRES_POOL_* configure a pool created without arguments."""
    pool = create_pool(
        environ={
            "POSTGRES_DSN": f"postgresql://app:{CANARY}@db.env:5555/envdb",
            "DATABASE_URL": "postgresql://ignored@elsewhere/x",
            "POSTGRES_POOL_MAX_SIZE": "13",
            "POSTGRES_POOL_CHECK_ON_ACQUIRE": "never",
        }
    )
    assert pool.target == "postgresql://app@db.env:5555/envdb"
    assert pool.config.max_size == 13
    assert pool.config.check_on_acquire == "never"
    assert CANARY not in repr(pool)


def test_dsn_precedence_is_argument_then_postgres_dsn_then_database_url() -> None:
    """An explicit dsn wins; DATABASE_URL (SQLAlchemy-style too) is the last resort."""
    env = {"DATABASE_URL": "postgresql+asyncpg://app@db.url/urldb"}
    assert create_pool(environ=env).target == "postgresql://app@db.url:5432/urldb"
    env["POSTGRES_DSN"] = "postgresql://app@db.pg/pgdb"
    assert create_pool(environ=env).target == "postgresql://app@db.pg:5432/pgdb"
    assert create_pool("postgres://me@arg/argdb", environ=env).target.endswith("@arg:5432/argdb")
    # A host keyword means "not the environment's DSN".
    target = create_pool(host="kw.host", user="u", database="d", environ=env).target
    assert target == "postgresql://u@kw.host:5432/d"


def test_a_foreign_database_url_is_rejected_naming_the_variable() -> None:
    """DATABASE_URL pointing at another database kind is an error, not a silent fallback."""
    with pytest.raises(ConfigError) as info:
        create_pool(environ={"DATABASE_URL": f"mysql://root:{CANARY}@h/db"})
    assert info.value.field == "DATABASE_URL"
    assert CANARY not in str(info.value)


def test_a_config_argument_ignores_the_environment_pool_variables() -> None:
    """With config=..., POSTGRES_POOL_* is not read; keyword fields still override."""
    pool = create_pool(
        "postgresql://u@h/db",
        config=PoolConfig(max_size=4),
        environ={"POSTGRES_POOL_MAX_SIZE": "99"},
        min_size=2,
    )
    assert (pool.config.max_size, pool.config.min_size) == (4, 2)


def test_a_bad_environment_value_names_the_variable() -> None:
    """POSTGRES_POOL_MAX_SIZE=lots is reported under its variable name."""
    with pytest.raises(ConfigError, match="POSTGRES_POOL_MAX_SIZE"):
        create_pool("postgresql://u@h/db", environ={"POSTGRES_POOL_MAX_SIZE": "lots"})


# -- connecting -----------------------------------------------------------------------------


async def test_pool_hands_out_asyncpg_connections_with_the_driver_options(
    pg_dsn: str, make_pool: PoolFactory
) -> None:
    """Connections are asyncpg's; server_settings and statement_cache_size are applied."""
    pool = make_pool(
        pg_dsn,
        min_size=1,
        max_size=2,
        pgbouncer=False,
        server_settings={"application_name": "poolkit-options", "work_mem": "5MB"},
        statement_cache_size=3,
    )
    async with pool, pool.acquire() as conn:
        assert isinstance(conn, asyncpg.Connection)
        row = await conn.fetchrow(
            "SELECT current_setting('application_name') AS app, current_setting('work_mem') AS wm"
        )
        assert row is not None
        assert (row["app"], row["wm"]) == ("poolkit-options", "5MB")
        assert conn._stmt_cache.get_max_size() == 3  # type: ignore[attr-defined]


async def test_direct_connections_are_detected_as_not_behind_a_pooler(
    pg_dsn: str, make_pool: PoolFactory
) -> None:
    """pgbouncer=None detects a direct connection: the statement cache stays on."""
    pool = make_pool(pg_dsn, min_size=1)
    connector = pool.connector
    assert isinstance(connector, PostgresConnector)
    assert "pgbouncer=auto" in repr(connector)
    async with pool, pool.acquire() as conn:
        assert connector.behind_pooler is False
        assert conn._stmt_cache.get_max_size() > 0  # type: ignore[attr-defined]


async def test_on_connect_runs_once_per_new_connection(pg_dsn: str, make_pool: PoolFactory) -> None:
    """on_connect sees each new connection once, before its first borrower (type codecs)."""
    seen: list[int] = []

    async def setup(conn: asyncpg.Connection) -> None:
        seen.append(conn.get_server_pid())
        await conn.set_type_codec(
            "json", schema="pg_catalog", encoder=str, decoder=lambda text: ("decoded", text)
        )

    pool = make_pool(pg_dsn, min_size=2, max_size=2, on_connect=setup)
    async with pool:
        for _ in range(3):
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT '1'::json") == ("decoded", "1")
    assert len(seen) == 2 == len(set(seen))


async def test_a_failing_on_connect_discards_the_connection(
    no_fd_leak: FdTracker, pg_dsn: str, make_pool: PoolFactory
) -> None:
    """When on_connect raises, open() fails with the cause chained and no socket stays open."""

    def broken(conn: asyncpg.Connection) -> None:
        raise RuntimeError("setup failed")

    pool = make_pool(pg_dsn, min_size=1, on_connect=broken)
    with pytest.raises(ConnectError) as info:
        await pool.open()
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_refused_port_raises_connect_error_naming_the_target(
    refused_port: Endpoint, make_pool: PoolFactory
) -> None:
    """Nothing listening: open() fails fast with ConnectError naming host and port."""
    pool = make_pool(f"postgresql://app:{CANARY}@127.0.0.1:{refused_port.port}/db")
    with pytest.raises(ConnectError) as info:
        await pool.open()
    message = str(info.value)
    assert f"127.0.0.1:{refused_port.port}" in message
    assert CANARY not in message
    assert not isinstance(info.value, AuthenticationError | TLSError)
    assert info.value.__cause__ is not None


async def test_connect_timeout_bounds_a_server_that_never_answers(
    no_fd_leak: FdTracker, deaf_listener: DeafListener, make_pool: PoolFactory
) -> None:
    """A listener that accepts but never speaks fails the connect at connect_timeout."""
    pool = make_pool(f"postgresql://app@127.0.0.1:{deaf_listener.port}/db", connect_timeout=0.3)
    async with asyncio.timeout(10):
        with pytest.raises(PoolTimeout) as info:
            await pool.open()
    assert info.value.phase in ("connect", "open")
    async with asyncio.timeout(10):
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.5)
    await pool.close()


async def test_a_cancelled_connect_leaves_no_socket_behind(
    no_fd_leak: FdTracker, deaf_listener: DeafListener
) -> None:
    """Cancelling connector.connect() mid-handshake closes its socket."""
    connector = PostgresConnector(f"postgresql://app@127.0.0.1:{deaf_listener.port}/db")
    task = asyncio.ensure_future(connector.connect())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_wrong_password_raises_authentication_error_without_waiting(
    temp_postgres_factory: TempPostgresFactory, make_pool: PoolFactory
) -> None:
    """Refused credentials fail open() and waiting acquires at once, not at their timeout."""
    server = temp_postgres_factory(password=CANARY)
    bad = server.make_dsn(password=CANARY + "-wrong")
    pool = make_pool(bad, min_size=1, acquire_timeout=30)
    async with asyncio.timeout(10):
        with pytest.raises(AuthenticationError) as info:
            await pool.open()
    assert isinstance(info.value.__cause__, asyncpg.InvalidPasswordError)
    assert "password authentication failed" in str(info.value)
    lazy = make_pool(bad, min_size=0, acquire_timeout=30)
    async with asyncio.timeout(10):  # far below acquire_timeout: failed fast
        with pytest.raises(AuthenticationError):
            await lazy.acquire()

    async def rotating_password() -> str:
        return CANARY

    # asyncpg also takes the password as a coroutine function (credentials that rotate).
    good = make_pool(server.make_dsn(password=""), min_size=1, password=rotating_password)
    async with good, good.acquire() as conn:
        assert await conn.fetchval("SELECT 1") == 1


async def test_unknown_role_raises_authentication_error(
    pg_dsn: str, make_pool: PoolFactory
) -> None:
    """A role the server does not know is an authentication failure too."""
    dsn = pg_dsn.replace("postgres@", "poolkit_no_such_role@", 1)
    pool = make_pool(dsn, min_size=1)
    with pytest.raises(AuthenticationError, match="poolkit_no_such_role"):
        await pool.open()


# -- TLS ----------------------------------------------------------------------------------------


async def test_tls_with_a_trusted_ca_is_encrypted(
    temp_postgres_factory: TempPostgresFactory,
    tls_cert_files: TLSFiles,
    tls_client_context: ssl.SSLContext,
    make_pool: PoolFactory,
) -> None:
    """ssl=<verifying context> gives an encrypted session (pg_stat_ssl says so)."""
    server = temp_postgres_factory(tls=tls_cert_files, tls_only=True)
    pool = make_pool(server.dsn, min_size=1, ssl=tls_client_context)
    async with pool, pool.acquire() as conn:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


async def test_tls_verify_full_from_the_dsn_passes_through(
    temp_postgres_factory: TempPostgresFactory,
    tls_cert_files: TLSFiles,
    make_pool: PoolFactory,
) -> None:
    """libpq-style ``sslmode=verify-full&sslrootcert=...`` in the DSN works as in asyncpg."""
    server = temp_postgres_factory(tls=tls_cert_files, tls_only=True)
    dsn = f"{server.dsn}?sslmode=verify-full&sslrootcert={tls_cert_files.ca}"
    pool = make_pool(dsn, min_size=1)
    assert pool.target.endswith("?sslmode=verify-full")
    async with pool, pool.acquire() as conn:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


async def test_tls_with_an_untrusted_certificate_raises_tls_error(
    temp_postgres_factory: TempPostgresFactory,
    tls_cert_files: TLSFiles,
    tls_untrusted_client_context: ssl.SSLContext,
    make_pool: PoolFactory,
) -> None:
    """A certificate that does not verify fails with TLSError (never a plain-text retry)."""
    server = temp_postgres_factory(tls=tls_cert_files)
    pool = make_pool(server.dsn, min_size=1, ssl=tls_untrusted_client_context)
    with pytest.raises(TLSError) as info:
        await pool.open()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


async def test_tls_required_from_a_server_without_tls_raises_tls_error(
    temp_postgres_factory: TempPostgresFactory,
    tls_client_context: ssl.SSLContext,
    make_pool: PoolFactory,
) -> None:
    """Asking for verified TLS from a server that refuses it fails: no silent downgrade."""
    server = temp_postgres_factory()
    pool = make_pool(server.dsn, min_size=1, ssl=tls_client_context)
    with pytest.raises(TLSError, match="SSL"):
        await pool.open()


# -- check, close, abort ------------------------------------------------------------------------


async def test_check_round_trips_and_reports_a_closed_connection(pg_dsn: str) -> None:
    """check() passes on a live connection and raises ConnectionBroken on a closed one."""
    connector = PostgresConnector(pg_dsn)
    conn = await connector.connect()
    try:
        await connector.check(conn)
        assert not connector.is_closed(conn)
    finally:
        await connector.close(conn)
    assert connector.is_closed(conn)
    with pytest.raises(ConnectionBroken):
        await connector.check(conn)


async def test_close_of_an_already_dead_connection_does_not_raise(pg_dsn: str) -> None:
    """close() after the server killed the session (or after terminate()) is silent."""
    connector = PostgresConnector(pg_dsn)
    conn = await connector.connect()
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", conn.get_server_pid())
    finally:
        await admin.close()
    await connector.close(conn)
    connector.abort(conn)
    await connector.close(conn)
    assert connector.is_closed(conn)


def _connect_in_own_loop(dsn: str, **kwargs: Any) -> tuple[PostgresConnector, Any]:
    loop = asyncio.new_event_loop()
    try:
        connector = PostgresConnector(dsn, **kwargs)
        conn = loop.run_until_complete(connector.connect())
    finally:
        loop.close()
    return connector, conn


def test_abort_releases_the_socket_after_the_event_loop_closed(
    no_fd_leak_sync: FdTracker, pg_dsn: str
) -> None:
    """abort() after the loop closed closes the socket without raising or warning."""
    connector, conn = _connect_in_own_loop(pg_dsn)
    connector.abort(conn)
    connector.abort(conn)  # idempotent
    del conn
    gc.collect()


def test_abort_of_a_tls_connection_after_the_event_loop_closed(
    no_fd_leak_sync: FdTracker,
    temp_postgres_factory: TempPostgresFactory,
    tls_cert_files: TLSFiles,
    tls_client_context: ssl.SSLContext,
) -> None:
    """Beneath an SSL transport, the socket transport is found and closed too."""
    server = temp_postgres_factory(tls=tls_cert_files, tls_only=True)
    connector, conn = _connect_in_own_loop(server.dsn, ssl=tls_client_context)
    connector.abort(conn)
    del conn
    gc.collect()


def test_terminate_after_the_loop_closed_frees_every_connection(
    no_fd_leak_sync: FdTracker, pg_dsn: str
) -> None:
    """pool.terminate() after its loop closed aborts idle and in-use connections silently."""
    loop = asyncio.new_event_loop()
    pool = create_pool(pg_dsn, environ={}, min_size=2, max_size=3, health_check_interval=None)

    async def use() -> Any:
        await pool.open()
        return await pool.acquire()

    try:
        held = loop.run_until_complete(use())
        assert pool.stats().size == 2
    finally:
        loop.close()
    pool.terminate()
    assert pool.stats().size == 0
    del held
    gc.collect()


# -- transactions ------------------------------------------------------------------------------


@pytest.fixture
async def scratch_table(pg_dsn: str) -> AsyncIterator[str]:
    """A uniquely named table on the shared server, dropped afterwards."""
    name = f"poolkit_tx_{id(object()):x}"
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f"CREATE TABLE {name} (x int)")
        yield name
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
        await conn.close()


async def test_transaction_commits_when_the_block_ends(
    pg_dsn: str, make_pool: PoolFactory, scratch_table: str
) -> None:
    """``async with pool.transaction()`` commits a block that ends normally."""
    pool = make_pool(pg_dsn, min_size=1, max_size=2)
    async with pool:
        async with pool.transaction() as conn:
            assert conn.is_in_transaction()
            await conn.execute(f"INSERT INTO {scratch_table} VALUES (1)")
        async with pool.acquire() as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {scratch_table}") == 1
            assert not conn.is_in_transaction()


async def test_transaction_rolls_back_when_the_block_raises(
    pg_dsn: str, make_pool: PoolFactory, scratch_table: str
) -> None:
    """The block's exception propagates unchanged; the pool's reset rolls the work back."""
    pool = make_pool(pg_dsn, min_size=1, max_size=1)
    async with pool:
        with pytest.raises(LookupError, match="boom"):
            async with pool.transaction() as conn:
                await conn.execute(f"INSERT INTO {scratch_table} VALUES (1)")
                raise LookupError("boom")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval(f"SELECT count(*) FROM {scratch_table}") == 0
            async with conn.transaction():  # asyncpg's own state was reset too
                await conn.execute(f"INSERT INTO {scratch_table} VALUES (2)")
        assert pool.stats().reset_failures == 0


async def test_cancelled_transaction_is_rolled_back_off_the_callers_path(
    pg_dsn: str, make_pool: PoolFactory, scratch_table: str
) -> None:
    """Cancelling a task inside pool.transaction() leaves nothing committed or open."""
    pool = make_pool(pg_dsn, min_size=1, max_size=1)
    inside = asyncio.Event()

    async def worker() -> None:
        async with pool.transaction() as conn:
            await conn.execute(f"INSERT INTO {scratch_table} VALUES (1)")
            inside.set()
            await asyncio.sleep(30)

    async with pool:
        task = asyncio.create_task(worker())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.acquire() as conn:
            assert await conn.fetchval(f"SELECT count(*) FROM {scratch_table}") == 0


async def test_transaction_options_reach_the_server(pg_dsn: str, make_pool: PoolFactory) -> None:
    """isolation and readonly are applied to the transaction."""
    pool = make_pool(pg_dsn, min_size=1, max_size=1)
    async with pool, pool.transaction(isolation="serializable", readonly=True) as conn:
        row = await conn.fetchrow(
            "SELECT current_setting('transaction_isolation') AS iso, "
            "current_setting('transaction_read_only') AS ro"
        )
        assert row is not None
        assert (row["iso"], row["ro"]) == ("serializable", "on")


# -- PgBouncer ------------------------------------------------------------------------------------


async def test_pgbouncer_is_detected_and_the_statement_cache_turned_off(
    pgbouncer_factory: PgBouncerFactory,
    temp_postgres_factory: TempPostgresFactory,
    make_pool: PoolFactory,
) -> None:
    """Behind a real pgbouncer, detection turns the statement cache off; queries keep working."""
    server = temp_postgres_factory()
    bouncer = pgbouncer_factory(server.host, server.port, pool_size=2)
    pool = make_pool(bouncer.dsn, min_size=1, max_size=6)
    connector = pool.connector
    assert isinstance(connector, PostgresConnector)
    async with pool:
        assert (connector.behind_pooler, connector.pgbouncer) == (True, None)

        async def work(i: int) -> int:
            async with pool.acquire() as conn:
                assert conn._stmt_cache.get_max_size() == 0  # type: ignore[attr-defined]
                assert connector.needs_reset(conn)
                total = 0
                for j in range(5):
                    total += await conn.fetchval("SELECT $1::int + $2::int", i, j)
                return int(total)

        results = await asyncio.gather(*(work(i) for i in range(12)))
        assert results == [5 * i + 10 for i in range(12)]


async def test_pgbouncer_mode_resets_by_rollback_only(
    pgbouncer_factory: PgBouncerFactory,
    temp_postgres_factory: TempPostgresFactory,
    make_pool: PoolFactory,
) -> None:
    """pgbouncer=True: an idle release does no I/O; a transaction left open is rolled back."""
    server = temp_postgres_factory()
    bouncer = pgbouncer_factory(server.host, server.port, pool_size=2)
    pool = make_pool(bouncer.dsn, min_size=1, max_size=1, pgbouncer=True)
    connector = pool.connector
    assert isinstance(connector, PostgresConnector)
    async with pool:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
            assert not connector.needs_reset(conn)
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE bounced (x int)")
            assert connector.needs_reset(conn)
        async with pool.transaction() as conn:
            assert await conn.fetchval("SELECT to_regclass('pg_temp.bounced') IS NULL")
        assert pool.stats().reset_failures == 0


async def test_a_detected_pooler_in_session_mode_still_gets_the_clean_reset(
    pgbouncer_factory: PgBouncerFactory,
    temp_postgres_factory: TempPostgresFactory,
    make_pool: PoolFactory,
) -> None:
    """Behind a detected session-mode pgbouncer, "clean" still isolates borrowers."""
    server = temp_postgres_factory()
    bouncer = pgbouncer_factory(server.host, server.port, pool_mode="session", pool_size=1)
    pool = make_pool(bouncer.dsn, min_size=1, max_size=1)
    connector = pool.connector
    assert isinstance(connector, PostgresConnector)
    async with pool:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SET work_mem = '3MB'; CREATE TEMP TABLE kept (x int)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            row = await conn.fetchrow(
                "SELECT current_setting('work_mem') AS wm, to_regclass('pg_temp.kept') AS t"
            )
            assert row is not None
            assert (row["wm"], row["t"]) == ("4MB", None)
        assert connector.behind_pooler is True
