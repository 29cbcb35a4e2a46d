"""The HTTP backend when the server or the network misbehaves: errors, safe retries, no reuse
of a dead socket, nothing hanging past its timeout."""

from __future__ import annotations

import asyncio
import gc
import ssl
import threading
import warnings
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from backends.http_server import HTTPTestServer, ServerFactory, serve, server_factory
from fix_proxy import ProxyFactory
from fix_servers import FdTracker, fd_count
from fix_tls import TLSFiles
from poolkit.http import ConnectError, HTTPPool, PoolTimeout, create_pool


@pytest.fixture
async def http_server() -> AsyncIterator[HTTPTestServer]:
    """A plain-HTTP test server on 127.0.0.1, closed at teardown."""
    async with serve() as server:
        yield server


@pytest.fixture
async def http_server_factory() -> AsyncIterator[ServerFactory]:
    """Start test servers with custom settings; all closed at teardown."""
    async with server_factory() as make:
        yield make


async def _settle(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def _use_every_socket(pool: HTTPPool, count: int) -> None:
    """Send one request on each of ``count`` sockets at once (all proxied links are set up)."""
    clients = [await pool.acquire() for _ in range(count)]
    try:
        await asyncio.gather(*(client.get("/ok") for client in clients))
    finally:
        for client in clients:
            await pool.release(client)


async def test_idle_socket_closed_by_server_is_replaced_without_error(
    http_server_factory: ServerFactory,
) -> None:
    """A keep-alive socket the server closed while idle is dropped, never sent a request."""
    server = await http_server_factory(keepalive_timeout=0.05)
    async with create_pool(server.url, max_size=2) as pool:
        assert (await pool.get("/ok")).status == 200
        await server.wait_connections(0)  # the server timed the connection out
        core = pool.pool()
        async with asyncio.timeout(5):  # a maintenance pass drops it without any I/O
            while pool.stats().closed.get("broken") != 1:
                await core.run_maintenance()
                await asyncio.sleep(0.01)
        assert (await pool.get("/ok")).status == 200
        extra = pool.stats().extra
        assert (extra["http_retries"], extra["http_errors"]) == (0, 0)
        assert server.accepted == 2


async def test_connection_close_response_socket_is_not_reused(http_server: HTTPTestServer) -> None:
    """After ``Connection: close`` the socket is discarded at release; the next borrow gets a new one."""
    async with create_pool(http_server.url, max_size=1) as pool:
        async with pool.acquire() as client:
            response = await client.get("/close")
            assert response.headers["Connection"] == "close"
            assert not client.connection.is_alive()
        assert (await pool.get("/ok")).status == 200
        assert pool.stats().closed.get("broken") == 1
        assert http_server.accepted == 2


async def test_request_after_connection_close_in_same_borrow_opens_one_new_socket(
    http_server: HTTPTestServer,
) -> None:
    """Within a borrow, a request after ``Connection: close`` reconnects the same slot."""
    async with create_pool(http_server.url, max_size=1) as pool, pool.acquire() as client:
        await client.get("/close")
        assert (await client.get("/ok")).status == 200
        assert client.connection.sockets_opened == 2
        assert pool.stats().extra["http_reconnects"] == 1
        await http_server.wait_connections(1)
        assert http_server.accepted == 2


async def test_server_error_status_is_a_response_and_keeps_the_socket(
    http_server: HTTPTestServer,
) -> None:
    """A 5xx is returned (not raised, not retried) and the keep-alive socket is reused."""
    async with create_pool(http_server.url, max_size=1) as pool:
        for _ in range(3):
            assert (await pool.get("/status/503")).status == 503
        extra = pool.stats().extra
        assert (extra["http_responses_5xx"], extra["http_retries"]) == (3, 0)
        assert http_server.requests["/status/503"] == 3
        assert http_server.accepted == 1


async def test_reset_mid_response_raises_payload_error_and_discards_socket(
    http_server: HTTPTestServer,
) -> None:
    """A connection reset mid-body raises ClientPayloadError; the dead socket is not reused."""
    async with create_pool(http_server.url, max_size=1) as pool:
        with pytest.raises(aiohttp.ClientPayloadError):
            await pool.get("/reset-mid-body")
        assert http_server.requests["/reset-mid-body"] == 1
        stats = pool.stats()
        assert (stats.extra["http_errors"], stats.extra["http_retries"]) == (1, 0)
        assert stats.closed.get("broken") == 1
        assert (await pool.get("/ok")).status == 200


async def test_reset_after_partial_head_is_not_retried(http_server: HTTPTestServer) -> None:
    """Bytes of a response arrived before the reset: the GET fails and is not repeated."""
    async with create_pool(http_server.url, max_size=1) as pool, pool.acquire() as client:
        await client.get("/ok")
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.get("/partial-head")
        assert http_server.requests["/partial-head"] == 1
        assert pool.stats().extra["http_retries"] == 0
        assert (await client.get("/ok")).status == 200


async def test_reused_socket_dropped_before_any_byte_is_retried_once(
    http_server: HTTPTestServer,
) -> None:
    """An idempotent request on a pooled socket that closes without answering is retried once."""
    async with create_pool(http_server.url, max_size=1) as pool:
        await pool.get("/ok")
        response = await pool.get("/drop-once/get")
        assert response.text() == "second try of get"
        response = await pool.put("/drop-once/put", data=b"same body")
        assert response.status == 200
        extra = pool.stats().extra
        assert (extra["http_retries"], extra["http_errors"]) == (2, 0)
        assert http_server.requests["/drop-once/get"] == 2
        assert http_server.accepted == 3


async def test_post_is_never_retried(http_server: HTTPTestServer) -> None:
    """A POST on a pooled socket that closes without answering fails; it is sent once."""
    async with create_pool(http_server.url, max_size=1) as pool:
        await pool.get("/ok")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await pool.post("/drop-once/post", json={"pay": 1})
        assert http_server.requests["/drop-once/post"] == 1
        assert pool.stats().extra["http_retries"] == 0
        assert pool.stats().extra["http_errors"] == 1


async def test_failure_on_a_socket_opened_for_the_request_is_not_retried(
    http_server: HTTPTestServer,
) -> None:
    """A new socket that fails is a server problem, not a stale keep-alive: no retry."""
    async with create_pool(http_server.url, max_size=1) as pool, pool.acquire() as client:
        await client.get("/close")  # the next request opens a fresh socket in this slot
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.get("/drop-once/fresh")
        assert http_server.requests["/drop-once/fresh"] == 1
        assert pool.stats().extra["http_retries"] == 0


async def test_retry_happens_at_most_once(http_server: HTTPTestServer) -> None:
    """A GET dropped again on its retry fails; it was sent exactly twice."""
    async with create_pool(http_server.url, max_size=1) as pool:
        await pool.get("/ok")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await pool.get("/drop")
        assert http_server.requests["/drop"] == 2
        assert pool.stats().extra["http_retries"] == 1


async def test_non_replayable_body_and_disabled_retry_are_not_retried(
    http_server: HTTPTestServer,
) -> None:
    """A streamed body cannot be resent, and retry=False turns retries off."""

    async def body() -> AsyncIterator[bytes]:
        yield b"streamed"

    async with create_pool(http_server.url, max_size=1) as pool:
        await pool.get("/ok")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await pool.put("/drop-once/stream", data=body())
        await pool.get("/ok")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await pool.get("/drop-once/off", retry=False)
    async with create_pool(http_server.url, max_size=1, retry_idempotent=False) as pool:
        await pool.get("/ok")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await pool.get("/drop-once/pool-off")
    for path in ("/drop-once/stream", "/drop-once/off", "/drop-once/pool-off"):
        assert http_server.requests[path] == 1


async def test_never_answering_server_times_out_and_socket_is_discarded(
    http_server: HTTPTestServer,
) -> None:
    """A request the server never answers ends at its timeout; that socket is not reused."""
    async with create_pool(http_server.url, max_size=1, request_timeout=0.2) as pool:
        async with asyncio.timeout(10):
            with pytest.raises(TimeoutError):
                await pool.get("/never")
            with pytest.raises(TimeoutError):
                async with pool.stream("GET", "/never"):
                    pass
        assert pool.stats().closed.get("broken") == 2
        assert (await pool.get("/ok", timeout=5)).status == 200


async def test_blackholed_network_times_out_instead_of_hanging(
    http_server: HTTPTestServer, tcp_proxy: ProxyFactory
) -> None:
    """When the network swallows every byte, requests end at their timeout."""
    proxy = await tcp_proxy("127.0.0.1", http_server.port)
    async with create_pool(
        f"http://127.0.0.1:{proxy.port}", max_size=2, request_timeout=0.2
    ) as pool:
        assert (await pool.get("/ok")).status == 200
        proxy.blackhole()
        async with asyncio.timeout(10):
            with pytest.raises(TimeoutError):
                await pool.get("/ok")
        proxy.restore()
        assert (await pool.get("/ok")).status == 200
    await _settle(lambda: proxy.active == 0)


async def test_reset_of_idle_sockets_is_detected_and_they_are_replaced(
    http_server: HTTPTestServer, tcp_proxy: ProxyFactory
) -> None:
    """Idle sockets killed by a TCP RST are dropped; later requests succeed on new ones."""
    proxy = await tcp_proxy("127.0.0.1", http_server.port)
    async with create_pool(f"http://127.0.0.1:{proxy.port}", min_size=3, max_size=3) as pool:
        await _use_every_socket(pool, 3)
        assert proxy.connection_count == 3
        await proxy.reset()
        await _settle(lambda: proxy.active == 0)
        for _ in range(6):
            assert (await pool.get("/ok")).status == 200
        assert pool.stats().extra["http_errors"] == 0
        assert proxy.connection_count <= 6
    await _settle(lambda: proxy.active == 0)


async def test_unreachable_server_gives_connect_error_then_heals(
    http_server: HTTPTestServer, tcp_proxy: ProxyFactory
) -> None:
    """With the server unreachable, acquire fails with the connect error; the pool heals later."""
    proxy = await tcp_proxy("127.0.0.1", http_server.port)
    async with create_pool(
        f"http://127.0.0.1:{proxy.port}",
        min_size=0,
        max_size=2,
        acquire_timeout=0.3,
        reconnect_initial_delay=0.01,
        reconnect_max_delay=0.05,
    ) as pool:
        assert (await pool.get("/ok")).status == 200
        await proxy.stop()
        with pytest.raises(PoolTimeout) as info:
            await pool.get("/ok")
        assert isinstance(info.value.__cause__, ConnectError)
        assert f"127.0.0.1:{proxy.port}" in str(info.value.__cause__)
        await proxy.start()
        async with asyncio.timeout(10):
            while True:
                try:
                    assert (await pool.get("/ok")).status == 200
                    break
                except PoolTimeout:
                    await asyncio.sleep(0.05)
    await _settle(lambda: proxy.active == 0)


async def test_borrower_that_leaves_a_request_running_gets_it_aborted(
    http_server: HTTPTestServer,
) -> None:
    """A task still using a client after the borrow ended is cut off; the socket is discarded."""
    async with create_pool(http_server.url, max_size=1) as pool:
        client = await pool.acquire()
        stray = asyncio.create_task(client.connection.get("/slow", params={"delay": "5"}))
        await asyncio.sleep(0.05)
        await pool.release(client)
        with pytest.raises(aiohttp.ClientError):
            await stray
        await _settle(lambda: pool.stats().reset_failures == 1)
        assert (await pool.get("/ok")).status == 200


class _ThreadedServer:
    """An HTTP test server running on its own event loop in a thread."""

    def __init__(self, server: HTTPTestServer) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = server
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> HTTPTestServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_terminate_after_event_loop_closed_releases_sockets_silently(
    no_fd_leak_sync: FdTracker,
    http_server: HTTPTestServer,
    tls: bool,
    tls_server_context: ssl.SSLContext,
    tls_cert_files: TLSFiles,
) -> None:
    """terminate() on a closed loop closes every client socket without any warning."""
    server_class = type(http_server)
    with _ThreadedServer(server_class(ssl_context=tls_server_context if tls else None)) as server:
        loop = asyncio.new_event_loop()
        pool = create_pool(server.url, min_size=2, max_size=3, cafile=tls_cert_files.ca)

        async def scenario() -> None:
            await pool.open()
            client = await pool.acquire()  # held by a borrower when everything stops
            assert (await client.get("/ok")).status == 200

        try:
            loop.run_until_complete(scenario())
        finally:
            loop.close()
        before = fd_count()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pool.terminate()
            gc.collect()
        assert fd_count() <= before - 2
