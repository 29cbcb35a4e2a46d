"""poolkit.mysql: DSN and option handling, session setup, connect errors, close and abort.

Everything that talks to a server uses a real one: the shared local MariaDB, or a throwaway
``mariadbd`` (``temp_mariadb_factory``) when a test needs TLS or a password user.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomysql
import pytest

from fix_proxy import DeafListener, Endpoint
from fix_servers import FdTracker
from fix_tempserver import TempMariaDBFactory
from fix_tls import TLSFiles
from poolkit.mysql import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    MySQLConnector,
    MySQLPool,
    PoolConfig,
    PoolTimeout,
    TLSError,
    create_pool,
    parse_dsn,
)

CANARY = "canary-pw-7f3a9c"

PoolFactory = Callable[..., MySQLPool]


@pytest.fixture
async def make_pool(mysql_dsn: str) -> AsyncIterator[PoolFactory]:
    """Build pools on the shared server (``environ={}``: no env leaks in); close them after."""
    pools: list[MySQLPool] = []

    def make(dsn: str | None = None, **kwargs: Any) -> MySQLPool:
        kwargs.setdefault("environ", {})
        pool = create_pool(dsn or mysql_dsn, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


async def fetch(conn: Any, sql: str, *args: Any) -> tuple[Any, ...]:
    """Run ``sql`` on ``conn`` and return the first row."""
    async with conn.cursor() as cur:
        await cur.execute(sql, args or None)
        row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def execute(conn: Any, sql: str) -> None:
    """Run a statement that returns no rows."""
    async with conn.cursor() as cur:
        await cur.execute(sql)


async def live_thread_ids(dsn: str, ids: list[int]) -> list[int]:
    """Return which of the server thread ``ids`` still exist (queried on a fresh connection)."""
    if not ids:
        return []
    conn = await MySQLConnector(**parse_dsn(dsn)).connect()
    try:
        async with conn.cursor() as cur:
            marks = ",".join(["%s"] * len(ids))
            await cur.execute(
                f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({marks})", ids
            )
            return sorted(int(r[0]) for r in await cur.fetchall())
    finally:
        conn.close()


# -- DSN ------------------------------------------------------------------------------------------


def test_parse_dsn_decodes_user_password_host_port_and_database() -> None:
    """A DSN's percent-encoded user and password are decoded; host, port and db are split."""
    assert parse_dsn("mysql://app%40eu:p%3Aw%2Fd@db.internal:3307/shop") == {
        "user": "app@eu",
        "password": "p:w/d",
        "host": "db.internal",
        "port": 3307,
        "db": "shop",
    }


def test_parse_dsn_accepts_mariadb_scheme_ipv6_host_and_no_database() -> None:
    """``mariadb://`` works like ``mysql://``; bracketed IPv6 hosts are unbracketed."""
    assert parse_dsn("mariadb://root@[::1]:3306") == {"user": "root", "host": "::1", "port": 3306}


def test_parse_dsn_reads_session_query_parameters() -> None:
    """Query parameters become connector options; init_command may repeat."""
    params = parse_dsn(
        "mysql://root@h/db?charset=latin1&collation=latin1_bin&autocommit=false"
        "&time_zone=%2B02:00&sql_mode=ANSI&init_command=SET+@a%3D1&init_command=SET+@b%3D2"
        "&unix_socket=/tmp/m.sock"
    )
    assert params["charset"] == "latin1"
    assert params["collation"] == "latin1_bin"
    assert params["autocommit"] is False
    assert params["time_zone"] == "+02:00"
    assert params["sql_mode"] == "ANSI"
    assert params["init_command"] == ["SET @a=1", "SET @b=2"]
    assert params["unix_socket"] == "/tmp/m.sock"


