"""MySQL and MariaDB connection pools on aiomysql: ``poolkit.mysql.create_pool``.

Everything a MySQL user needs is importable from here, so the core package never has to be::

    from poolkit.mysql import create_pool, PoolTimeout

    pool = create_pool("mysql://app:secret@127.0.0.1:3306/shop", max_size=20)
    async with pool:
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT 1")
        async with pool.transaction() as conn, conn.cursor() as cur:
            await cur.execute("UPDATE stock SET n = n - 1 WHERE id = %s", (42,))

Requires the ``mysql`` extra: ``pip install poolkit[mysql]``.
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
from poolkit.backends.mysql import (
    COM_RESET_CONNECTION,
    MySQLConnection,
    MySQLConnector,
    MySQLPool,
    ResetPolicy,
    create_pool,
    parse_dsn,
)

__all__ = (
    "COM_RESET_CONNECTION",
    "AuthenticationError",
    "ConfigError",
    "ConnectError",
    "ConnectionBroken",
    "MySQLConnection",
    "MySQLConnector",
    "MySQLPool",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolError",
    "PoolOverloaded",
    "PoolStats",
    "PoolTimeout",
    "PoolUsageError",
    "ResetPolicy",
    "TLSError",
    "create_pool",
    "parse_dsn",
)
