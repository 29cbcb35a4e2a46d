"""poolkit with PostgreSQL: a pool, queries, a transaction, the reset, and the stats.

Run against a local server (the target comes from ``POSTGRES_DSN``)::

    POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/test python examples/postgres_basic.py
"""

from __future__ import annotations

import asyncio
import os

import asyncpg

from poolkit.postgres import create_pool


async def main() -> None:
    """Create a pool, run a few queries and a transaction, then print the pool's stats."""
    dsn = os.environ.get("POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    pool = create_pool(dsn, min_size=1, max_size=4, name="example")
    async with pool:
        # Borrow a connection for a block: a plain asyncpg.Connection.
        async with pool.acquire() as conn:
            print("server:", await conn.fetchval("SHOW server_version"))
            await conn.execute(
                "CREATE TEMP TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);"
                "INSERT INTO accounts VALUES (1, 100), (2, 0)"
            )
            # A transaction on the same connection: all or nothing.
            async with conn.transaction():
                await conn.execute("UPDATE accounts SET balance = balance - 30 WHERE id = 1")
                await conn.execute("UPDATE accounts SET balance = balance + 30 WHERE id = 2")
            rows = await conn.fetch("SELECT id, balance FROM accounts ORDER BY id")
            print("balances:", [tuple(row) for row in rows])
            await conn.execute("SET work_mem = '64MB'")

        # The release reset the session ("clean"): the temp table and the setting are gone.
        async with pool.acquire() as conn:
            gone = await conn.fetchval("SELECT to_regclass('pg_temp.accounts') IS NULL")
            work_mem = await conn.fetchval("SHOW work_mem")
            print(f"after the reset: temp table gone={gone}, work_mem={work_mem}")

        # pool.transaction(): BEGIN on entry, COMMIT on success; an error rolls back.
        try:
            async with pool.transaction() as conn:
                await conn.execute("CREATE TEMP TABLE scratch (x int)")
                await conn.fetchval("SELECT 1 / 0")
        except asyncpg.DivisionByZeroError:
            print("the failed transaction was rolled back")

        # Many tasks share the four connections, in strict arrival order.
        async def one_query(i: int) -> int:
            async with pool.acquire() as conn:
                return int(await conn.fetchval("SELECT $1::int * 2", i))

        results = await asyncio.gather(*(one_query(i) for i in range(20)))
        print("20 concurrent queries:", sum(results))
        stats = pool.stats()
        print(
            f"{pool!r}\nacquires={stats.acquires} created={stats.created} "
            f"wait p99={stats.wait_time.p99 * 1000:.2f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
