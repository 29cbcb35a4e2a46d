"""OpenTelemetry instruments, read back through the SDK's InMemoryMetricReader (tests only)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.semconv._incubating.attributes import db_attributes, http_attributes
from opentelemetry.semconv._incubating.metrics import db_metrics, http_metrics
from opentelemetry.semconv.schemas import Schemas

from poolkit import KeyedPool, Pool, PoolTimeout
from poolkit.integrations.otel import SCHEMA_URL, PoolInstrumentation
from poolkit.testing import FakeConnection, FakeConnector

DB_NAMES = {
    db_metrics.DB_CLIENT_CONNECTION_COUNT: "{connection}",
    db_metrics.DB_CLIENT_CONNECTION_IDLE_MAX: "{connection}",
    db_metrics.DB_CLIENT_CONNECTION_IDLE_MIN: "{connection}",
    db_metrics.DB_CLIENT_CONNECTION_MAX: "{connection}",
    db_metrics.DB_CLIENT_CONNECTION_PENDING_REQUESTS: "{request}",
    db_metrics.DB_CLIENT_CONNECTION_TIMEOUTS: "{timeout}",
    db_metrics.DB_CLIENT_CONNECTION_CREATE_TIME: "s",
    db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME: "s",
    db_metrics.DB_CLIENT_CONNECTION_USE_TIME: "s",
}
POOL = db_attributes.DB_CLIENT_CONNECTION_POOL_NAME
STATE = db_attributes.DB_CLIENT_CONNECTION_STATE


class Reader:
    """An SDK meter provider with an in-memory reader, and helpers to query it."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def collect(self) -> dict[str, Any]:
        """Metric name -> metric, from one collection."""
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        if data is None:  # nothing observed at all
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "poolkit"
                assert scope.scope.schema_url == SCHEMA_URL
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    @staticmethod
    def points(metric: Any, **attributes: Any) -> list[Any]:
        """Data points whose attributes include ``attributes``."""
        return [
            p
            for p in metric.data.data_points
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        ]

    def value(self, metric: Any, **attributes: Any) -> Any:
        """The single matching point's value."""
        found = self.points(metric, **attributes)
        assert len(found) == 1, found
        return found[0].value


@pytest.fixture
def otel() -> Iterator[Reader]:
    """A private SDK meter provider (the global one is left alone)."""
    reader = Reader()
    yield reader
    reader.provider.shutdown()


async def test_semantic_convention_instruments(otel: Reader) -> None:
    """Every db.client.connection.* instrument is reported with its unit and pool name."""
    pools: dict[str, Pool[FakeConnection]] = {}  # read at each collection: filled below
    instrumentation = PoolInstrumentation(pools, meter_provider=otel.provider)
    pool: Pool[FakeConnection] = Pool(
        FakeConnector(), min_size=1, max_size=3, name="primary", on_event=instrumentation.on_event
    )
    pools["db"] = pool
    async with pool:
        for _ in range(3):
            async with pool.acquire():
                pass
        held = await pool.acquire()
        metrics = otel.collect()
        await pool.release(held)

    for name, unit in DB_NAMES.items():
        assert name in metrics, name
        assert metrics[name].unit == unit
        for point in metrics[name].data.data_points:
            assert point.attributes[POOL] == "db"  # the app's name for it, not "primary"
    count = metrics[db_metrics.DB_CLIENT_CONNECTION_COUNT]
    assert otel.value(count, **{STATE: "used"}) == 1
    assert {p.attributes[STATE] for p in count.data.data_points} == {"idle", "used"}
    assert otel.value(metrics[db_metrics.DB_CLIENT_CONNECTION_MAX]) == 3
    assert otel.value(metrics[db_metrics.DB_CLIENT_CONNECTION_IDLE_MAX]) == 3
    assert otel.value(metrics[db_metrics.DB_CLIENT_CONNECTION_IDLE_MIN]) == 1
    assert otel.value(metrics[db_metrics.DB_CLIENT_CONNECTION_PENDING_REQUESTS]) == 0
    assert otel.value(metrics[db_metrics.DB_CLIENT_CONNECTION_TIMEOUTS]) == 0

    wait = metrics[db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME].data.data_points
    assert [p.count for p in wait] == [4]
    use = metrics[db_metrics.DB_CLIENT_CONNECTION_USE_TIME].data.data_points
    assert [p.count for p in use] == [3]
    create = metrics[db_metrics.DB_CLIENT_CONNECTION_CREATE_TIME].data.data_points
    assert [p.count for p in create] == [pool.stats().created]
    assert all(p.sum >= 0 for p in wait + use + create)
    assert http_metrics.HTTP_CLIENT_OPEN_CONNECTIONS not in metrics or not (
        metrics[http_metrics.HTTP_CLIENT_OPEN_CONNECTIONS].data.data_points
    )


