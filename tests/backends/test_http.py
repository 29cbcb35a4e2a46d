"""The HTTP backend against a real aiohttp server on loopback: pooling, requests, origins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

import poolkit
from backends.http_server import HTTPTestServer, serve
from fix_servers import FdTracker
from poolkit.http import (
    ConfigError,
    CrossOriginError,
    HTTPClient,
    HTTPConnection,
    HTTPConnector,
    HTTPPool,
    HTTPStatusError,
    PoolTimeout,
    PoolUsageError,
    create_pool,
)


@pytest.fixture
async def http_server() -> AsyncIterator[HTTPTestServer]:
    """A plain-HTTP test server on 127.0.0.1, closed at teardown."""
    async with serve() as server:
        yield server


async def test_many_tasks_never_open_more_than_max_size_sockets(
    no_fd_leak: FdTracker, http_server: HTTPTestServer
) -> None:
    """1,000 requests from 50 tasks over max_size 10: the server sees at most 10 connections."""
    async with create_pool(http_server.url, max_size=10, min_size=0) as pool:

        async def worker(n: int) -> None:
            for i in range(20):
                if i % 2:
                    response = await pool.get(f"/ok?n={n}")
                    assert response.text() == "ok"
                else:
                    async with pool.acquire() as client:
                        assert (await client.get("/json")).json()["hello"] == "world"

        await asyncio.gather(*(worker(n) for n in range(50)))
        stats = pool.stats()
        assert http_server.accepted <= 10
        assert stats.created == http_server.accepted
        assert stats.extra["http_requests"] == 1000
        assert stats.extra["http_responses_2xx"] == 1000
        assert stats.extra["http_errors"] == 0
        assert stats.size <= 10
    await http_server.wait_connections(0)


async def test_borrowed_client_sends_every_request_on_one_socket(
    http_server: HTTPTestServer,
) -> None:
    """Requests inside one acquire() block share one keep-alive socket."""
    async with create_pool(http_server.url, max_size=4) as pool, pool.acquire() as client:
        for _ in range(5):
            assert (await client.get("/ok")).status == 200
        assert client.connection.responses == 5
        assert http_server.accepted == 1


async def test_one_shot_request_returns_fully_read_response(
    http_server: HTTPTestServer,
) -> None:
    """pool.request() reads the body and has given the connection back when it returns."""
    async with create_pool(http_server.url, max_size=2) as pool:
        response = await pool.request("GET", "/json")
        assert response.status == 200
        assert response.ok
        assert response.reason == "OK"
        assert response.content_type == "application/json"
        assert response.charset == "utf-8"
        assert response.json() == {"hello": "world", "n": [1, 2, 3]}
        assert response.text().startswith("{")
        assert response.version == "1.1"
        assert str(response.url) == http_server.url + "/json"
        stats = pool.stats()
        assert (stats.in_use, stats.idle) == (0, 1)


async def test_verbs_send_method_body_params_and_headers(http_server: HTTPTestServer) -> None:
    """get/post/put/patch/delete/options/head carry their method, body, params and headers."""
    async with create_pool(http_server.url, headers={"User-Agent": "poolkit-test"}) as pool:
        async with pool.acquire() as client:
            echo = (await client.post("/echo", json={"a": 1}, params={"q": "x y"})).json()
            assert echo["method"] == "POST"
            assert echo["body"] == '{"a": 1}'
            assert echo["query"] == {"q": "x y"}
            assert echo["headers"]["User-Agent"] == "poolkit-test"
            echo = (await client.put("/echo", data=b"raw", headers={"X-One": "1"})).json()
            assert (echo["method"], echo["body"], echo["headers"]["X-One"]) == ("PUT", "raw", "1")
            assert (await client.patch("/echo", data="text")).json()["method"] == "PATCH"
            assert (await client.delete("/echo")).json()["method"] == "DELETE"
            assert (await client.options("/echo")).json()["method"] == "OPTIONS"
            head = await client.head("/ok")
            assert (head.status, head.body) == (200, b"")
            generic = await client.request("get", "/echo")
            assert generic.json()["method"] == "GET"
        assert http_server.accepted == 1


async def test_stream_reads_body_in_chunks_and_keeps_the_socket(
    http_server: HTTPTestServer,
) -> None:
    """A stream() read to the end leaves the socket alive for the next request."""
    async with create_pool(http_server.url) as pool, pool.acquire() as client:
        async with client.stream("GET", "/stream/5") as response:
            assert response.status == 200
            chunks = [chunk async for chunk in response.iter_chunks(4)]
        assert b"".join(chunks) == b"chunk0;chunk1;chunk2;chunk3;chunk4;"
        async with client.stream("GET", "/json") as response:
            assert (await response.json())["hello"] == "world"
        assert client.connection.is_alive()
        assert http_server.accepted == 1


async def test_unread_stream_closes_its_socket_which_is_never_reused(
    http_server: HTTPTestServer,
) -> None:
    """Leaving a stream() block with body bytes unread closes that socket; the pool replaces it."""
    async with create_pool(http_server.url, max_size=1) as pool:
        async with pool.stream("GET", "/bytes/2000000") as response:
            assert len(await response.content.read(10)) == 10
        assert (await pool.get("/ok")).status == 200
        assert pool.stats().closed.get("broken") == 1  # dropped, at the latest when next acquired
        assert http_server.accepted == 2


async def test_other_origin_gets_its_own_pool_and_client_base(
    http_server: HTTPTestServer,
) -> None:
    """acquire(absolute_url) borrows from that origin's pool; relative paths use its path."""
    other = http_server.url_for("/nested/", host="localhost")
    async with create_pool(http_server.url, max_size=2) as pool:
        async with pool.acquire(other) as client:
            echo = (await client.get("echo")).json()
            assert echo["path"] == "/nested/echo"
            assert str(client.base_url) == other
        one_shot = await pool.get(http_server.url_for("/json", host="localhost"))
        assert one_shot.status == 200
        assert pool.origins() == [http_server.url, http_server.url_for("", host="localhost")]
        by_origin = pool.stats_by_origin()
        assert by_origin[http_server.url_for("", host="localhost")].extra["http_requests"] == 2
        assert http_server.accepted == 2


