"""FastAPI integration: lifespan-managed pools, per-request connections, 503 mapping, /pools."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from fix_servers import FdTracker
from integrations._apps import ResponseStartProbe, serve
from poolkit import ConnectError, KeyedPool, Pool, PoolOverloaded
from poolkit.integrations.fastapi import (
    Acquire,
    PoolManager,
    add_exception_handlers,
    connection,
    get_pools,
    pool,
)
from poolkit.testing import FakeConnection, FakeConnector

Conn = FakeConnection


def fake_pool(name: str = "pg", **config: Any) -> Pool[FakeConnection]:
    """A pool of fake connections."""
    config.setdefault("min_size", 0)
    config.setdefault("max_size", 2)
    return Pool(FakeConnector(), name=name, **config)


def build_app(manager: PoolManager) -> tuple[FastAPI, ResponseStartProbe]:
    """An app using ``manager`` and the integration's dependencies; probes in_use at send."""
    app = FastAPI(lifespan=manager.lifespan)
    add_exception_handlers(app, retry_after=3)
    app.include_router(manager.router())

    @app.get("/conn")
    async def get_conn(conn: Annotated[Conn, Acquire("pg")]) -> dict[str, Any]:
        return {"id": conn.id, "in_use": manager["pg"].stats().in_use}

    @app.get("/same")
    async def same(
        a: Annotated[Conn, Acquire("pg")], b: Annotated[Conn, Acquire("pg")]
    ) -> dict[str, Any]:
        return {"same": a is b, "in_use": manager["pg"].stats().in_use}

    @app.get("/stream")
    async def stream(conn: Annotated[Conn, Acquire("pg", streaming=True)]) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(3):
                assert conn.alive  # still ours while the body is produced
                yield f"{conn.id};".encode()
                await asyncio.sleep(0)

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/plain")
    async def plain(conn: Conn = Depends(connection("pg"))) -> dict[str, int]:  # noqa: B008
        return {"id": conn.id}

    @app.get("/fail")
    async def fail(conn: Annotated[Conn, Acquire("pg")]) -> None:
        conn.dirty = True
        raise HTTPException(status_code=418, detail="teapot")

    @app.get("/overloaded")
    async def overloaded() -> None:
        raise PoolOverloaded("pool 'pg' (secret-internal) overloaded", pool="pg", max_waiting=1)

    def in_use() -> int:
        current = get_pools_or_none(manager)
        return current["pg"].stats().in_use if current is not None else -1

    probe = ResponseStartProbe(app, in_use)
    return app, probe


def get_pools_or_none(manager: PoolManager) -> PoolManager | None:
    """The manager if it is open."""
    return manager if manager.is_open else None


@pytest.fixture
def manager() -> Iterator[PoolManager]:
    """A manager with one fake pool created at startup."""
    yield PoolManager({"pg": lambda: fake_pool()}, sample_interval=None)


def test_lifespan_opens_and_closes_pools(manager: PoolManager) -> None:
    """Pools are created and opened at startup, closed at shutdown."""
    app, probe = build_app(manager)
    with TestClient(probe) as client:
        the_pool = manager["pg"]
        assert not the_pool.closed
        assert client.get("/conn").status_code == 200
        assert app.state.poolkit_pools is manager
    assert the_pool.closed
    assert not manager.is_open
    assert not hasattr(app.state, "poolkit_pools")


def test_connection_is_released_before_the_response_is_sent(manager: PoolManager) -> None:
    """Acquire("pg") (scope="function") gives the connection back before headers go out."""
    _, probe = build_app(manager)
    with TestClient(probe) as client:
        response = client.get("/conn")
        assert response.status_code == 200
        assert response.json()["in_use"] == 1  # held inside the endpoint
        assert probe.seen == [0]  # already released when the response started
        assert manager["pg"].stats().acquires == 1


def test_streaming_variant_holds_the_connection_until_sent(manager: PoolManager) -> None:
    """Acquire(..., streaming=True) keeps the connection for the whole streamed body."""
    _, probe = build_app(manager)
    with TestClient(probe) as client:
        response = client.get("/stream")
        assert response.status_code == 200
        parts = response.text.strip(";").split(";")
        assert len(parts) == 3 and len(set(parts)) == 1
        assert probe.seen == [1]  # still in use when the response started
        assert manager["pg"].stats().in_use == 0  # released once the body was sent


