"""Prometheus collector: real scrapes over HTTP, parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import logging
import math
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from fix_servers import FdTracker
from poolkit import KeyedPool, Pool, PoolTimeout
from poolkit.integrations.prometheus import PoolCollector, register
from poolkit.testing import FakeConnection, FakeConnector


class CountingConnector(FakeConnector):
    """A fake connector that reports backend counters, like the HTTP backend does."""

    backend = "http"

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def stats(self) -> dict[str, float]:
        """Backend counters, shaped like the HTTP backend's."""
        return {
            "http_requests": float(self.requests),
            "http_responses_2xx": float(self.requests),
            "bytes_sent": 10.0,
            "retries_total": 1.0,
        }


def scrape_blocking(registry: CollectorRegistry) -> str:
    """Serve ``registry`` on a loopback port, GET /metrics once, stop the server."""
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
            return body.decode()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


async def scrape(registry: CollectorRegistry) -> dict[str, Metric]:
    """A real scrape from another thread (as Prometheus would), parsed."""
    text = await asyncio.to_thread(scrape_blocking, registry)
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Metric, name: str | None = None, **labels: str) -> list[Sample]:
    """The samples of ``family`` (optionally one sample name) matching ``labels``."""
    return [
        s
        for s in family.samples
        if (name is None or s.name == name) and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(family: Metric, name: str | None = None, **labels: str) -> float:
    """The single sample value matching."""
    found = samples(family, name, **labels)
    assert len(found) == 1, found
    return found[0].value


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """A private registry (the global one is left alone)."""
    yield CollectorRegistry()


async def test_scrape_exports_state_counters_and_histograms(
    no_fd_leak: FdTracker, registry: CollectorRegistry
) -> None:
    """A real scrape shows connections by state, limits, counters and histograms per pool."""
    connector = CountingConnector()
    db: Pool[FakeConnection] = Pool(connector, min_size=1, max_size=3, name="db")
    other: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=1, name="other")
    register({"db": db, "other": other}, registry)
    async with db, other:
        for _ in range(5):
            async with db.acquire():
                connector.requests += 1
        held = await db.acquire()
        await db.release(await db.acquire(), discard=True)
        async with other.acquire():
            with pytest.raises(PoolTimeout):
                await other.acquire(timeout=0.001)
        metrics = await scrape(registry)
        await db.release(held)

    connections = metrics["poolkit_connections"]
    assert connections.type == "gauge"
    assert value(connections, pool="db", backend="http", state="used") == 1
    states = {s.labels["state"] for s in samples(connections, pool="db")}
    assert states == {"idle", "used", "connecting", "checking", "resetting"}
    other_total = sum(s.value for s in samples(connections, pool="other", backend="testing"))
    assert other_total == 1  # size == idle + used + connecting + checking + resetting
    assert value(connections, pool="other", state="used") == 0
    assert value(metrics["poolkit_connections_max"], pool="db") == 3
    assert value(metrics["poolkit_connections_min"], pool="db") == 1
    assert value(metrics["poolkit_pending_requests"], pool="other") == 0

    acquires = metrics["poolkit_acquires"]
    assert acquires.type == "counter"
    assert value(acquires, "poolkit_acquires_total", pool="db") == 7
    timeouts = metrics["poolkit_connection_timeouts"]
    assert value(timeouts, "poolkit_connection_timeouts_total", pool="other") == 1
    assert value(timeouts, "poolkit_connection_timeouts_total", pool="db") == 0
    created = value(metrics["poolkit_connections_created"], pool="db")
    assert created >= 2
    closed = metrics["poolkit_connections_closed"]
    assert value(closed, "poolkit_connections_closed_total", pool="db", reason="discarded") == 1

    wait = metrics["poolkit_connection_wait_time_seconds"]
    assert wait.type == "histogram"
    buckets = samples(wait, "poolkit_connection_wait_time_seconds_bucket", pool="db")
    bounds = [float(s.labels["le"]) for s in buckets]
    counts = [s.value for s in buckets]
    assert bounds == sorted(bounds) and math.isinf(bounds[-1])
    assert counts == sorted(counts)  # cumulative, monotonic
    assert len(buckets) == 23  # every 4th of 85 bounds, plus +Inf
    assert value(wait, "poolkit_connection_wait_time_seconds_count", pool="db") == 7
    assert counts[-1] == 7
    use = metrics["poolkit_connection_use_time_seconds"]
    assert value(use, "poolkit_connection_use_time_seconds_count", pool="db") == 6
    create = metrics["poolkit_connection_create_time_seconds"]
    assert value(create, "poolkit_connection_create_time_seconds_count", pool="db") == created

    backend_requests = metrics["poolkit_http_requests"]
    assert backend_requests.type == "counter"
    assert value(backend_requests, "poolkit_http_requests_total", pool="db") == 5
    responses = metrics["poolkit_http_responses"]
    assert value(responses, "poolkit_http_responses_total", status_class="2xx") == 5
    assert value(metrics["poolkit_http_sent_bytes"], "poolkit_http_sent_bytes_total") == 10
    assert value(metrics["poolkit_http_retries"], "poolkit_http_retries_total") == 1
    assert {s.labels["pool"] for s in backend_requests.samples} == {"db"}


