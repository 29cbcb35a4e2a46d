"""Self-tests of the shared fixtures: proxy, servers, throwaway servers, TLS, fd tracking."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomysql
import asyncpg
import pymysql
import pytest

from fix_proxy import DeafListener, Endpoint, Proxy, ProxyFactory
from fix_servers import (
    FdTracker,
    dsn_host_port,
    fd_count,
    require_binary,
    require_server,
    tcp_reachable,
)
from fix_tempserver import (
    PgBouncer,
    PgBouncerFactory,
    TempMariaDB,
    TempMariaDBFactory,
    TempPostgres,
    TempPostgresFactory,
    pytest_collection_modifyitems,
)
from fix_tls import TLSFiles

# ----------------------------------------------------------------------------- helpers


class EchoServer:
    """A loopback echo server that counts the connections it accepted."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()


@asynccontextmanager
async def echo_server() -> AsyncIterator[EchoServer]:
    echo = EchoServer()
    server = await asyncio.start_server(echo.handle, "127.0.0.1", 0)
    echo.port = server.sockets[0].getsockname()[1]
    try:
        yield echo
    finally:
        server.close()
        echo.abort_all()
        await server.wait_closed()
        await asyncio.sleep(0)


async def open_client(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(proxy.host, proxy.port)


async def close_client(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


async def wait_until(predicate: object, what: str, timeout: float = 5.0) -> None:
    """Poll a zero-argument callable until it returns true (deadline, not a fixed sleep)."""
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------- proxy


async def test_proxy_forwards_bytes_both_ways(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory
) -> None:
    """Bytes written to the proxy reach the target and the answer comes back."""
    async with echo_server() as echo:
        proxy = await tcp_proxy("127.0.0.1", echo.port)
        reader, writer = await open_client(proxy)
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        assert proxy.connection_count == 1
        assert proxy.active == 1
        assert echo.accepted == 1
        await close_client(writer)
        await wait_until(lambda: proxy.active == 0, "the pair to close")
        assert "active=0 accepted=1" in repr(proxy)


async def test_proxy_stop_drops_connections_and_refuses_until_start(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory
) -> None:
    """stop() ends current connections and refuses new ones; start() listens on the same port."""
    async with echo_server() as echo:
        proxy = await tcp_proxy("127.0.0.1", echo.port)
        port = proxy.port
        reader, writer = await open_client(proxy)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        await proxy.stop()
        assert not proxy.listening
        try:
            assert await reader.read(10) == b""
        except ConnectionResetError:
            pass
        await close_client(writer)
        with pytest.raises(ConnectionRefusedError):
            await open_client(proxy)
        await proxy.start()
        assert proxy.port == port
        reader, writer = await open_client(proxy)
        writer.write(b"again")
        assert await reader.readexactly(5) == b"again"
        await close_client(writer)


async def test_proxy_blackhole_holds_connections_and_forwards_nothing(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory
) -> None:
    """blackhole(): existing and new connections stay open, nothing is forwarded either way."""
    async with echo_server() as echo:
        proxy = await tcp_proxy("127.0.0.1", echo.port)
        reader, writer = await open_client(proxy)
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        proxy.blackhole()
        writer.write(b"lost")
        reader2, writer2 = await open_client(proxy)
        writer2.write(b"lost too")
        for r in (reader, reader2):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(r.read(10), 0.2)
        assert echo.accepted == 1  # the new connection never reached the target
        assert proxy.active == 2
        assert proxy.connection_count == 2
        assert not writer.is_closing() and not writer2.is_closing()
        proxy.restore()
        reader3, writer3 = await open_client(proxy)
        writer3.write(b"back")
        assert await reader3.readexactly(4) == b"back"
        for w in (writer, writer2, writer3):
            await close_client(w)
        await wait_until(lambda: proxy.active == 0, "the pairs to close")


async def test_proxy_reset_gives_client_connection_reset(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory
) -> None:
    """reset() aborts current connections with RST; the proxy keeps accepting."""
    async with echo_server() as echo:
        proxy = await tcp_proxy("127.0.0.1", echo.port)
        reader, writer = await open_client(proxy)
        writer.write(b"a")
        assert await reader.readexactly(1) == b"a"
        await proxy.reset()
        with pytest.raises(ConnectionResetError):
            await reader.read(10)
        writer.close()
        assert proxy.active == 0
        reader, writer = await open_client(proxy)
        writer.write(b"b")
        assert await reader.readexactly(1) == b"b"
        await close_client(writer)


async def test_proxy_slow_delays_each_chunk(no_fd_leak: FdTracker, tcp_proxy: ProxyFactory) -> None:
    """slow(d) still forwards, only later (at least d per direction)."""
    async with echo_server() as echo:
        proxy = await tcp_proxy("127.0.0.1", echo.port)
        proxy.slow(0.05)
        reader, writer = await open_client(proxy)
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(b"slow")
        assert await reader.readexactly(4) == b"slow"
        assert loop.time() - started >= 0.1  # lower bound only: both directions delayed
        await close_client(writer)
        with pytest.raises(ValueError, match="-1"):
            proxy.slow(-1)


async def test_proxy_closes_client_when_target_refuses(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory, refused_port: Endpoint
) -> None:
    """A client of a proxy whose target is down sees the connection closed."""
    proxy = await tcp_proxy(*refused_port)
    reader, writer = await open_client(proxy)
    assert await reader.read(10) == b""
    await close_client(writer)
    assert proxy.connection_count == 1


async def test_proxy_retarget_sends_new_connections_elsewhere(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory
) -> None:
    """retarget() switches new connections to another target (a failover)."""
    async with echo_server() as first, echo_server() as second:
        proxy = await tcp_proxy("127.0.0.1", first.port)
        proxy.retarget("127.0.0.1", second.port)
        reader, writer = await open_client(proxy)
        writer.write(b"z")
        assert await reader.readexactly(1) == b"z"
        assert (first.accepted, second.accepted) == (0, 1)
        await close_client(writer)


async def test_proxy_close_with_open_connections_leaves_nothing(
    no_fd_leak: FdTracker,
) -> None:
    """close() with live and blackholed connections releases every socket and task."""
    async with echo_server() as echo:
        proxy = Proxy("127.0.0.1", echo.port)
        await proxy.start()
        clients = [await open_client(proxy) for _ in range(3)]
        clients[0][1].write(b"x")
        assert await clients[0][0].readexactly(1) == b"x"
        proxy.blackhole()
        clients.append(await open_client(proxy))
        await wait_until(lambda: proxy.active == 4, "4 accepted connections")
        await proxy.close()
        await proxy.close()  # idempotent
        assert proxy.active == 0
        for _, writer in clients:
            await close_client(writer)


def test_proxy_refuses_non_loopback_addresses() -> None:
    """The proxy only ever talks to loopback addresses."""
    with pytest.raises(ValueError, match="10.0.0.1"):
        Proxy("10.0.0.1", 5432)
    with pytest.raises(ValueError, match="0.0.0.0"):
        Proxy("127.0.0.1", 5432, host="0.0.0.0")


async def test_proxy_forwards_a_real_postgres_session(
    no_fd_leak: FdTracker, tcp_proxy: ProxyFactory, pg_dsn: str
) -> None:
    """asyncpg works through the proxy; reset() breaks its connection."""
    host, port = dsn_host_port(pg_dsn)
    proxy = await tcp_proxy(host, port)
    conn = await asyncpg.connect(host=proxy.host, port=proxy.port, user="postgres", database="test")
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await proxy.reset()
        with pytest.raises(
            (
                ConnectionError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.exceptions.InternalClientError,
            )
        ):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()


async def test_deaf_listener_accepts_but_never_answers(deaf_listener: DeafListener) -> None:
    """TCP connect to the deaf listener succeeds; nothing is ever sent back."""
    reader, writer = await asyncio.open_connection(*deaf_listener.endpoint)
    writer.write(b"hello?")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.2)
    writer.close()


async def test_syn_drop_listener_makes_tcp_connect_hang(
    syn_drop_listener: DeafListener,
) -> None:
    """With the accept queue full, the TCP connect itself does not complete."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.open_connection(*syn_drop_listener.endpoint), 0.3)


def test_refused_port_refuses(refused_port: Endpoint) -> None:
    """Nothing listens on refused_port."""
    assert not tcp_reachable(*refused_port)


# ----------------------------------------------------------------------------- servers, fds


async def test_pg_dsn_points_to_a_live_postgres(pg_dsn: str) -> None:
    """The shared PostgreSQL answers on pg_dsn."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "test"
    finally:
        await conn.close()


async def test_mysql_dsn_points_to_a_live_mariadb(mysql_dsn: str) -> None:
    """The shared MariaDB answers on mysql_dsn."""
    host, port = dsn_host_port(mysql_dsn)
    conn = await aiomysql.connect(host=host, port=port, user="root", password="", db="test")
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT DATABASE()")
            assert await cur.fetchone() == ("test",)
    finally:
        conn.close()


def test_missing_binary_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """require_binary: skip outside CI, fail (not skip) with CI=true."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-binary-xyz"):
        require_binary("no-such-binary-xyz")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-binary-xyz"):
        require_binary("no-such-binary-xyz")


def test_unreachable_server_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, refused_port: Endpoint
) -> None:
    """require_server: a down server skips outside CI and fails in CI, naming the address."""
    dsn = f"postgresql://postgres:canary-pw@127.0.0.1:{refused_port.port}/test"
    monkeypatch.setenv("POOLKIT_TEST_PG_DSN", dsn)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=str(refused_port.port)) as skipped:
        require_server("postgres")
    assert "canary-pw" not in str(skipped.value)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="POOLKIT_TEST_PG_DSN"):
        require_server("postgres")


def test_fd_tracker_reports_a_leaked_socket() -> None:
    """FdTracker fails while a socket opened after the baseline is still open."""
    tracker = FdTracker()
    sock = socket.socket()
    try:
        assert fd_count() == len(tracker.baseline) + 1
        with pytest.raises(AssertionError, match="socket"):
            tracker.check_sync(timeout=0.05)
    finally:
        sock.close()
    tracker.check_sync()


# ----------------------------------------------------------------------------- TLS


async def test_tls_contexts_handshake_over_loopback(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """The client context trusts the server certificate for 127.0.0.1 and localhost."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(2))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls_server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        for name in ("127.0.0.1", "localhost"):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=tls_client_context, server_hostname=name
            )
            writer.write(b"ok")
            assert await reader.readexactly(2) == b"ok"
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