def test_parse_dsn_tls_parameters_ask_for_verified_tls(tls_cert_files: TLSFiles) -> None:
    """``ssl=true`` asks for TLS; ``ssl_ca`` builds a context verifying against that CA."""
    assert parse_dsn("mysql://root@h/db?ssl=true")["ssl"] is True
    assert parse_dsn("mysql://root@h/db?ssl=false")["ssl"] is False
    ctx = parse_dsn(f"mysql://root@h/db?ssl_ca={tls_cert_files.ca}")["ssl"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    with pytest.raises(ConfigError, match="ssl_ca"):
        parse_dsn("mysql://root@h/db?ssl_ca=/nonexistent/ca.pem")


@pytest.mark.parametrize(
    ("dsn", "needle"),
    [
        (f"mysql://root:{CANARY}@h/db?bogus=1", "unknown query parameter 'bogus'"),
        (f"postgresql://root:{CANARY}@h/db", "mysql:// or mariadb://"),
        (f"mysql://root:{CANARY}@h:99999/db", "not a valid URL"),
        (f"mysql://root:{CANARY}@h/db/extra", "more than a database name"),
        (f"mysql://root:{CANARY}@h/db?autocommit=maybe", "must be true or false"),
    ],
)
def test_parse_dsn_rejects_bad_dsn_without_showing_the_password(dsn: str, needle: str) -> None:
    """A malformed DSN is a ConfigError that names the problem and hides the password."""
    with pytest.raises(ConfigError) as info:
        parse_dsn(dsn)
    assert needle in str(info.value)
    assert CANARY not in str(info.value)


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"charset": "utf8; DROP TABLE x"}, "charset"),
        ({"charset": "klingon"}, "charset"),
        ({"collation": "x'y"}, "collation"),
        ({"time_zone": "+00:00'; SET @x=1; --"}, "time_zone"),
        ({"sql_mode": "ANSI'"}, "sql_mode"),
        ({"reset": "discard_all"}, "reset"),
        ({"port": 0}, "port"),
        ({"host": ""}, "host"),
        ({"autocommit": "yes"}, "autocommit"),
        ({"init_command": ["SET @a=1", " "]}, "init_command"),
        ({"ssl": "required"}, "ssl"),
        ({"connect_kwargs": {"no_such_parameter": 1}}, "no_such_parameter"),
    ],
)
def test_connector_rejects_invalid_option_naming_it(options: dict[str, Any], field: str) -> None:
    """Each invalid connector option raises ConfigError naming the option."""
    with pytest.raises(ConfigError) as info:
        MySQLConnector(**options)
    assert info.value.field == field


def test_create_pool_rejects_unknown_keyword_naming_it() -> None:
    """A keyword that is neither a PoolConfig field nor an aiomysql parameter is refused."""
    with pytest.raises(ConfigError, match="max_sise"):
        create_pool("mysql://root@127.0.0.1/test", max_sise=3, environ={})
    with pytest.raises(ConfigError, match="binds the running loop"):
        create_pool("mysql://root@127.0.0.1/test", loop=object(), environ={})


def test_create_pool_reads_dsn_and_pool_config_from_the_environment() -> None:
    """MYSQL_DSN and MYSQL_POOL_* are used when not given; explicit keywords win."""
    environ = {
        "MYSQL_DSN": f"mysql://envuser:{CANARY}@10.1.2.3:3310/envdb",
        "MYSQL_POOL_MAX_SIZE": "7",
        "MYSQL_POOL_ACQUIRE_TIMEOUT": "2.5",
    }
    pool = create_pool(environ=environ, acquire_timeout=4.0)
    assert pool.config.max_size == 7
    assert pool.config.acquire_timeout == 4.0
    assert pool.target == "mysql://envuser@10.1.2.3:3310/envdb"
    explicit = create_pool(host="127.0.0.1", user="root", environ=environ)
    assert explicit.target.startswith("mysql://root@127.0.0.1:3306")


def test_create_pool_with_a_config_ignores_environment_pool_variables() -> None:
    """A given PoolConfig is used as is (keywords still override it); env is not read."""
    config = PoolConfig(min_size=0, max_size=2)
    pool = create_pool(
        "mysql://root@127.0.0.1/test",
        config=config,
        environ={"MYSQL_POOL_MAX_SIZE": "9"},
        name="cfg",
    )
    assert pool.config.max_size == 2
    assert pool.name == "cfg"


def test_bad_environment_value_names_the_variable() -> None:
    """A bad MYSQL_POOL_* value is a ConfigError naming the environment variable."""
    with pytest.raises(ConfigError, match="MYSQL_POOL_MAX_SIZE"):
        create_pool("mysql://root@127.0.0.1/test", environ={"MYSQL_POOL_MAX_SIZE": "lots"})


def test_target_and_reprs_never_show_the_password() -> None:
    """describe(), repr(connector) and repr(pool) show the target without the password."""
    pool = create_pool(f"mysql://app:{CANARY}@127.0.0.1:3306/shop", environ={})
    assert pool.target == "mysql://app@127.0.0.1:3306/shop"
    assert CANARY not in repr(pool)
    assert CANARY not in repr(pool.connector)
    socket_pool = create_pool(unix_socket="/run/mysqld.sock", user="app", environ={})
    assert socket_pool.target == "mysql://app@localhost?unix_socket=/run/mysqld.sock"


