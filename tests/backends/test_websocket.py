"""poolkit.websocket pool: reuse, cleanliness, health, reconnects, TLS, errors, stats.

Every test talks to a real websockets server on 127.0.0.1 (``ws_server.WSServer``), plain or
TLS, and counts connections on the server's side.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from backends.ws_server import ServerProcess, WSServer
from fix_proxy import Endpoint as ProxyEndpoint
from fix_servers import FdTracker
from fix_tls import TLSFiles
from poolkit.websocket import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    PoolConfig,
    PoolTimeout,
    PoolUsageError,
    TLSError,
    WebSocketClosed,
    WebSocketConnection,
    WebSocketConnector,
    WebSocketPool,
    create_pool,
    redact_uri,
    resolve_uri,
)

CANARY = "canary-token-5d1e"

PoolFactory = Callable[..., WebSocketPool]


@pytest.fixture
async def server() -> AsyncIterator[WSServer]:
    """A plain ws:// server on 127.0.0.1."""
    srv = WSServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def tls_server(tls_server_context: ssl.SSLContext) -> AsyncIterator[WSServer]:
    """A wss:// server on 127.0.0.1 with a certificate from the test CA."""
    srv = WSServer(ssl_context=tls_server_context)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    """Build pools (``environ={}``: no env leaks in) and close them after the test."""
    pools: list[WebSocketPool] = []

    def make(base_uri: str | None = None, **kwargs: Any) -> WebSocketPool:
        kwargs.setdefault("environ", {})
        pool = create_pool(base_uri, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


async def eventually(predicate: Callable[[], bool], *, timeout: float) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout} s")


# -- messages -------------------------------------------------------------------------------------


async def test_send_encodes_dicts_as_json_and_passes_str_and_bytes_through(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """send(dict) goes out as a JSON text frame; str and bytes frames are sent unchanged."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/echo") as conn:
        await conn.send({"op": "x", "n": [1, 2]})
        assert await conn.recv(timeout=5) == {"op": "x", "n": [1, 2]}
        await conn.send("plain text")
        assert await conn.recv(timeout=5) == "plain text"
        await conn.send(b"\x00\x01binary")
        assert await conn.recv(timeout=5) == b"\x00\x01binary"
    assert server.received == [
        ("/echo", '{"op":"x","n":[1,2]}'),
        ("/echo", "plain text"),
        ("/echo", b"\x00\x01binary"),
    ]


async def test_auto_decode_parses_json_objects_and_arrays_only(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """decode="auto": '{...}'/'[...]' text becomes dict/list; other text stays str; bytes stay."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/echo") as conn:
        for sent, expected in [
            ('{"a": 1}', {"a": 1}),
            (" [1, 2]", [1, 2]),
            ("42", "42"),
            ('"quoted"', '"quoted"'),
            ("{not json", "{not json"),
            (b"{}", b"{}"),
        ]:
            await conn.send(sent)
            assert await conn.recv(timeout=5) == expected