async def test_names_use_base_units_and_suffixes(registry: CollectorRegistry) -> None:
    """Every counter is exposed with _total, every duration in seconds, no _ms anywhere."""
    pool: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=1, name="p")
    register([pool], registry)
    async with pool:
        async with pool.acquire():
            pass
        metrics = await scrape(registry)
    for name, family in metrics.items():
        assert name.startswith("poolkit_")
        assert "_ms" not in name and "millis" not in name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert name.endswith("_seconds")
        for sample in family.samples:
            assert sample.labels["pool"] == "p"
            assert sample.labels["backend"] == "testing"


async def test_stats_are_read_at_scrape_time(registry: CollectorRegistry) -> None:
    """The collector holds no state of its own: each scrape reflects the pool now."""
    pools: dict[str, Any] = {}
    register(lambda: pools, registry)
    assert "poolkit_connections" not in {
        s.name for f in (await scrape(registry)).values() for s in f.samples
    }
    pool: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=2, name="late")
    pools["late"] = pool
    async with pool:
        first = await scrape(registry)
        async with pool.acquire(), pool.acquire():
            second = await scrape(registry)
    assert value(first["poolkit_connections"], state="used") == 0
    assert value(second["poolkit_connections"], state="used") == 2
    assert value(second["poolkit_acquires"], "poolkit_acquires_total") == 2


async def test_full_resolution_buckets(registry: CollectorRegistry) -> None:
    """bucket_stride=1 exports every bound the pool records (85 plus +Inf)."""
    pool: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=1, name="p")
    registry.register(PoolCollector([pool], bucket_stride=1, namespace="app_db"))
    async with pool:
        async with pool.acquire():
            pass
        metrics = await scrape(registry)
    wait = metrics["app_db_connection_wait_time_seconds"]
    assert len(samples(wait, "app_db_connection_wait_time_seconds_bucket")) == 86


async def test_keyed_pool_is_exported_as_its_total(registry: CollectorRegistry) -> None:
    """A keyed pool is one series set (its total), labelled with its sub-pools' backend."""
    keyed: KeyedPool[str, FakeConnection] = KeyedPool(
        lambda origin: FakeConnector(target=origin), max_size=2, name="origins"
    )
    register({"origins": keyed}, registry)
    async with keyed, keyed.acquire("https://a.example"), keyed.acquire("https://b.example"):
        metrics = await scrape(registry)
    assert value(metrics["poolkit_connections"], pool="origins", state="used") == 2
    assert value(metrics["poolkit_connections"], state="used", backend="testing") == 2