# -- connecting -----------------------------------------------------------------------------------


@pytest.mark.mysql
async def test_new_connections_get_the_pool_session_settings(make_pool: PoolFactory) -> None:
    """Charset/collation, autocommit, time zone, sql_mode and init commands are applied."""
    pool = make_pool(
        min_size=0,
        collation="utf8mb4_bin",
        autocommit=False,
        time_zone="+03:00",
        sql_mode="ANSI_QUOTES",
        init_command=["SET @first = 1", "SET @second = @first + 1"],
    )
    async with pool.acquire() as conn:
        row = await fetch(
            conn,
            "SELECT @@collation_connection, @@autocommit, @@time_zone, @@sql_mode, @second",
        )
        assert row == ("utf8mb4_bin", 0, "+03:00", "ANSI_QUOTES", 2)
        assert conn.get_autocommit() is False


@pytest.mark.mysql
async def test_driver_parameters_pass_through_to_aiomysql(make_pool: PoolFactory) -> None:
    """aiomysql.Connection parameters given to create_pool reach the connection."""
    pool = make_pool(min_size=0, cursorclass=aiomysql.DictCursor)
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute("SELECT 1 AS one")
        assert await cur.fetchone() == {"one": 1}


@pytest.mark.mysql
async def test_on_connect_hook_sees_each_new_connection(make_pool: PoolFactory) -> None:
    """on_connect runs once per physical connection, before its first use."""
    seen: list[int] = []

    async def on_connect(conn: Any) -> None:
        await execute(conn, "SET @hooked = 42")
        seen.append(conn.thread_id())

    pool = make_pool(min_size=2, max_size=2, on_connect=on_connect)
    await pool.open()
    async with pool.acquire() as conn:
        assert await fetch(conn, "SELECT @hooked") == (42,)
        assert conn.thread_id() in seen
    assert len(seen) == 2


@pytest.mark.mysql
async def test_closing_the_pool_closes_every_server_session_and_socket(
    no_fd_leak: FdTracker, mysql_dsn: str
) -> None:
    """After pool.close() no server thread of the pool remains and no fd is left open."""
    ids: list[int] = []
    pool = create_pool(
        mysql_dsn,
        min_size=3,
        max_size=3,
        environ={},
        on_connect=lambda c: ids.append(c.thread_id()),
    )
    async with pool:
        async with pool.acquire() as a, pool.acquire() as b:
            await fetch(a, "SELECT 1")
            await fetch(b, "SELECT 1")
        assert len(await live_thread_ids(mysql_dsn, ids)) == 3
    assert await live_thread_ids(mysql_dsn, ids) == []


@pytest.mark.mysql
async def test_refused_port_raises_connect_error_naming_the_target(
    refused_port: Endpoint,
) -> None:
    """A refused TCP connect fails open() with ConnectError: redacted target, cause chained."""
    pool = create_pool(
        host=refused_port.host, port=refused_port.port, user="root", password=CANARY, environ={}
    )
    with pytest.raises(ConnectError) as info:
        await pool.open()
    await pool.close()
    assert not isinstance(info.value, AuthenticationError)
    assert f"{refused_port.host}:{refused_port.port}" in str(info.value)
    assert "Connect call failed" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectError | aiomysql.OperationalError)
    assert CANARY not in str(info.value)


@pytest.mark.mysql
async def test_connect_timeout_bounds_a_server_that_never_answers(
    no_fd_leak: FdTracker, deaf_listener: DeafListener
) -> None:
    """A port that accepts but never sends a greeting fails within connect_timeout."""
    host, port = deaf_listener.endpoint
    pool = create_pool(
        host=host, port=port, user="root", connect_timeout=0.3, acquire_timeout=2.0, environ={}
    )
    async with asyncio.timeout(5):
        with pytest.raises((PoolTimeout, ConnectError)):
            await pool.open()
    await pool.close()


@pytest.mark.mysql
async def test_cancelled_connect_leaves_no_socket_behind(
    deaf_listener: DeafListener, no_fd_leak: FdTracker
) -> None:
    """Cancelling MySQLConnector.connect() mid-handshake closes its socket at once."""
    host, port = deaf_listener.endpoint
    connector = MySQLConnector(host=host, port=port, user="root")
    task = asyncio.create_task(connector.connect())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await no_fd_leak.check()


