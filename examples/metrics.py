"""Pool metrics three ways: a Prometheus endpoint, OpenTelemetry instruments, a health report.

Needs ``pip install "poolkit[mysql,prometheus,otel]" opentelemetry-sdk`` and a MariaDB/MySQL
server::

    MYSQL_DSN=mysql://root@127.0.0.1:3306/test python examples/metrics.py          # keeps serving
    python examples/metrics.py --once                                              # run and exit

It opens a pool of 3 connections, serves Prometheus metrics on http://127.0.0.1:9464/metrics,
and runs a burst of 6 tasks that each hold a connection for 0.2 s with an acquire timeout of
0.1 s: 3 get a connection, 3 time out. Then it prints the health report (which flags the
exhaustion), a few lines of its own Prometheus scrape and, at exit, the OpenTelemetry metrics
(console exporter).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import urllib.request
from typing import Any, TextIO

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from prometheus_client import CollectorRegistry, start_http_server

from poolkit import PoolTimeout
from poolkit.integrations import PoolGroup
from poolkit.mysql import create_pool
from poolkit.otel import PoolInstrumentation
from poolkit.prometheus import PoolCollector

DEFAULT_DSN = "mysql://root@127.0.0.1:3306/test"


async def run(
    dsn: str | None = None, *, port: int = 9464, serve: bool = False, out: TextIO = sys.stdout
) -> str:
    """Run the demo; return the Prometheus exposition text scraped from our own endpoint.

    Args:
        dsn: MariaDB/MySQL DSN (default: ``$MYSQL_DSN``, else the local server).
        port: Prometheus port on 127.0.0.1 (0: any free port).
        serve: keep serving metrics until cancelled (Ctrl-C).
        out: where to print.
    """
    target = dsn or os.environ.get("MYSQL_DSN") or DEFAULT_DSN

    # OpenTelemetry: the SDK is the application's choice; poolkit only uses the API.
    reader = PeriodicExportingMetricReader(
        ConsoleMetricExporter(out=out), export_interval_millis=math.inf
    )
    provider = MeterProvider(metric_readers=[reader])
    pools: dict[str, Any] = {}
    instrumentation = PoolInstrumentation(pools, meter_provider=provider)
    pools["shop"] = create_pool(
        target,
        name="shop",
        min_size=3,
        max_size=3,
        acquire_timeout=0.1,
        on_event=instrumentation.on_event,  # records the wait/use/create histograms
    )
    group = PoolGroup(pools, sample_interval=None)

    # Prometheus: a collector reading pool.stats() at scrape time.
    registry = CollectorRegistry()
    registry.register(PoolCollector(group))
    httpd, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{httpd.server_port}/metrics"
    try:
        async with group:
            results = await asyncio.gather(*(hold(group["shop"], 0.2) for _ in range(6)))
            print(
                f"burst: {results.count('ok')} served, {results.count('timeout')} timed out",
                file=out,
            )

            report = group.health()["shop"]
            print(f"health of pool {report.pool!r}: {report.status}", file=out)
            for finding in report.findings:
                print(f"  [{finding.severity}] {finding.code}: {finding.message}", file=out)

            text = await asyncio.to_thread(fetch, url)
            print(f"Prometheus metrics at {url}, for example:", file=out)
            for line in text.splitlines():
                if line.startswith(("poolkit_connections{", "poolkit_connection_timeouts_total")):
                    print("  " + line, file=out)
            if serve:
                print("serving metrics; Ctrl-C to stop", file=out)
                await asyncio.Event().wait()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
        provider.force_flush()  # exports the OpenTelemetry metrics to ``out``
        instrumentation.close()
        provider.shutdown()
    return text


async def hold(pool: Any, seconds: float) -> str:
    """Hold a connection for ``seconds`` (a slow query), or report a timeout."""
    try:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT SLEEP(%s)", (seconds,))
            return "ok"
    except PoolTimeout:
        return "timeout"


def fetch(url: str) -> str:
    """GET ``url`` (a Prometheus scrape) and return the body."""
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python examples/metrics.py [--dsn DSN] [--port N] [--once]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=None, help="MariaDB/MySQL DSN (default: $MYSQL_DSN)")
    parser.add_argument("--port", type=int, default=9464, help="Prometheus port (0: any)")
    parser.add_argument("--once", action="store_true", help="exit after the demo")
    args = parser.parse_args(argv)
    try:
        asyncio.run(run(args.dsn, port=args.port, serve=not args.once))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