async def test_json_decode_raises_on_invalid_json_and_connection_stays_usable(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """decode="json" parses every frame; invalid JSON raises ValueError, the next recv works."""
    pool = make_pool(server.base_uri, decode="json")
    async with pool.acquire("/echo") as conn:
        await conn.send("42")
        assert await conn.recv(timeout=5) == 42
        await conn.send("not json")
        with pytest.raises(ValueError):
            await conn.recv(timeout=5)
        await conn.send(b'{"b": true}')
        assert await conn.recv(timeout=5) == {"b": True}


async def test_text_bytes_and_callable_decoders(server: WSServer, make_pool: PoolFactory) -> None:
    """decode="text" returns frames as is, "bytes" always bytes, a callable its own result."""
    pool = make_pool(server.base_uri, decode="text")
    async with pool.acquire("/echo") as conn:
        await conn.send({"a": 1})
        assert await conn.recv(timeout=5) == '{"a":1}'
        await conn.send("x")
        assert await conn.recv(timeout=5, decode="bytes") == b"x"
        await conn.send("abc")
        assert await conn.recv(timeout=5, decode=lambda d: ("got", d)) == ("got", "abc")


async def test_async_iteration_yields_messages_and_ends_on_normal_close(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """async for over a connection yields decoded messages and stops after a normal closure."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/burst") as conn:
        await conn.send({"burst": 3})
        seen: list[Any] = []
        async for msg in conn:
            seen.append(msg["seq"])
            if len(seen) == 3:
                await server.close_all(code=1000, reason="done")
        assert seen == [0, 1, 2]
        assert conn.closed


async def test_recv_timeout_loses_nothing(server: WSServer, make_pool: PoolFactory) -> None:
    """recv(timeout=...) raises TimeoutError and the next recv returns the next message."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/echo") as conn:
        with pytest.raises(TimeoutError):
            await conn.recv(timeout=0.01)
        await conn.send("after")
        assert await conn.recv(timeout=5) == "after"
        assert conn.is_clean()


# -- reuse ----------------------------------------------------------------------------------------


async def test_sequential_acquires_of_one_uri_reuse_one_tcp_connection(
    no_fd_leak: FdTracker, server: WSServer, make_pool: PoolFactory
) -> None:
    """Two acquires of the same URI in a row use one connection: the server saw one handshake."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/ws/btcusdt") as first:
        await first.send("1")
        assert await first.recv(timeout=5) == "1"
    async with pool.acquire("/ws/btcusdt") as second:
        await second.send("2")
        assert await second.recv(timeout=5) == "2"
    assert second is first
    assert server.handshakes == 1
    assert pool.stats().created == 1


async def test_different_uris_get_different_connections(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """Each URI has its own connections: two paths, two server-side connections."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/a") as a, pool.acquire("/b") as b:
        assert a is not b
        await a.send("x")
        await b.send("y")
        assert await a.recv(timeout=5) == "x"
        assert await b.recv(timeout=5) == "y"
    async with pool.acquire("/a"), pool.acquire("/b"):
        pass
    assert server.paths == {"/a": 1, "/b": 1}
    assert sorted(pool.uris()) == [server.uri("/a"), server.uri("/b")]


