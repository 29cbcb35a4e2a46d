"""PostgreSQL connection pools on asyncpg: ``poolkit.postgres.create_pool``.

Everything a PostgreSQL user needs is importable from here, so the core package never has to be::

    from poolkit.postgres import create_pool, PoolTimeout

    pool = create_pool("postgresql://app:secret@127.0.0.1:5432/shop", max_size=20)
    async with pool:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        async with pool.transaction() as conn:
            await conn.execute("UPDATE stock SET n = n - 1 WHERE id = $1", 42)

The pool hands out plain :class:`asyncpg.Connection` objects. Requires the ``postgres`` extra:
``pip install poolkit[postgres]``.
"""

from __future__ import annotations

from poolkit import (
    AuthenticationError,
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
from poolkit.backends.postgres import (
    PostgresConnection,
    PostgresConnector,
    PostgresPool,
    ResetPolicy,
    create_pool,
    redact_dsn,
)

__all__ = (
    "AuthenticationError",
    "ConfigError",
    "ConnectError",
    "ConnectionBroken",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolError",
    "PoolOverloaded",
    "PoolStats",
    "PoolTimeout",
    "PoolUsageError",
    "PostgresConnection",
    "PostgresConnector",
    "PostgresPool",
    "ResetPolicy",
    "TLSError",
    "create_pool",
    "redact_dsn",
)