async def test_a_failing_pool_is_skipped_and_logged(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """One pool whose stats() raises does not break the scrape of the others."""

    class Broken:
        name = "broken"

        def stats(self) -> Any:
            raise RuntimeError("stats exploded")

    pool: Pool[FakeConnection] = Pool(FakeConnector(), min_size=0, max_size=1, name="fine")
    register({"broken": Broken(), "fine": pool}, registry)
    with caplog.at_level(logging.ERROR, "poolkit.integrations.prometheus"):
        metrics = await scrape(registry)
    pools = {s.labels["pool"] for s in metrics["poolkit_connections"].samples}
    assert pools == {"fine"}
    assert "pool 'broken' failed" in caplog.text


def test_describe_lets_the_registry_refuse_duplicates() -> None:
    """describe() names the families without reading any pool; a second register clashes."""
    registry = CollectorRegistry()
    collector = PoolCollector(lambda: pytest.fail("describe() must not read the pools"))
    described = list(collector.describe())
    assert all(not family.samples for family in described)
    registry.register(collector)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PoolCollector({}))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"namespace": "bad-name"}, "namespace"), ({"bucket_stride": 0}, "bucket_stride")],
)
def test_bad_collector_options(kwargs: dict[str, Any], match: str) -> None:
    """Invalid options are rejected with the option named."""
    with pytest.raises(ValueError, match=match):
        PoolCollector({}, **kwargs)


async def test_real_mysql_pool_is_labelled_with_its_backend(
    mysql_dsn: str, registry: CollectorRegistry
) -> None:
    """A MariaDB pool scraped for real carries backend="mysql" and its activity."""
    from poolkit.mysql import create_pool

    pool = create_pool(mysql_dsn, min_size=1, max_size=2, name="shop")
    register([pool], registry)
    async with pool:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT 1")
        metrics = await scrape(registry)
    assert (
        value(metrics["poolkit_acquires"], "poolkit_acquires_total", pool="shop", backend="mysql")
        == 1
    )
    assert value(metrics["poolkit_connections_max"], pool="shop") == 2
    text = "".join(str(s) for f in metrics.values() for s in f.samples)
    assert "127.0.0.1" not in text  # no target in any label


async def test_real_http_and_websocket_backend_counters(
    no_fd_leak: FdTracker, registry: CollectorRegistry
) -> None:
    """Real HTTP and WebSocket pools against loopback servers export their traffic counters."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from websockets.asyncio.server import ServerConnection, serve

    from poolkit.http import create_pool as create_http_pool
    from poolkit.websocket import create_pool as create_ws_pool

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi", status=int(request.query.get("status", "200")))

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    app = web.Application()
    app.router.add_get("/hello", hello)
    async with TestServer(app, host="127.0.0.1") as http_server, serve(echo, "127.0.0.1", 0) as ws:
        ws_port = next(iter(ws.sockets)).getsockname()[1]
        http_pool = create_http_pool(str(http_server.make_url("/")), max_size=2, name="api")
        ws_pool = create_ws_pool(f"ws://127.0.0.1:{ws_port}", max_size=2, name="feed")
        register({"api": http_pool, "feed": ws_pool}, registry)
        async with http_pool, ws_pool:
            for status in (200, 200, 404):
                await http_pool.get(f"/hello?status={status}")
            async with ws_pool.acquire("/echo") as conn:
                for n in range(3):
                    await conn.send(f"m{n}")
                    assert await conn.recv() == f"m{n}"
            metrics = await scrape(registry)

    assert value(metrics["poolkit_http_requests"], "poolkit_http_requests_total", pool="api") == 3
    responses = metrics["poolkit_http_responses"]
    assert value(responses, "poolkit_http_responses_total", pool="api", status_class="2xx") == 2
    assert value(responses, "poolkit_http_responses_total", pool="api", status_class="4xx") == 1
    assert value(metrics["poolkit_http_received_bytes"], backend="http") > 0
    messages = metrics["poolkit_websocket_messages"]
    assert value(messages, "poolkit_websocket_messages_total", pool="feed", direction="sent") == 3
    assert value(messages, "poolkit_websocket_messages_total", direction="received") == 3
    assert value(metrics["poolkit_connections_max"], pool="feed", backend="websocket") >= 2
    assert value(metrics["poolkit_acquires"], "poolkit_acquires_total", pool="api") == 3