def test_plain_depends_holds_until_response_sent(manager: PoolManager) -> None:
    """Depends(connection(...)) without a scope uses FastAPI's default: after the response."""
    _, probe = build_app(manager)
    with TestClient(probe) as client:
        assert client.get("/plain").status_code == 200
        assert probe.seen == [1]
        assert manager["pg"].stats().in_use == 0


def test_one_connection_per_request_for_repeated_dependencies(manager: PoolManager) -> None:
    """Two parameters depending on the same pool share one connection in one request."""
    _, probe = build_app(manager)
    with TestClient(probe) as client:
        assert client.get("/same").json() == {"same": True, "in_use": 1}
        assert connection("pg") is connection("pg")
        assert connection("pg", timeout=1.0) is not connection("pg")


def test_error_in_endpoint_releases_and_resets() -> None:
    """An exception in the endpoint releases the connection, which is reset before reuse."""
    connector = FakeConnector()
    manager = PoolManager(
        {"pg": lambda: Pool(connector, name="pg", min_size=0, max_size=2)}, sample_interval=None
    )
    _, probe = build_app(manager)
    with TestClient(probe) as client:
        response = client.get("/fail")
        assert response.status_code == 418
        assert manager["pg"].stats().in_use == 0
        assert client.get("/conn").status_code == 200
    (conn,) = connector.opened
    assert conn.resets >= 1 and not conn.dirty


def test_timeout_and_overload_become_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PoolTimeout/PoolOverloaded answer 503 + Retry-After with no internals; details logged."""
    manager = PoolManager(
        {"pg": lambda: fake_pool(max_size=1, acquire_timeout=0.01)}, sample_interval=None
    )
    app, probe = build_app(manager)

    @app.get("/hold")
    async def hold(conn: Annotated[Conn, Acquire("pg")]) -> dict[str, int]:
        # Acquire a second time while holding the only connection: times out.
        async with get_pools_or_fail(manager)["pg"].acquire(timeout=0.01):
            pass
        return {"id": conn.id}

    with TestClient(probe) as client, caplog.at_level(logging.WARNING, "poolkit.integrations"):
        response = client.get("/hold")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        assert response.json() == {"detail": "Service Unavailable"}
        assert "pg" not in response.text and "max_size" not in response.text
        overloaded = client.get("/overloaded")
        assert overloaded.status_code == 503
        assert "secret-internal" not in overloaded.text
        assert manager["pg"].stats().in_use == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("GET /hold -> 503" in m and "PoolTimeout" in m for m in messages)
    assert any("GET /overloaded -> 503" in m and "secret-internal" in m for m in messages)


def get_pools_or_fail(manager: PoolManager) -> PoolManager:
    """The open manager."""
    assert manager.is_open
    return manager


def test_pools_route_reports_health_without_targets() -> None:
    """GET /pools returns status, findings and stats per pool, but no target."""
    manager = PoolManager(
        {"pg": lambda: Pool(FakeConnector(target="fake://admin@db-internal:5432/x"), name="pg")},
        sample_interval=None,
    )
    _, probe = build_app(manager)
    with TestClient(probe) as client:
        client.get("/conn")
        body = client.get("/pools").json()
    assert body["status"] == "ok"
    pg = body["pools"]["pg"]
    assert pg["status"] == "ok" and pg["findings"] == []
    assert pg["backend"] == "testing"
    assert pg["stats"]["acquires"] == 1
    assert pg["stats"]["max_size"] == 10
    assert "db-internal" not in str(body)
    assert "target" not in pg["stats"]


def test_missing_lifespan_is_a_clear_error() -> None:
    """Using the dependency without the manager's lifespan names the fix."""
    app = FastAPI()

    @app.get("/conn")
    async def get_conn(conn: Annotated[Conn, Acquire("pg")]) -> None:
        return None

    with (
        TestClient(app) as client,
        pytest.raises(RuntimeError, match=r"FastAPI\(lifespan=manager.lifespan\)"),
    ):
        client.get("/conn")


def test_failed_startup_closes_the_pools_already_opened() -> None:
    """If one pool cannot open, startup fails and the other pools are closed."""
    good = fake_pool("good", min_size=1)
    bad: Pool[FakeConnection] = Pool(FakeConnector(connect="fail"), name="bad", min_size=1)
    manager = PoolManager({"good": good, "bad": bad}, sample_interval=None)
    app = FastAPI(lifespan=manager.lifespan)
    with pytest.raises(ConnectError), TestClient(app):
        pass
    assert good.closed and bad.closed
    assert not manager.is_open


