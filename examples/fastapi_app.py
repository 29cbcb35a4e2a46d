"""A FastAPI service on a poolkit PostgreSQL pool.

Needs ``pip install "poolkit[postgres,fastapi,prometheus]" uvicorn`` and a PostgreSQL server::

    POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test python examples/fastapi_app.py

then::

    curl 127.0.0.1:8000/now
    curl '127.0.0.1:8000/squares?n=5'    # streamed JSON lines: one connection for the whole stream
    curl 127.0.0.1:8000/pools            # health and stats of every pool
    curl 127.0.0.1:8000/metrics/         # Prometheus exposition

Pool sizing comes from ``POSTGRES_POOL_*`` variables (``POSTGRES_POOL_MAX_SIZE=20``...). When
every connection is busy for longer than the acquire timeout, requests get
``503 Service Unavailable`` with ``Retry-After`` instead of piling up.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry, make_asgi_app

from poolkit import PoolConfig
from poolkit.fastapi import Acquire, PoolManager, add_exception_handlers
from poolkit.postgres import create_pool
from poolkit.prometheus import PoolCollector

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

Connection = Annotated[asyncpg.Connection, Acquire("pg")]
StreamConnection = Annotated[asyncpg.Connection, Acquire("pg", streaming=True)]


def create_app(dsn: str | None = None, **config: Any) -> FastAPI:
    """Build the app; the pool is opened by the app's lifespan, in the server's event loop.

    Args:
        dsn: the PostgreSQL DSN (default: ``$POSTGRES_DSN``, else the local test server).
        **config: :class:`~poolkit.PoolConfig` fields overriding ``POSTGRES_POOL_*``.
    """
    target = dsn or os.environ.get("POSTGRES_DSN") or DEFAULT_DSN
    # Example defaults, overridden by POSTGRES_POOL_* variables, overridden by ``config``.
    pool_config = PoolConfig.from_env(
        "POSTGRES_POOL", name="pg", acquire_timeout=2.0, max_size=10
    ).replace(**config)
    pools = PoolManager({"pg": lambda: create_pool(target, config=pool_config)})

    app = FastAPI(title="poolkit + FastAPI", lifespan=pools.lifespan)
    add_exception_handlers(app)  # PoolTimeout / PoolOverloaded -> 503 + Retry-After
    app.include_router(pools.router("/pools"))
    registry = CollectorRegistry()
    registry.register(PoolCollector(pools))  # reads pool.stats() at scrape time
    app.mount("/metrics", make_asgi_app(registry))

    @app.get("/now")
    async def now(conn: Connection) -> dict[str, str]:
        """The server's clock; the connection is back in the pool before the response is sent."""
        value = await conn.fetchval("SELECT now()")
        return {"now": value.isoformat()}

    @app.get("/squares")
    async def squares(n: int, conn: StreamConnection) -> StreamingResponse:
        """``n`` rows from a server-side cursor, streamed while the connection is held."""

        async def rows() -> AsyncIterator[str]:
            async with conn.transaction():
                query = "SELECT g AS n, g * g AS square FROM generate_series(1, $1) AS g"
                async for record in conn.cursor(query, n):
                    yield json.dumps(dict(record)) + "\n"

        return StreamingResponse(rows(), media_type="application/x-ndjson")

    @app.get("/sleep")
    async def sleep(seconds: float, conn: Connection) -> dict[str, float]:
        """Hold a connection for a while (to see 503s under load)."""
        await conn.execute("SELECT pg_sleep($1)", seconds)
        return {"slept": seconds}

    return app


def main() -> None:
    """Serve the app on 127.0.0.1:$PORT (default 8000)."""
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