async def test_max_total_caps_sockets_across_origins(http_server: HTTPTestServer) -> None:
    """With max_total, borrowers of two origins together never hold more sockets than the cap."""
    async with create_pool(
        http_server.url, max_size=3, max_total=3, min_size=0, acquire_timeout=0.2
    ) as pool:
        first = [await pool.acquire() for _ in range(2)]
        other = await pool.acquire(http_server.url_for("/", host="localhost"))
        with pytest.raises(PoolTimeout):
            await pool.acquire(http_server.url_for("/", host="localhost"))
        with pytest.raises(PoolTimeout):
            await pool.acquire()
        assert http_server.accepted == 3
        for client in [*first, other]:
            await pool.release(client)
        assert pool.stats().size <= 3


async def test_client_refuses_use_and_release_after_release(http_server: HTTPTestServer) -> None:
    """A released client raises PoolUsageError on use, and on a second release."""
    async with create_pool(http_server.url) as pool:
        client = await pool.acquire()
        assert isinstance(client, HTTPClient)
        await pool.release(client)
        assert client.released
        with pytest.raises(PoolUsageError, match="released"):
            await client.get("/ok")
        with pytest.raises(PoolUsageError, match="already released"):
            await pool.release(client)
        async with pool.acquire() as kept:
            pass
        with pytest.raises(PoolUsageError):
            kept.stream("GET", "/ok")
        assert "released" in repr(kept)


async def test_requests_and_redirects_stay_on_the_connection_origin(
    http_server: HTTPTestServer,
) -> None:
    """Same-origin redirects are followed; another origin raises CrossOriginError."""
    away = http_server.url_for("/ok", host="localhost")
    async with create_pool(http_server.url) as pool, pool.acquire() as client:
        followed = await client.get("/redirect")
        assert (followed.status, str(followed.url)) == (200, http_server.url + "/ok")
        not_followed = await client.get("/redirect", allow_redirects=False)
        assert not_followed.status == 302
        with pytest.raises(CrossOriginError, match="not on origin"):
            await client.get(away)
        with pytest.raises(CrossOriginError):
            await client.get("/redirect-away", params={"to": away})
        assert (await client.get("/ok")).status == 200