async def test_timeouts_and_pending_requests(otel: Reader) -> None:
    """A waiting task is a pending request; a timed-out acquire increments timeouts."""
    pool: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=1, name="db")
    instrumentation = PoolInstrumentation([pool], meter_provider=otel.provider)
    async with pool:
        async with pool.acquire():
            with pytest.raises(PoolTimeout):
                await pool.acquire(timeout=0.001)

            async def wait_for_connection() -> FakeConnection:
                return await pool.acquire(timeout=5)

            waiter = asyncio.create_task(wait_for_connection())
            while pool.stats().waiting == 0:
                await asyncio.sleep(0)
            metrics = otel.collect()
        await pool.release(await waiter)
    assert (
        otel.value(metrics[db_metrics.DB_CLIENT_CONNECTION_PENDING_REQUESTS], **{POOL: "db"}) == 1
    )
    assert otel.value(metrics[db_metrics.DB_CLIENT_CONNECTION_TIMEOUTS], **{POOL: "db"}) == 1
    instrumentation.close()


class HTTPLikeConnector(FakeConnector):
    """A fake connector that presents itself as the HTTP backend."""

    backend = "http"


async def test_http_pools_report_open_connections(otel: Reader) -> None:
    """An HTTP keyed pool reports http.client.open_connections per origin, not db.client.*."""
    pools: dict[str, Any] = {}
    instrumentation = PoolInstrumentation(pools, meter_provider=otel.provider)
    keyed: KeyedPool[str, FakeConnection] = KeyedPool(
        lambda origin: HTTPLikeConnector(target=origin),
        max_size=2,
        name="api",
        on_event=instrumentation.on_event,
    )
    db: Pool[FakeConnection] = Pool(
        FakeConnector(), min_size=0, max_size=1, name="db", on_event=instrumentation.on_event
    )
    pools.update(api=keyed, db=db)
    async with keyed, db:
        async with (
            keyed.acquire("https://api.example.com"),
            keyed.acquire("https://api.example.com"),
            keyed.acquire("http://other.example:8080"),
        ):
            metrics = otel.collect()
        async with db.acquire():
            pass
    after = otel.collect()
    opened = metrics[http_metrics.HTTP_CLIENT_OPEN_CONNECTIONS]
    assert opened.unit == "{connection}"
    state = http_attributes.HTTP_CONNECTION_STATE
    api = {"server.address": "api.example.com", "server.port": 443, "url.scheme": "https"}
    other = {"server.address": "other.example", "server.port": 8080, "url.scheme": "http"}
    assert otel.value(opened, **api, **{state: "active"}) == 2
    assert otel.value(opened, **api, **{state: "idle"}) == 0
    assert otel.value(opened, **other, **{state: "active"}) == 1
    counted = metrics[db_metrics.DB_CLIENT_CONNECTION_COUNT].data.data_points
    assert {p.attributes[POOL] for p in counted} == {"db"}
    # The HTTP pool's acquire events (from its per-origin pools) are not db.client.* times.
    wait = after[db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME].data.data_points
    assert [(p.attributes[POOL], p.count) for p in wait] == [("db", 1)]


