"""The examples run against the local services: each is imported and driven for real."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from fix_servers import FdTracker
from integrations._apps import EXAMPLES, load_example, serve
from poolkit.aiohttp import POOLS


def sample_value(text: str, name: str, **labels: str) -> float:
    """The value of the one sample ``name`` with ``labels`` in an exposition ``text``."""
    found = [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


async def test_metrics_example_reports_exhaustion_everywhere(
    no_fd_leak: FdTracker, mysql_dsn: str
) -> None:
    """examples/metrics.py: Prometheus scrape, health report and OTel output agree."""
    metrics = load_example("metrics")
    out = io.StringIO()
    text = await metrics.run(mysql_dsn, port=0, out=out)
    printed = out.getvalue()
    assert "burst: 3 served, 3 timed out" in printed
    assert "health of pool 'shop': critical" in printed
    assert "[critical] exhausted" in printed
    assert sample_value(text, "poolkit_connection_timeouts_total", pool="shop") == 3
    assert sample_value(text, "poolkit_acquires_total", pool="shop", backend="mysql") == 3
    assert sample_value(text, "poolkit_connections_max", pool="shop") == 3
    assert "db.client.connection.wait_time" in printed  # the console exporter's output
    assert '"db.client.connection.pool.name": "shop"' in printed


def test_metrics_example_runs_as_a_script(mysql_dsn: str) -> None:
    """``python examples/metrics.py --once`` exits cleanly and prints its report."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "metrics.py"), "--once", "--port", "0", "--dsn", mysql_dsn],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "3 timed out" in result.stdout
    assert result.stderr == ""


async def test_aiohttp_example_serves_both_pools(no_fd_leak: FdTracker, mysql_dsn: str) -> None:
    """examples/aiohttp_app.py: MariaDB and HTTP pools serve requests and close at cleanup."""
    example = load_example("aiohttp_app")

    async def now(request: web.Request) -> web.Response:
        return web.json_response({"now": "soon"})

    upstream_app = web.Application()
    upstream_app.router.add_get("/now", now)
    async with TestServer(upstream_app, host="127.0.0.1") as upstream:
        app = example.create_app(mysql_dsn, str(upstream.make_url("/")))
        group = app[POOLS]
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            response = await client.get("/add", params={"a": "2", "b": "40"})
            assert await response.json() == {"sum": 42}
            assert (await client.get("/add", params={"a": "x"})).status == 400
            response = await client.get("/upstream/now")
            assert response.status == 200
            assert await response.json() == {"now": "soon"}
            status = await (await client.get("/pools")).json()
            pools: dict[str, Any] = status["pools"]
            assert {name: p["backend"] for name, p in pools.items()} == {
                "db": "mysql",
                "upstream": "http",
            }
            assert pools["db"]["stats"]["acquires"] == 1
            opened = [pool for _, pool in group.items()]
        assert len(opened) == 2
        assert all(pool.closed for pool in opened)


@pytest.fixture
def postgres_example(pg_dsn: str) -> Any:
    """The FastAPI example module (on the Postgres backend)."""
    return load_example("fastapi_app")


async def test_fastapi_example_end_to_end(
    no_fd_leak: FdTracker, postgres_example: Any, pg_dsn: str
) -> None:
    """examples/fastapi_app.py over a real socket: query, stream, /pools, /metrics/."""
    app = postgres_example.create_app(pg_dsn, max_size=3)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        now = await client.get("/now")
        assert now.status_code == 200 and "now" in now.json()
        streamed = await client.get("/squares", params={"n": 4})
        lines = streamed.text.splitlines()
        assert [int(line.split('"square": ')[1].rstrip("}")) for line in lines] == [1, 4, 9, 16]
        status = (await client.get("/pools")).json()
        assert status["pools"]["pg"]["backend"] == "postgres"
        assert status["pools"]["pg"]["stats"]["acquires"] == 2
        text = (await client.get("/metrics/")).text
    assert sample_value(text, "poolkit_acquires_total", pool="pg", backend="postgres") == 2
    assert sample_value(text, "poolkit_connections_max", pool="pg") == 3


async def test_fastapi_example_load_overflow_is_503(
    no_fd_leak: FdTracker, postgres_example: Any, pg_dsn: str, recwarn: pytest.WarningsRecorder
) -> None:
    """200 concurrent requests on max_size 5: no 500, the overflow is 503, clean shutdown."""
    # Held 2 s each, waited for 1 s at most: the first five requests are served, most of the
    # others time out (a request arriving after one of the five finished may be served too).
    app = postgres_example.create_app(pg_dsn, min_size=5, max_size=5, acquire_timeout=1.0)
    limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:
        responses = await asyncio.gather(
            *(c.get("/sleep", params={"seconds": 2.0}) for _ in range(200))
        )
        pools = (await c.get("/pools")).json()
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}
    assert codes.count(200) >= 5
    assert codes.count(503) >= 1
    assert all(r.headers["Retry-After"] == "1" for r in responses if r.status_code == 503)
    assert pools["pools"]["pg"]["stats"]["timeouts"] == codes.count(503)
    assert pools["status"] == "critical"
    assert not recwarn.list