def test_user_lifespan_can_wrap_the_managers() -> None:
    """The manager's lifespan composes with the app's own lifespan state."""
    manager = PoolManager({"pg": lambda: fake_pool()}, sample_interval=None)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with manager.lifespan(app) as state:
            yield {**state, "greeting": "hi"}

    app = FastAPI(lifespan=lifespan)

    @app.get("/")
    async def index(conn: Conn = Depends(manager.connection("pg"))) -> dict[str, Any]:  # noqa: B008
        return {"id": conn.id}

    @app.get("/state")
    async def state(pools: Annotated[PoolManager, Depends(get_pools)]) -> dict[str, bool]:
        return {"same": pools is manager}

    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        assert client.get("/state").json() == {"same": True}
    assert manager.names() == ["pg"]
    assert not manager.is_open


def test_keyed_pool_dependency() -> None:
    """A keyed pool is reached with key=... or through pool(name); no key is a clear error."""
    keyed: KeyedPool[str, FakeConnection] = KeyedPool(lambda k: FakeConnector(), max_size=1)
    manager = PoolManager({"http": keyed}, sample_interval=None)
    app = FastAPI(lifespan=manager.lifespan)

    @app.get("/origin/{name}")
    async def origin(name: str, p: Annotated[Any, Depends(pool("http"))]) -> dict[str, int]:
        async with p.acquire(name) as conn:
            return {"id": conn.id}

    @app.get("/wrong")
    async def wrong(conn: Annotated[Conn, Acquire("http")]) -> None:
        return None

    @app.get("/b")
    async def b(conn: Annotated[Conn, Acquire("http", key="b")]) -> dict[str, int]:
        return {"id": conn.id}

    with TestClient(app) as client:
        assert client.get("/origin/a").status_code == 200
        assert keyed.keys() == ["a"]
        assert client.get("/b").status_code == 200
        assert keyed.keys() == ["a", "b"]
        with pytest.raises(TypeError, match=r"keyed pool: pass key=..."):
            client.get("/wrong")


async def test_load_200_concurrent_requests_max_size_5(
    no_fd_leak: FdTracker, mysql_dsn: str, recwarn: pytest.WarningsRecorder
) -> None:
    """200 concurrent requests, 5 connections: the overflow gets 503 (never 500), then all 200
    once connections free up; the real MariaDB pool is closed at shutdown, no warnings."""
    from poolkit.mysql import create_pool

    gate = asyncio.Event()
    # Warmed to max_size at startup, so the first five requests never wait for a connect;
    # the others wait acquire_timeout for one of those five, which are held until the gate.
    manager = PoolManager(
        {"db": lambda: create_pool(mysql_dsn, min_size=5, max_size=5, acquire_timeout=1.0)},
        sample_interval=None,
    )
    app = FastAPI(lifespan=manager.lifespan)
    add_exception_handlers(app)

    @app.get("/work")
    async def work(conn: Annotated[Any, Acquire("db")]) -> dict[str, int]:
        async with conn.cursor() as cur:
            await cur.execute("SELECT CONNECTION_ID()")
            (conn_id,) = await cur.fetchone()
        await gate.wait()
        return {"conn": int(conn_id)}

    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with (
        serve(app) as url,
        httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client,
    ):
        db_pool = manager["db"]
        tasks = [asyncio.create_task(client.get("/work")) for _ in range(200)]
        while sum(t.done() for t in tasks) < 195:  # 5 hold the connections, 195 time out
            await asyncio.sleep(0.01)
        gate.set()
        first = await asyncio.gather(*tasks)
        second = await asyncio.gather(*(client.get("/work") for _ in range(20)))
        stats = db_pool.stats()

    codes = [r.status_code for r in first]
    assert codes.count(200) == 5
    assert codes.count(503) == 195
    assert all(r.headers["retry-after"] == "1" for r in first if r.status_code == 503)
    assert {r.status_code for r in second} == {200}
    assert len({r.json()["conn"] for r in first + second if r.status_code == 200}) <= 5
    assert stats.max_size == 5 and stats.size <= 5
    assert stats.timeouts == 195
    assert db_pool.closed
    assert db_pool.stats().size == 0
    assert not recwarn.list