async def test_relative_url_needs_a_base_url(http_server: HTTPTestServer) -> None:
    """A pool without base_url refuses relative URLs and acquire() without a URL."""
    async with create_pool(max_size=2) as pool:
        with pytest.raises(PoolUsageError, match="no base_url"):
            await pool.get("/ok")
        with pytest.raises(PoolUsageError, match="no base_url"):
            pool.acquire()
        assert (await pool.get(http_server.url + "/ok")).status == 200


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"base_url": "ftp://example.com"}, "url"),
        ({"base_url": "http://example.com/?token=abc"}, "base_url"),
        ({"base_url": "http://127.0.0.1:8080", "request_timeout": -1}, "request_timeout"),
        ({"base_url": "http://127.0.0.1:8080", "health_status": 999}, "health_status"),
        ({"base_url": "http://127.0.0.1:8080", "health_path": "health"}, "health_path"),
        ({"base_url": "http://127.0.0.1:8080", "ssl": "yes"}, "ssl"),
        ({"base_url": "http://127.0.0.1:8080", "max_size": 0}, "max_size"),
        ({"base_url": "http://127.0.0.1:8080", "max_total": 0}, "max_total"),
    ],
)
def test_invalid_configuration_names_the_field(kwargs: dict[str, object], field: str) -> None:
    """create_pool() rejects a bad value with a ConfigError naming the field."""
    base_url = kwargs.pop("base_url")
    with pytest.raises(ConfigError) as info:
        create_pool(base_url, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert "abc" not in str(info.value)


async def test_unsupported_request_option_is_a_type_error(http_server: HTTPTestServer) -> None:
    """Per-request TLS/proxy settings are refused by name: they belong to the pool."""
    async with create_pool(http_server.url) as pool:
        with pytest.raises(TypeError, match="ssl"):
            await pool.get("/ok", ssl=False)  # type: ignore[call-arg]
        assert (await pool.get("/ok")).status == 200
        extra = pool.stats().extra
        assert (extra["http_requests"], extra["http_errors"]) == (1, 0)  # refused before sending


async def test_health_probe_checks_idle_connections(http_server: HTTPTestServer) -> None:
    """health_path is probed on idle connections; a failing probe replaces the connection."""
    async with create_pool(
        http_server.url, health_path="/health", health_status=200, min_size=1, max_size=2
    ) as pool:
        assert pool.config.check_on_acquire == "never"
        core = pool.pool()
        await core.run_maintenance(now=time.monotonic() + 60)
        await _settle(lambda: http_server.requests["/health"] == 1)
        assert pool.stats().check_failures == 0
        http_server.health_status = 503
        await core.run_maintenance(now=time.monotonic() + 120)
        await _settle(lambda: pool.stats().check_failures == 1)
        await _settle(lambda: http_server.accepted == 2)
        assert pool.stats().extra["http_requests"] == 0  # probes are not counted as requests
        assert (await pool.get("/ok")).status == 200


async def test_open_warms_min_size_connections(http_server: HTTPTestServer) -> None:
    """open() opens min_size sockets to the base origin before any request."""
    async with create_pool(http_server.url, min_size=3, max_size=5) as pool:
        assert http_server.accepted == 3
        assert pool.stats().idle == 3


async def test_idle_connections_expire_after_keepalive_window(http_server: HTTPTestServer) -> None:
    """Idle sockets above min_size are closed after max_idle_time (default 15 s for HTTP)."""
    async with create_pool(http_server.url, min_size=1, max_size=4) as pool:
        assert pool.config.max_idle_time == 15.0
        clients = [await pool.acquire() for _ in range(3)]
        for client in clients:
            await pool.release(client)
        await pool.pool().run_maintenance(now=time.monotonic() + 16)
        await _settle(lambda: pool.stats().size == 1)
        await http_server.wait_connections(1)


async def test_stats_count_status_classes_and_bytes(http_server: HTTPTestServer) -> None:
    """Responses are counted by status class; bytes in and out are counted on the wire."""
    async with create_pool(http_server.url) as pool:
        for code in (204, 302, 404, 500, 503):
            await pool.get(f"/status/{code}", allow_redirects=False)
        await pool.post("/echo", data=b"x" * 1000)
        extra = pool.stats().extra
        assert extra["http_requests"] == 6
        assert extra["http_responses_2xx"] == 2
        assert extra["http_responses_3xx"] == 1
        assert extra["http_responses_4xx"] == 1
        assert extra["http_responses_5xx"] == 2
        assert extra["http_bytes_sent"] > 1000
        assert extra["http_bytes_received"] > 0


async def test_raise_for_status_raises_http_status_error(http_server: HTTPTestServer) -> None:
    """raise_for_status() raises HTTPStatusError with the status and method; 2xx passes."""
    async with create_pool(http_server.url) as pool:
        response = await pool.get("/status/404")
        with pytest.raises(HTTPStatusError) as info:
            response.raise_for_status()
        assert (info.value.status, info.value.method) == (404, "GET")
        assert info.value.response is response
        with pytest.raises(HTTPStatusError, match="503"):
            await pool.get("/status/503", raise_for_status=True)
        with pytest.raises(HTTPStatusError, match="500"):
            async with pool.stream("GET", "/status/500", raise_for_status=True):
                pass
        assert (await pool.get("/ok")).raise_for_status().status == 200
        assert isinstance(info.value, poolkit.PoolError)


async def test_close_closes_every_socket(
    no_fd_leak: FdTracker, http_server: HTTPTestServer
) -> None:
    """close() closes every socket of every origin; nothing is left open on either side."""
    pool = create_pool(http_server.url, min_size=2, max_size=4)
    await pool.open()
    await pool.get(http_server.url_for("/ok", host="localhost"))
    held = await pool.acquire()
    await pool.release(held)
    await pool.close()
    await pool.close()  # idempotent
    assert pool.closed
    await http_server.wait_connections(0)
    assert pool.stats().size == 0


async def test_connector_works_with_a_plain_core_pool(http_server: HTTPTestServer) -> None:
    """HTTPConnector plugs into poolkit.Pool directly; the connection has the request methods."""
    connector = HTTPConnector(http_server.url + "/base/", request_timeout=5)
    assert connector.describe() == http_server.url + "/base/"
    async with poolkit.Pool(connector, max_size=2) as pool, pool.acquire() as conn:
        assert isinstance(conn, HTTPConnection)
        echo = (await conn.get("echo")).json()
        assert echo["path"] == "/base/echo"
        assert pool.stats().extra["http_requests"] == 1


async def test_repr_is_a_one_line_state_dump(http_server: HTTPTestServer) -> None:
    """repr(pool) shows name, base, sizes and caps; repr(client) shows its connection."""
    async with create_pool(http_server.url, max_size=3, name="api") as pool:
        assert isinstance(pool, HTTPPool)
        text = repr(pool)
        assert text.startswith("<HTTPPool 'api' base=" + http_server.url)
        assert "size=1 idle=1 in_use=0 waiting=0 max_size=3 max_total=None" in text
        async with pool.acquire() as client:
            assert "HTTPConnection " + http_server.url + " open" in repr(client)
        assert pool.pool().name == f"api[{http_server.url}]"


async def _settle(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Run the loop until ``predicate()`` is true (background tasks finish)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_configuration_layers_defaults_environment_and_keywords() -> None:
    """HTTP defaults < HTTP_POOL_* variables < keyword arguments; a given config is used as is."""
    environ = {"HTTP_POOL_MAX_SIZE": "7", "HTTP_POOL_ACQUIRE_TIMEOUT": "3"}
    pool = create_pool("http://127.0.0.1:1", environ=environ, acquire_timeout=9)
    assert (pool.config.max_size, pool.config.acquire_timeout) == (7, 9)
    assert (pool.config.max_idle_time, pool.config.health_check_interval) == (15.0, 10.0)
    short = create_pool("http://127.0.0.1:1", environ={}, max_idle_time=4)
    assert short.config.health_check_interval == 4
    given = poolkit.PoolConfig(max_size=2)
    assert create_pool("http://127.0.0.1:1", given, environ=environ).config.max_size == 2
    with pytest.raises(ConfigError) as info:
        create_pool("http://127.0.0.1:1", environ={"HTTP_POOL_MAX_SIZE": "many"})
    assert info.value.field == "HTTP_POOL_MAX_SIZE"