async def test_full_uri_and_base_relative_paths_resolve_to_the_same_pool(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """acquire("/p") and acquire("ws://host:port/p") are the same URI, so the same connection."""
    pool = make_pool(server.base_uri + "/api")
    async with pool.acquire("/p") as via_path:
        pass
    async with pool.acquire(server.uri("/p")) as via_uri:
        pass
    async with pool.acquire("sub") as relative:
        pass
    assert via_uri is via_path
    assert relative is not via_path
    assert server.paths == {"/p": 1, "/api/sub": 1}


def test_resolve_uri_joins_paths_to_the_base() -> None:
    """Absolute paths replace the base path, relative ones are appended, URIs pass through."""
    assert resolve_uri("wss://h:9443", "/ws/x") == "wss://h:9443/ws/x"
    assert resolve_uri("wss://h/api/", "/ws/x") == "wss://h/ws/x"
    assert resolve_uri("wss://h/api", "ws/x") == "wss://h/api/ws/x"
    assert resolve_uri("wss://h/api?k=1", "s?streams=a/b") == "wss://h/api/s?streams=a/b"
    assert resolve_uri(None, "ws://other:1/p") == "ws://other:1/p"
    with pytest.raises(ConfigError, match="base_uri"):
        resolve_uri(None, "/ws/x")
    with pytest.raises(ConfigError, match="ws:// or wss://"):
        resolve_uri("wss://h", "https://h/x")


def test_redact_uri_masks_passwords_and_secret_query_values() -> None:
    """Passwords and token-like query values are masked; other parts stay readable."""
    uri = f"wss://user:{CANARY}@h:1/ws/x?streams=a/b&token={CANARY}&listenKey={CANARY}"
    shown = redact_uri(uri)
    assert CANARY not in shown
    assert shown == "wss://user:***@h:1/ws/x?streams=a/b&token=***&listenKey=***"


# -- cleanliness ----------------------------------------------------------------------------------


async def test_connection_released_with_unread_messages_is_not_reused(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """Unread buffered messages at release: the connection is closed, the next borrower gets a
    fresh one and never sees the previous borrower's data."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/burst") as conn:
        await conn.send({"burst": 3})
        assert (await conn.recv(timeout=5))["seq"] == 0
        await eventually(lambda: conn.pending >= 2, timeout=5)
    async with pool.acquire("/burst") as fresh:
        assert fresh is not conn
        assert fresh.pending == 0
        await fresh.send("mine")
        assert await fresh.recv(timeout=5) == "mine"
    stats = pool.stats()
    assert stats.extra["dirty_discards"] == 1
    assert stats.closed.get("broken") == 1
    assert server.handshakes == 2


async def test_on_release_hook_can_unsubscribe_and_clear_pending_to_allow_reuse(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """An on_release hook that unsubscribes and discards what is buffered makes the connection
    reusable; the pushes that arrived before the ack are counted as discarded."""

    async def unsubscribe(conn: WebSocketConnection) -> None:
        await conn.send({"unsubscribe": "t"})
        while (await conn.recv(timeout=5)) != {"unsubscribed": "t"}:
            pass
        conn.discard_pending()

    pool = make_pool(server.base_uri, on_release=unsubscribe)
    async with pool.acquire("/feed") as conn:
        await conn.send({"subscribe": "t"})
        await server.wait_for(lambda: server.subscribers("t") == 1)
        await server.publish("t", {"n": 1})
        assert await conn.recv(timeout=5) == {"n": 1}
        await server.publish("t", {"n": 2})  # left unread by the borrower
    async with pool.acquire("/feed") as again:
        assert again is conn
        assert again.pending == 0
    assert server.handshakes == 1
    assert server.subscribers("t") == 0
    assert pool.stats().extra["dirty_discards"] == 0


async def test_message_arriving_while_idle_closes_the_connection_by_default(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """idle_messages="close": data pushed to an idle connection makes it unusable; the next
    acquire opens a new connection instead of handing out stale data."""
    pool = make_pool(server.base_uri, check_on_acquire="never")
    async with pool.acquire("/idle") as conn:
        pass
    await server.push_all({"stale": True})
    await eventually(lambda: conn.pending == 1, timeout=5)
    async with pool.acquire("/idle") as fresh:
        assert fresh is not conn
        await fresh.send("new")
        assert await fresh.recv(timeout=5) == "new"
    assert pool.stats().extra["dirty_discards"] == 1
    assert server.handshakes == 2


async def test_idle_messages_discard_policy_drops_stale_data_and_keeps_the_connection(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """idle_messages="discard": stale idle data is dropped and counted; the connection stays."""
    pool = make_pool(server.base_uri, idle_messages="discard", check_on_acquire="never")
    async with pool.acquire("/idle") as conn:
        pass
    await server.push_all({"stale": 1})
    await server.push_all({"stale": 2})
    await eventually(lambda: conn.pending == 2, timeout=5)
    async with pool.acquire("/idle") as same:
        assert same is conn
        assert same.pending == 0
        await same.send("fresh")
        assert await same.recv(timeout=5) == "fresh"
    stats = pool.stats()
    assert stats.extra["unread_discarded"] == 2
    assert stats.extra["dirty_discards"] == 0
    assert server.handshakes == 1


async def test_cancelled_recv_leaves_the_connection_clean(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """A recv cancelled mid-wait does not mark the connection dirty (websockets' recv is
    cancellation-safe), so the connection is reused."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/c") as conn:
        task = asyncio.create_task(conn.recv())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert conn.is_clean()
    async with pool.acquire("/c") as again:
        assert again is conn


async def test_use_after_release_raises_pool_usage_error(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """send/recv on a connection after its release raise PoolUsageError naming the misuse."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/u") as conn:
        pass
    with pytest.raises(PoolUsageError, match="after it was released"):
        await conn.send("late")
    with pytest.raises(PoolUsageError, match="after it was released"):
        await conn.recv()
    with pytest.raises(PoolUsageError):
        await pool.release(conn)


# -- health and reconnects ------------------------------------------------------------------------


async def test_server_close_is_detected_and_next_acquire_reconnects(
    no_fd_leak: FdTracker, server: WSServer, make_pool: PoolFactory
) -> None:
    """A connection the server closed while idle is dropped at hand-out; a new one is opened
    and the stats count one lost connection and one reconnect."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/s") as conn:
        pass
    await server.close_all()
    await server.wait_for(lambda: not server.active)
    await asyncio.wait_for(conn.ws.wait_closed(), 5)
    async with pool.acquire("/s") as fresh:
        assert fresh is not conn
        await fresh.send("ok")
        assert await fresh.recv(timeout=5) == "ok"
    stats = pool.stats()
    assert stats.extra["lost"] == 1
    assert stats.extra["reconnects"] == 1
    assert stats.closed.get("broken") == 1


async def test_idle_connection_that_stops_answering_pings_fails_its_health_check(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """An idle connection whose peer went silent fails its background ping within
    check_timeout once health_check_interval has passed, and is replaced on the next acquire."""
    pool = make_pool(
        server.base_uri,
        health_check_interval=0.05,
        check_timeout=0.2,
        close_timeout=0.2,
        ping_interval=None,
    )
    async with pool.acquire("/h") as conn:
        pass
    server.stop_answering_pings()
    await asyncio.sleep(0.06)  # past health_check_interval
    # One maintenance pass (what the pool's background task runs) starts the due check.
    await pool.pool("/h").run_maintenance()
    # Bound: check_timeout + close_timeout, plus slack for a busy CI machine.
    await eventually(lambda: pool.stats().check_failures > 0, timeout=0.2 + 0.2 + 5)
    server.deaf = False
    async with pool.acquire("/h") as fresh:
        assert fresh is not conn
        await fresh.send("alive")
        assert await fresh.recv(timeout=5) == "alive"
    stats = pool.stats()
    assert stats.extra["ping_failures"] == 1
    assert stats.extra["reconnects"] == 1
    assert stats.closed.get("check_failed") == 1


async def test_in_use_connection_with_silent_peer_is_closed_by_keepalive(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """While in use, websockets' keepalive (ping_interval/ping_timeout) closes a connection
    whose peer stopped answering; the borrower's recv raises WebSocketClosed, nothing hangs."""
    pool = make_pool(server.base_uri, ping_interval=0.05, ping_timeout=0.1, close_timeout=0.1)
    async with pool.acquire("/k") as conn:
        server.stop_answering_pings()
        async with asyncio.timeout(0.05 + 0.1 + 0.1 + 5.0):
            with pytest.raises(WebSocketClosed) as info:
                await conn.recv()
        assert info.value.code == 1011
        assert not info.value.ok
    server.deaf = False
    async with pool.acquire("/k") as fresh:
        assert fresh is not conn
    assert pool.stats().extra["lost"] == 1


async def test_tcp_reset_during_recv_raises_and_the_pool_recovers(
    no_fd_leak: FdTracker, server: WSServer, make_pool: PoolFactory
) -> None:
    """An RST from the server fails a pending recv at once with WebSocketClosed (no close
    frame); the broken connection is not reused and the next acquire works."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/r") as conn:
        waiting = asyncio.create_task(conn.recv())
        await server.wait_for(lambda: len(server.active) == 1)
        server.reset_all()
        with pytest.raises(WebSocketClosed) as info:
            await asyncio.wait_for(waiting, 5)
        assert info.value.code is None
    async with pool.acquire("/r") as fresh:
        assert fresh is not conn
        await fresh.send("back")
        assert await fresh.recv(timeout=5) == "back"
    assert pool.stats().extra["reconnects"] == 1


async def test_idle_connection_dropped_is_reopened_in_background_with_min_per_uri(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """min_per_uri=1: an idle connection the server resets is dropped by the pool's maintenance
    and re-opened (capped, jittered backoff) without any acquire."""
    pool = make_pool(
        server.base_uri,
        min_per_uri=1,
        health_check_interval=0.05,
        check_timeout=0.5,
        reconnect_initial_delay=0.01,
        reconnect_max_delay=0.05,
    )
    async with pool.acquire("/m") as conn:
        pass
    server.reset_all()
    await asyncio.wait_for(conn.ws.wait_closed(), 5)
    # The next maintenance pass drops the dead connection and refills min_per_uri.
    await pool.pool("/m").run_maintenance()
    await server.wait_for(lambda: server.handshakes == 2, timeout=10)
    await eventually(lambda: pool.stats().idle == 1, timeout=5)
    stats = pool.stats()
    assert stats.extra["reconnects"] == 1
    assert stats.size == 1


async def test_pool_heals_after_server_restart(server: WSServer, make_pool: PoolFactory) -> None:
    """While the server is down acquires fail with the real cause; after it restarts on the same
    port the pool serves connections again by itself."""
    pool = make_pool(server.base_uri, reconnect_initial_delay=0.01, reconnect_max_delay=0.05)
    async with pool.acquire("/x"):
        pass
    await server.stop()
    with pytest.raises(PoolTimeout) as info:
        async with pool.acquire("/x", timeout=0.3):
            pass
    assert isinstance(info.value.__cause__, ConnectError)
    await server.start()
    async with pool.acquire("/x", timeout=5) as conn:
        await conn.send("healed")
        assert await conn.recv(timeout=5) == "healed"


# -- limits ---------------------------------------------------------------------------------------


async def test_pool_timeout_carries_max_size_and_timeout(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """acquire(timeout=...) at the cap raises PoolTimeout whose attributes and message carry
    max_size and the timeout used."""
    pool = make_pool(server.base_uri, max_size=1)
    async with pool.acquire("/t"):
        with pytest.raises(PoolTimeout) as info:
            await pool.acquire("/t", timeout=0.05)
    error = info.value
    assert error.max_size == 1
    assert error.timeout == 0.05
    assert "max_size=1" in str(error)
    assert "0.05" in str(error)


async def test_global_cap_applies_across_uris_and_evicts_idle_connections(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """max_size caps all URIs together: a third URI waits while two are in use, and gets a slot
    by evicting another URI's idle connection."""
    pool = make_pool(server.base_uri, max_size=2)
    async with pool.acquire("/one"), pool.acquire("/two"):
        with pytest.raises(PoolTimeout):
            await pool.acquire("/three", timeout=0.05)
    async with pool.acquire("/three") as third:
        await third.send("3")
        assert await third.recv(timeout=5) == "3"
    total = pool.stats()
    assert total.size <= 2
    assert total.closed.get("evicted") == 1


async def test_waiter_gets_released_connection(server: WSServer, make_pool: PoolFactory) -> None:
    """A task waiting at the cap is handed the connection released by another task."""
    pool = make_pool(server.base_uri, max_size=1)
    conn = await pool.acquire("/w")
    waiter = asyncio.create_task(pool.acquire("/w", timeout=5).__aenter__())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await pool.release(conn)
    handed = await waiter
    assert handed is conn
    await pool.release(handed)


# -- TLS ------------------------------------------------------------------------------------------


async def test_tls_connections_are_verified_and_reused(
    no_fd_leak: FdTracker,
    tls_server: WSServer,
    tls_client_context: ssl.SSLContext,
    make_pool: PoolFactory,
) -> None:
    """wss:// with a context trusting the test CA works, and connections are reused."""
    pool = make_pool(tls_server.base_uri, ssl=tls_client_context)
    for i in range(3):
        async with pool.acquire("/secure") as conn:
            await conn.send({"i": i})
            assert await conn.recv(timeout=5) == {"i": i}
    assert tls_server.handshakes == 1
    assert tls_server.scheme == "wss"


@pytest.fixture
async def tls_server_process(tls_cert_files: TLSFiles) -> AsyncIterator[ServerProcess]:
    """A wss:// server in a child process (handshake failures stay out of the test's loop)."""
    async with ServerProcess(
        certfile=str(tls_cert_files.cert), keyfile=str(tls_cert_files.key)
    ) as srv:
        yield srv


async def test_tls_verification_is_on_by_default(
    tls_server_process: ServerProcess, make_pool: PoolFactory
) -> None:
    """Without an ssl= context the system trust store is used: the test CA is not trusted and
    the handshake fails with TLSError at once (fail fast, not an acquire timeout)."""
    pool = make_pool(tls_server_process.base_uri, acquire_timeout=30)
    with pytest.raises(TLSError, match="certificate verification failed"):
        async with pool.acquire("/secure"):
            pass


async def test_untrusted_certificate_raises_tls_error(
    tls_server_process: ServerProcess,
    tls_untrusted_client_context: ssl.SSLContext,
    make_pool: PoolFactory,
) -> None:
    """A context trusting another CA fails the handshake with TLSError."""
    pool = make_pool(tls_server_process.base_uri, ssl=tls_untrusted_client_context)
    with pytest.raises(TLSError):
        await pool.acquire("/secure", timeout=30)


async def test_tls_to_a_process_server_with_trusted_ca_works(
    tls_server_process: ServerProcess, tls_client_context: ssl.SSLContext, make_pool: PoolFactory
) -> None:
    """The same out-of-process wss:// server accepts a client that trusts the test CA."""
    pool = make_pool(tls_server_process.base_uri, ssl=tls_client_context)
    async with pool.acquire("/secure") as conn:
        await conn.send({"tls": True})
        assert await conn.recv(timeout=5) == {"tls": True}


async def test_tls_connection_survives_reset_and_reconnects(
    tls_server: WSServer, tls_client_context: ssl.SSLContext, make_pool: PoolFactory
) -> None:
    """A TLS connection reset by the server is replaced on the next acquire."""
    pool = make_pool(tls_server.base_uri, ssl=tls_client_context)
    async with pool.acquire("/secure") as conn:
        pass
    tls_server.reset_all()
    await asyncio.wait_for(conn.ws.wait_closed(), 5)
    async with pool.acquire("/secure") as fresh:
        await fresh.send("x")
        assert await fresh.recv(timeout=5) == "x"
    assert tls_server.handshakes == 2


# -- errors and secrets ---------------------------------------------------------------------------


async def test_rejected_token_raises_authentication_error_without_leaking_it(
    make_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP 401 on the upgrade is an AuthenticationError at once; the token appears in no
    message, repr, log record or stats."""
    caplog.set_level(logging.DEBUG)
    srv = WSServer(token="the-right-one")
    await srv.start()
    try:
        pool = make_pool(f"{srv.base_uri}/feed?token={CANARY}", max_size=2)
        with pytest.raises(AuthenticationError) as info:
            await pool.acquire(f"{srv.base_uri}/feed?token={CANARY}&stream=x", timeout=5)
        good = await pool.acquire(f"{srv.base_uri}/feed?token=the-right-one")
        await pool.release(good)
        # Everything but the test server's own log lines (it is not part of poolkit).
        client_records = [r for r in caplog.records if not r.name.startswith("websockets.server")]
        assert any(r.name == "websockets.client" for r in client_records)
        texts = [
            str(info.value),
            repr(info.value),
            repr(pool),
            repr(good),
            repr(pool.stats()),
            str(pool.stats().as_dict()),
            repr(pool.keyed),
            *(r.getMessage() for r in client_records),
            *(str(r.exc_info[1]) for r in client_records if r.exc_info),
        ]
        for text in texts:
            assert CANARY not in text
            assert "the-right-one" not in text
        assert "401" in str(info.value)
    finally:
        await srv.stop()


async def test_header_and_password_secrets_are_scrubbed_from_websockets_debug_logs(
    server: WSServer, make_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """websockets logs the request line and headers at DEBUG: the Authorization header, the
    URI password (and the Basic credential derived from it) appear there only as ***."""
    caplog.set_level(logging.DEBUG)
    uri = f"ws://app:{CANARY}@127.0.0.1:{server.port}/private?api_key={CANARY}"
    pool = make_pool(headers={"Authorization": f"Bearer {CANARY}-hdr"})
    async with pool.acquire(uri) as conn:
        await conn.send("hi")
        assert await conn.recv(timeout=5) == "hi"
    client = [r.getMessage() for r in caplog.records if r.name == "websockets.client"]
    assert any("Authorization: ***" in line for line in client), client
    assert any("api_key=***" in line for line in client), client
    for text in [*client, repr(pool), repr(conn), str(pool.stats().as_dict())]:
        assert CANARY not in text


async def test_connection_refused_ends_in_pool_timeout_with_connect_error_cause(
    refused_port: ProxyEndpoint, make_pool: PoolFactory
) -> None:
    """Nothing listening: the acquire ends in PoolTimeout with the ConnectError chained."""
    pool = make_pool(f"ws://{refused_port.host}:{refused_port.port}", reconnect_initial_delay=0.01)
    with pytest.raises(PoolTimeout) as info:
        await pool.acquire("/x", timeout=0.2)
    assert isinstance(info.value.__cause__, ConnectError)
    assert pool.stats().connect_errors >= 1


def test_invalid_configuration_names_the_field() -> None:
    """Bad URIs, policies and sizes raise ConfigError naming the offending field."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"base_uri": "http://h"}, "base_uri"),
        ({"base_uri": "ws://"}, "base_uri"),
        ({"decode": "yaml"}, "decode"),
        ({"idle_messages": "keep"}, "idle_messages"),
        ({"max_size": 0}, "max_size"),
        ({"max_size": 2, "max_per_uri": 3}, "max_per_uri"),
        ({"min_per_uri": -1}, "min_per_uri"),
        ({"min_size": 1}, "min_size"),
        ({"ping_interval": 0}, "ping_interval"),
        ({"ssl": True}, "ssl"),
        ({"acquire_timeout": -1}, "acquire_timeout"),
        ({"config": {"max_size": 1}}, "config"),
    ]
    for kwargs, field in cases:
        kwargs.setdefault("environ", {})
        with pytest.raises(ConfigError) as info:
            create_pool(**kwargs)
        assert info.value.field == field, kwargs
    with pytest.raises(ConfigError, match="wss://"):
        WebSocketConnector("ws://h/x", ssl=ssl.create_default_context())


def test_config_from_environment_and_config_object() -> None:
    """WEBSOCKET_POOL_* variables configure the pool; a PoolConfig supplies timings and sizes."""
    pool = create_pool("ws://h", environ={"WEBSOCKET_POOL_ACQUIRE_TIMEOUT": "2.5"})
    assert pool.config.acquire_timeout == 2.5
    assert pool.config.min_size == 0
    assert pool.max_size == 10
    pool = create_pool("ws://h", PoolConfig(max_size=4, min_size=1, check_timeout=1.0))
    assert (pool.max_size, pool.config.max_size, pool.config.min_size) == (4, 4, 1)
    assert pool.config.check_timeout == 1.0
    pool = create_pool("ws://h", max_size=8, max_per_uri=2, environ={})
    assert (pool.max_size, pool.config.max_size) == (8, 2)


# -- stats and lifecycle --------------------------------------------------------------------------


async def test_stats_count_messages_bytes_and_per_uri_totals(
    server: WSServer, make_pool: PoolFactory
) -> None:
    """stats() adds messages and bytes (UTF-8 size) to the core snapshot's extra, in total and
    per URI (stats_by_uri())."""
    pool = make_pool(server.base_uri)
    async with pool.acquire("/a") as a:
        await a.send("héllo")  # 6 bytes in UTF-8
        await a.recv(timeout=5)
    async with pool.acquire("/b") as b:
        await b.send(b"1234")
        await b.recv(timeout=5)
        await b.send({"k": 1})  # '{"k":1}' = 7 bytes
        await b.recv(timeout=5)
    stats = pool.stats()
    by_uri = pool.stats_by_uri()
    per_a = by_uri[server.uri("/a")].extra
    per_b = by_uri[server.uri("/b")].extra
    assert (per_a["messages_sent"], per_a["bytes_sent"], per_a["bytes_received"]) == (1, 6, 6)
    assert (per_b["messages_sent"], per_b["messages_received"], per_b["bytes_sent"]) == (2, 2, 11)
    assert stats.extra["messages_sent"] == 3
    assert stats.extra["bytes_received"] == 17
    assert stats.acquires == 2
    assert by_uri[server.uri("/a")].acquires == 1
    assert stats.as_dict()["extra"]["messages_sent"] == 3


async def test_close_closes_every_connection_and_leaks_nothing(
    no_fd_leak: FdTracker, server: WSServer
) -> None:
    """close() closes idle and released connections of every URI; the server sees them go."""
    pool = create_pool(server.base_uri, environ={})
    async with pool:
        for path in ("/1", "/2", "/3"):
            async with pool.acquire(path) as conn:
                await conn.send("x")
                await conn.recv(timeout=5)
        assert len(server.active) == 3
    assert pool.closed
    await server.wait_for(lambda: not server.active)
    await pool.close()  # idempotent


async def test_terminate_aborts_connections_at_once(server: WSServer) -> None:
    """terminate() drops every connection without a closing handshake."""
    pool = create_pool(server.base_uri, environ={})
    async with pool.acquire("/t") as conn:
        pass
    pool.terminate()
    await server.wait_for(lambda: not server.active)
    assert conn.closed or conn.ws.transport.is_closing()