async def test_events_of_unknown_pools_use_their_own_name(otel: Reader) -> None:
    """A pool reporting events before it is listed is recorded under its own name."""
    instrumentation = PoolInstrumentation(meter_provider=otel.provider)
    pool: Pool[FakeConnection] = Pool(
        FakeConnector(), min_size=0, max_size=1, name="solo", on_event=instrumentation.on_event
    )
    async with pool, pool.acquire():
        pass
    metrics = otel.collect()
    wait = metrics[db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME]
    assert [p.attributes[POOL] for p in wait.data.data_points] == ["solo"]


async def test_close_stops_reporting(otel: Reader) -> None:
    """After close() no pool is observed and events are ignored."""
    pool: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=1, name="db")
    instrumentation = PoolInstrumentation({"db": pool}, meter_provider=otel.provider)
    instrumentation.close()
    async with pool, pool.acquire():
        pass
    assert otel.collect() == {}


def test_schema_url_is_a_published_semconv_version() -> None:
    """The pinned schema URL is one the semconv package knows."""
    assert SCHEMA_URL in {schema.value for schema in Schemas}


def test_runtime_needs_only_the_api() -> None:
    """Importing the integration loads opentelemetry-api, never the SDK."""
    code = (
        "import sys, poolkit.integrations.otel\n"
        "bad = [m for m in sys.modules\n"
        "       if m.startswith(('opentelemetry.sdk', 'opentelemetry.semconv'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_real_mysql_pool_histograms(otel: Reader, mysql_dsn: str) -> None:
    """A MariaDB pool created with on_event records real create/wait/use times."""
    from poolkit.mysql import create_pool

    pools: list[Any] = []
    instrumentation = PoolInstrumentation(pools, meter_provider=otel.provider)
    pool = create_pool(
        mysql_dsn, min_size=1, max_size=2, name="shop", on_event=instrumentation.on_event
    )
    pools.append(pool)
    async with pool:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT SLEEP(0.01)")
        metrics = otel.collect()
    create = metrics[db_metrics.DB_CLIENT_CONNECTION_CREATE_TIME].data.data_points[0]
    assert create.count >= 1 and create.sum > 0
    use = metrics[db_metrics.DB_CLIENT_CONNECTION_USE_TIME].data.data_points[0]
    assert use.count == 1 and use.sum >= 0.01
    assert otel.value(metrics[db_metrics.DB_CLIENT_CONNECTION_MAX], **{POOL: "shop"}) == 2


async def test_real_http_pool_reports_open_connections(otel: Reader) -> None:
    """The HTTP backend's pool reports http.client.open_connections for its real origin."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from poolkit.http import create_pool

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/hello", hello)
    pools: dict[str, Any] = {}
    instrumentation = PoolInstrumentation(pools, meter_provider=otel.provider)
    async with TestServer(app, host="127.0.0.1") as server:
        port = server.port
        pool = create_pool(
            str(server.make_url("/")), max_size=2, name="api", on_event=instrumentation.on_event
        )
        pools["api"] = pool
        async with pool:
            async with pool.acquire() as client:
                await client.get("/hello")
                during = otel.collect()
            await pool.get("/hello")
            after = otel.collect()
    where = {"server.address": "127.0.0.1", "server.port": port, "url.scheme": "http"}
    state = http_attributes.HTTP_CONNECTION_STATE
    opened = during[http_metrics.HTTP_CLIENT_OPEN_CONNECTIONS]
    assert otel.value(opened, **where, **{state: "active"}) == 1
    opened = after[http_metrics.HTTP_CLIENT_OPEN_CONNECTIONS]
    assert otel.value(opened, **where, **{state: "idle"}) == 1
    assert otel.value(opened, **where, **{state: "active"}) == 0
    wait = after.get(db_metrics.DB_CLIENT_CONNECTION_WAIT_TIME)
    assert wait is None or not wait.data.data_points  # an HTTP pool is not a DB pool