def test_tls_cert_files_are_pem_with_private_key(tls_cert_files: TLSFiles) -> None:
    """tls_cert_files: PEM cert and CA, key readable only by its owner."""
    assert tls_cert_files.cert.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert tls_cert_files.ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert "PRIVATE KEY" in tls_cert_files.key.read_text()
    assert tls_cert_files.key.stat().st_mode & 0o077 == 0


# ----------------------------------------------------------------------------- temp postgres


async def test_temp_postgres_accepts_connections_and_restarts(
    temp_postgres: TempPostgres,
) -> None:
    """A throwaway Postgres serves db test; restart drops connections, then serves again."""
    assert temp_postgres.port != 5432
    conn = await asyncpg.connect(temp_postgres.dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "test"
        assert await temp_postgres.client_connections() == 1
        await temp_postgres.restart()
        with pytest.raises(
            (
                ConnectionError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.exceptions.InternalClientError,
            )
        ):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    conn = await asyncpg.connect(temp_postgres.dsn)
    try:
        assert await conn.fetchval("SELECT 2") == 2
    finally:
        await conn.close()


async def test_temp_postgres_stop_refuses_then_start_serves(
    temp_postgres: TempPostgres,
) -> None:
    """stop('immediate') makes connects fail; start() brings the same port back."""
    await temp_postgres.stop("immediate")
    assert not temp_postgres.running
    with pytest.raises(OSError):
        await asyncpg.connect(temp_postgres.dsn)
    await temp_postgres.start()
    conn = await asyncpg.connect(temp_postgres.dsn)
    await conn.close()


async def test_temp_postgres_terminate_connections_kills_clients(
    temp_postgres: TempPostgres,
) -> None:
    """terminate_connections() kills client backends while the server stays up."""
    conn = await asyncpg.connect(temp_postgres.dsn)
    try:
        assert await temp_postgres.terminate_connections() == 1
        with pytest.raises(
            (
                ConnectionError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.exceptions.InternalClientError,
            )
        ):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    assert await temp_postgres.client_connections() == 0


@pytest.mark.parametrize("method", ["scram-sha-256", "md5"])
async def test_temp_postgres_password_auth_rejects_wrong_password(
    temp_postgres_factory: TempPostgresFactory, method: str
) -> None:
    """With password=..., the right password connects and a wrong one is rejected."""
    assert method in ("scram-sha-256", "md5")
    server = temp_postgres_factory(
        password="canary-Pw:1@/", auth_method="md5" if method == "md5" else "scram-sha-256"
    )
    conn = await asyncpg.connect(server.dsn)
    await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(server.make_dsn(password="wrong"))


async def test_temp_postgres_tls_only(
    temp_postgres_factory: TempPostgresFactory,
    tls_cert_files: TLSFiles,
    tls_client_context: ssl.SSLContext,
) -> None:
    """tls_only: verified TLS connects, plaintext is rejected."""
    server = temp_postgres_factory(tls=tls_cert_files, tls_only=True)
    conn = await asyncpg.connect(server.dsn, ssl=tls_client_context)
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await conn.close()
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(server.dsn, ssl=False)


def test_temp_postgres_cleanup_kills_server_and_removes_dir(
    temp_postgres_factory: TempPostgresFactory,
) -> None:
    """cleanup() stops the server and deletes its directory (what teardown does)."""
    server = temp_postgres_factory(max_connections=5, settings={"work_mem": "1MB"})
    assert server.query_sync("SHOW max_connections") == "5"
    assert server.query_sync("SHOW work_mem") == "1MB"
    server.cleanup()
    assert not server.root.exists()
    assert not tcp_reachable(*server.address)
    server.cleanup()  # idempotent


# ----------------------------------------------------------------------------- temp mariadb


async def _mysql_query(dsn_server: TempMariaDB, sql: str, **kwargs: object) -> object:
    conn = await aiomysql.connect(
        host=dsn_server.host, port=dsn_server.port, db="test", **{"user": "root", **kwargs}
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            return await cur.fetchone()
    finally:
        conn.close()


async def test_temp_mariadb_accepts_connections_and_restarts(temp_mariadb: TempMariaDB) -> None:
    """A throwaway MariaDB serves db test to root; restart drops connections, then serves."""
    assert temp_mariadb.port != 3306
    assert temp_mariadb.dsn == f"mysql://root@127.0.0.1:{temp_mariadb.port}/test"
    conn = await aiomysql.connect(
        host=temp_mariadb.host, port=temp_mariadb.port, user="root", password="", db="test"
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT DATABASE()")
            assert await cur.fetchone() == ("test",)
        assert await temp_mariadb.client_connections() == 1
        await temp_mariadb.restart()
        with pytest.raises(pymysql.err.OperationalError):
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
    finally:
        conn.close()
    assert await _mysql_query(temp_mariadb, "SELECT 2") == (2,)


async def test_temp_mariadb_password_user_rejects_wrong_password(
    temp_mariadb_factory: TempMariaDBFactory,
) -> None:
    """password=...: the password user connects with it and is rejected (1045) without it."""
    server = temp_mariadb_factory(password="canary'pw\\x")
    assert server.password_dsn.startswith(
        f"mysql://poolkit:canary%27pw%5Cx@127.0.0.1:{server.port}"
    )
    row = await _mysql_query(
        server, "SELECT CURRENT_USER()", user="poolkit", password=server.password
    )
    assert row == ("poolkit@127.0.0.1",)
    with pytest.raises(pymysql.err.OperationalError) as info:
        await _mysql_query(server, "SELECT 1", user="poolkit", password="wrong")
    assert info.value.args[0] == 1045


async def test_temp_mariadb_terminate_connections_kills_clients(
    temp_mariadb: TempMariaDB,
) -> None:
    """terminate_connections() kills client connections while the server stays up."""
    conn = await aiomysql.connect(host=temp_mariadb.host, port=temp_mariadb.port, user="root")
    try:
        assert await temp_mariadb.terminate_connections() == 1
        with pytest.raises(pymysql.err.OperationalError):
            async with conn.cursor() as cur:
                await cur.execute("SELECT 1")
    finally:
        conn.close()
    assert await temp_mariadb.client_connections() == 0


async def test_temp_mariadb_tls_serves_verified_tls(
    temp_mariadb_factory: TempMariaDBFactory,
    tls_cert_files: TLSFiles,
    tls_client_context: ssl.SSLContext,
) -> None:
    """tls=...: a client verifying against the test CA gets an encrypted session."""
    server = temp_mariadb_factory(tls=tls_cert_files)
    row = await _mysql_query(
        server, "SHOW SESSION STATUS LIKE 'Ssl_version'", ssl=tls_client_context
    )
    assert isinstance(row, tuple)
    assert str(row[1]).startswith("TLS")


def test_temp_mariadb_stop_and_cleanup(temp_mariadb_factory: TempMariaDBFactory) -> None:
    """stop() frees the port; cleanup() removes the directory."""
    server = temp_mariadb_factory(max_connections=12)
    assert server.query_sync("SELECT @@max_connections") == "12"
    server.stop_sync()
    assert not tcp_reachable(*server.address)
    server.cleanup()
    assert not Path(server.root).exists()


# ----------------------------------------------------------------------------- pgbouncer


async def test_pgbouncer_forwards_queries_in_transaction_mode(pgbouncer: PgBouncer) -> None:
    """Through pgbouncer (transaction mode), queries reach the shared Postgres db test."""
    conn = await asyncpg.connect(pgbouncer.dsn, statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT current_database()") == "test"
    finally:
        await conn.close()


async def test_pgbouncer_shares_one_server_connection_between_clients(
    pgbouncer_factory: PgBouncerFactory, temp_postgres: TempPostgres
) -> None:
    """pool_size=1 in transaction mode: two open clients both run queries on one backend."""
    bouncer = pgbouncer_factory(temp_postgres.host, temp_postgres.port, pool_size=1)
    a = await asyncpg.connect(bouncer.dsn, statement_cache_size=0)
    b = await asyncpg.connect(bouncer.dsn, statement_cache_size=0)
    try:
        pid_a = await asyncio.wait_for(a.fetchval("SELECT pg_backend_pid()"), 10)
        pid_b = await asyncio.wait_for(b.fetchval("SELECT pg_backend_pid()"), 10)
        assert pid_a == pid_b
        assert await temp_postgres.client_connections() == 1
    finally:
        await a.close()
        await b.close()


async def test_pgbouncer_restart_drops_clients(
    pgbouncer_factory: PgBouncerFactory, temp_postgres: TempPostgres
) -> None:
    """Restarting pgbouncer breaks its client connections; new ones work."""
    bouncer = pgbouncer_factory(temp_postgres.host, temp_postgres.port)
    conn = await asyncpg.connect(bouncer.dsn, statement_cache_size=0)
    try:
        await bouncer.restart()
        with pytest.raises(
            (
                ConnectionError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.exceptions.InternalClientError,
            )
        ):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
    conn = await asyncpg.connect(bouncer.dsn, statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT 3") == 3
    finally:
        await conn.close()


def test_tempserver_and_pgbouncer_markers_added_automatically() -> None:
    """Tests using throwaway-server fixtures are marked tempserver / pgbouncer at collection."""

    class FakeItem:
        def __init__(self, *names: str) -> None:
            self.fixturenames = list(names)
            self.markers: list[str] = []

        def add_marker(self, marker: pytest.MarkDecorator) -> None:
            self.markers.append(marker.name)

    items = [
        FakeItem("temp_postgres", "_pg_template"),
        FakeItem("pgbouncer", "pgbouncer_factory", "pg_dsn"),
        FakeItem("tcp_proxy"),
        FakeItem("temp_mariadb_factory", "pgbouncer_factory"),
    ]
    pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    assert [item.markers for item in items] == [
        ["tempserver"],
        ["pgbouncer"],
        [],
        ["tempserver", "pgbouncer"],
    ]
