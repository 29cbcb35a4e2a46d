"""aiohttp web integration, through aiohttp's own test server on a loopback socket."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fix_servers import FdTracker
from poolkit import ConnectError, Pool, PoolOverloaded
from poolkit.integrations import PoolGroup
from poolkit.integrations.aiohttp import POOLS, acquire, error_middleware, get_pools, setup
from poolkit.testing import FakeConnection, FakeConnector


def fake_pool(name: str = "pg", **config: Any) -> Pool[FakeConnection]:
    """A pool of fake connections."""
    config.setdefault("min_size", 0)
    config.setdefault("max_size", 2)
    return Pool(FakeConnector(), name=name, **config)


async def conn_handler(request: web.Request) -> web.Response:
    """Borrow a connection of pool "pg" and report it."""
    async with acquire(request, "pg") as conn:
        in_use = get_pools(request)["pg"].stats().in_use
        return web.json_response({"id": conn.id, "in_use": in_use})


async def test_setup_opens_at_startup_and_closes_at_cleanup(no_fd_leak: FdTracker) -> None:
    """Pools are created and opened when the app starts and closed at cleanup."""
    made: list[Pool[FakeConnection]] = []

    def factory() -> Pool[FakeConnection]:
        made.append(fake_pool(min_size=1))
        return made[-1]

    app = web.Application()
    group = setup(app, {"pg": factory}, sample_interval=None)
    app.router.add_get("/conn", conn_handler)
    assert app[POOLS] is group
    assert not made  # created at startup, not before
    async with TestClient(TestServer(app)) as client:
        assert len(made) == 1
        assert " open " in repr(made[0])
        response = await client.get("/conn")
        assert response.status == 200
        assert (await response.json())["in_use"] == 1
        assert made[0].stats().in_use == 0
    assert made[0].closed
    assert not group.is_open


async def test_pool_errors_become_503_with_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    """The middleware answers PoolTimeout/PoolOverloaded with 503, Retry-After, no internals."""
    app = web.Application()
    setup(app, {"pg": lambda: fake_pool(max_size=1)}, retry_after=7, sample_interval=None)

    async def exhaust(request: web.Request) -> web.Response:
        async with acquire(request, "pg"), acquire(request, "pg", timeout=0.01):
            return web.Response(text="unreachable")

    async def overload(request: web.Request) -> web.Response:
        raise PoolOverloaded("pool 'pg' internal-detail", pool="pg", max_waiting=0)

    app.router.add_get("/exhaust", exhaust)
    app.router.add_get("/overload", overload)
    with caplog.at_level(logging.WARNING, "poolkit.integrations"):
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/exhaust")
            assert response.status == 503
            assert response.headers["Retry-After"] == "7"
            assert await response.json() == {"detail": "Service Unavailable"}
            response = await client.get("/overload")
            assert response.status == 503
            assert "internal-detail" not in await response.text()
            assert get_pools_of(client)["pg"].stats().in_use == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("GET /exhaust -> 503" in m and "PoolTimeout" in m for m in messages)
    assert any("internal-detail" in m for m in messages)


def get_pools_of(client: TestClient[Any, Any]) -> PoolGroup:
    """The pool group of the test client's app."""
    app = client.app
    assert app is not None
    group: PoolGroup = app[POOLS]
    return group


async def test_other_errors_pass_through_the_middleware() -> None:
    """Only pool-unavailability errors are mapped; an HTTP error keeps its status."""
    app = web.Application(middlewares=[error_middleware()])

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="nope")

    app.router.add_get("/missing", missing)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/missing")
        assert response.status == 404
    with pytest.raises(ValueError, match="retry_after"):
        error_middleware(retry_after=-1)


async def test_stats_route_and_sub_application() -> None:
    """A sub-application reaches its parent's pools; the stats route reports them."""
    app = web.Application()
    setup(
        app,
        {"pg": lambda: Pool(FakeConnector(target="fake://db-internal"), name="pg", min_size=0)},
        stats_path="/pools",
        sample_interval=None,
    )
    sub = web.Application()
    sub.router.add_get("/conn", conn_handler)
    app.add_subapp("/api", sub)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/api/conn")).status == 200
        body = await (await client.get("/pools")).json()
    assert body["status"] == "ok"
    assert body["pools"]["pg"]["stats"]["acquires"] == 1
    assert "db-internal" not in str(body)


async def test_missing_setup_is_a_clear_error() -> None:
    """Using the helpers on an app without setup() names the fix."""
    app = web.Application()
    app.router.add_get("/conn", conn_handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/conn")
        assert response.status == 500
    request_app = web.Application()
    with pytest.raises(KeyError):
        request_app[POOLS]


async def test_failed_startup_closes_opened_pools() -> None:
    """If one pool cannot be opened the app does not start and the others are closed."""
    good = fake_pool("good", min_size=1)
    bad: Pool[FakeConnection] = Pool(FakeConnector(connect="fail"), name="bad", min_size=1)
    app = web.Application()
    setup(app, {"good": good, "bad": bad}, sample_interval=None)
    server = TestServer(app)
    with pytest.raises(ConnectError):
        await server.start_server()
    await server.close()
    assert good.closed and bad.closed


async def test_real_mariadb_pool_serves_requests(no_fd_leak: FdTracker, mysql_dsn: str) -> None:
    """A real MariaDB pool set up on the app answers queries and is closed at cleanup."""
    from poolkit.mysql import create_pool

    app = web.Application()
    group = setup(
        app, {"db": lambda: create_pool(mysql_dsn, min_size=1, max_size=3)}, sample_interval=None
    )

    async def add(request: web.Request) -> web.Response:
        async with acquire(request, "db") as conn, conn.cursor() as cur:
            await cur.execute("SELECT %s + %s", (int(request.query["a"]), int(request.query["b"])))
            (total,) = await cur.fetchone()
        return web.json_response({"sum": int(total)})

    app.router.add_get("/add", add)
    async with TestClient(TestServer(app)) as client:
        for a in range(5):
            response = await client.get("/add", params={"a": a, "b": 10})
            assert await response.json() == {"sum": a + 10}
        db = group["db"]
    assert db.closed
    assert db.stats().acquires == 5
