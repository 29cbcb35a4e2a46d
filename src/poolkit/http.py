"""Pooled keep-alive HTTP connections on aiohttp: ``poolkit.http.create_pool``.

Everything an HTTP user needs is importable from here::

    from poolkit.http import create_pool, PoolTimeout

    pool = create_pool("https://api.example.com", max_size=10)
    async with pool:
        response = await pool.get("/status")          # one-shot: borrow, send, read, return
        async with pool.acquire() as client:          # one keep-alive socket, many requests
            await client.put("/items/1", json={"name": "x"})

Requires the ``http`` extra: ``pip install poolkit[http]``.
"""

from __future__ import annotations

from poolkit import (
    ConfigError,
    ConnectError,
    ConnectionBroken,
    Pool,
    PoolClosed,
    PoolConfig,
    PoolError,
    PoolOverloaded,
    PoolStats,
    PoolTimeout,
    PoolUsageError,
    TLSError,
)
from poolkit.backends.http import (
    ClientLease,
    CrossOriginError,
    HTTPClient,
    HTTPConnection,
    HTTPConnector,
    HTTPPool,
    HTTPResponse,
    HTTPStatusError,
    Origin,
    RequestOptions,
    StreamResponse,
    create_pool,
    redact_url,
)

__all__ = (
    "ClientLease",
    "ConfigError",
    "ConnectError",
    "ConnectionBroken",
    "CrossOriginError",
    "HTTPClient",
    "HTTPConnection",
    "HTTPConnector",
    "HTTPPool",
    "HTTPResponse",
    "HTTPStatusError",
    "Origin",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolError",
    "PoolOverloaded",
    "PoolStats",
    "PoolTimeout",
    "PoolUsageError",
    "RequestOptions",
    "StreamResponse",
    "TLSError",
    "create_pool",
    "redact_url",
)