@pytest.mark.mysql
async def test_tls_requested_from_a_server_without_tls_raises_tls_error(
    make_pool: PoolFactory,
) -> None:
    """Asking for TLS from a server that lacks it fails with TLSError (no silent clear text)."""
    probe = make_pool(min_size=0)
    async with probe.acquire() as conn:
        (_, have_ssl) = await fetch(conn, "SHOW VARIABLES LIKE 'have_ssl'")
    if have_ssl == "YES":
        pytest.skip("the shared server has TLS enabled")
    pool = make_pool(ssl=True)
    with pytest.raises(TLSError, match="does not support it"):
        await pool.open()


@pytest.mark.mysql
async def test_tls_connection_with_a_trusted_ca_is_encrypted(
    temp_mariadb_factory: TempMariaDBFactory,
    tls_cert_files: TLSFiles,
    tls_client_context: ssl.SSLContext,
) -> None:
    """With the server's CA trusted, connections use TLS (the server reports a cipher)."""
    server = temp_mariadb_factory(tls=tls_cert_files)
    pool = create_pool(server.dsn, ssl=tls_client_context, environ={})
    async with pool, pool.acquire() as conn:
        (_, cipher) = await fetch(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cipher


@pytest.mark.mysql
async def test_tls_with_an_untrusted_certificate_raises_tls_error(
    no_fd_leak: FdTracker,
    temp_mariadb_factory: TempMariaDBFactory,
    tls_cert_files: TLSFiles,
    tls_untrusted_client_context: ssl.SSLContext,
) -> None:
    """A certificate that does not verify fails the connect with TLSError, cause chained."""
    server = temp_mariadb_factory(tls=tls_cert_files)
    pool = create_pool(server.dsn, ssl=tls_untrusted_client_context, environ={})
    with pytest.raises(TLSError) as info:
        await pool.open()
    await pool.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


@pytest.mark.mysql
async def test_wrong_password_raises_authentication_error_without_retrying(
    temp_mariadb_factory: TempMariaDBFactory,
) -> None:
    """Refused credentials fail open() and acquire() with AuthenticationError, not a timeout."""
    server = temp_mariadb_factory(password="right-password")
    dsn = server.make_dsn(user=server.password_user, password=CANARY)
    pool = create_pool(dsn, min_size=0, acquire_timeout=10.0, environ={})
    async with asyncio.timeout(5):
        with pytest.raises(AuthenticationError) as info:
            await pool.open()
        with pytest.raises(AuthenticationError):
            await pool.acquire()
    await pool.close()
    assert "[1045] Access denied" in str(info.value)
    assert CANARY not in str(info.value)
    good = create_pool(server.password_dsn, environ={})
    async with good, good.acquire() as conn:
        assert await fetch(conn, "SELECT CURRENT_USER()") == ("poolkit@127.0.0.1",)


# -- close and abort ------------------------------------------------------------------------------


@pytest.mark.mysql
async def test_close_of_an_already_dead_connection_does_not_raise(mysql_dsn: str) -> None:
    """MySQLConnector.close() on a connection whose socket is gone returns quietly."""
    connector = MySQLConnector(**parse_dsn(mysql_dsn))
    conn = await connector.connect()
    connector.abort(conn)
    assert connector.is_closed(conn)
    await connector.close(conn)
    connector.abort(conn)  # idempotent


@pytest.mark.mysql
def test_abort_releases_the_socket_after_the_event_loop_closed(
    no_fd_leak_sync: FdTracker, mysql_dsn: str
) -> None:
    """abort() works with the connection's loop already closed: fd freed, no warning."""
    connector = MySQLConnector(**parse_dsn(mysql_dsn))
    loop = asyncio.new_event_loop()
    try:
        conn = loop.run_until_complete(connector.connect())
    finally:
        loop.close()
    connector.abort(conn)
    assert connector.is_closed(conn)
    del conn
    gc.collect()


@pytest.mark.mysql
def test_terminate_after_the_loop_closed_frees_every_connection(
    no_fd_leak_sync: FdTracker, mysql_dsn: str
) -> None:
    """pool.terminate() once asyncio.run() has returned closes every socket without warnings."""
    pool = create_pool(mysql_dsn, min_size=2, max_size=2, environ={})

    async def use() -> None:
        await pool.open()
        async with pool.acquire() as conn:
            await fetch(conn, "SELECT 1")

    asyncio.run(use())
    pool.terminate()
    gc.collect()
