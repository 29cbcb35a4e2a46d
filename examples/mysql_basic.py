"""poolkit with MySQL/MariaDB: a pool, queries, a transaction, and the stats.

Run against a local server (the target comes from ``MYSQL_DSN``)::

    MYSQL_DSN=mysql://root@127.0.0.1:3306/test python examples/mysql_basic.py
"""

from __future__ import annotations

import asyncio
import os

from poolkit.mysql import create_pool


async def main() -> None:
    """Create a pool, run a few queries and a transaction, then print the pool's stats."""
    dsn = os.environ.get("MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
    pool = create_pool(dsn, min_size=1, max_size=4, name="example")
    async with pool:
        # Borrow a connection for a block; it is reset and returned when the block ends.
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT VERSION()")
            (version,) = await cur.fetchone()
            print(f"server: {version}")
            await cur.execute(
                "CREATE TEMPORARY TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL)"
            )
            await cur.execute("INSERT INTO accounts VALUES (1, 100), (2, 0)")
            # A transaction on the same connection: all or nothing.
            await conn.begin()
            await cur.execute("UPDATE accounts SET balance = balance - 30 WHERE id = 1")
            await cur.execute("UPDATE accounts SET balance = balance + 30 WHERE id = 2")
            await conn.commit()
            await cur.execute("SELECT id, balance FROM accounts ORDER BY id")
            print("balances:", await cur.fetchall())
        # The temporary table was dropped by the reset (COM_RESET_CONNECTION) on release.

        # pool.transaction(): BEGIN on entry, COMMIT on success, ROLLBACK on error.
        async with pool.transaction() as conn, conn.cursor() as cur:
            await cur.execute("SELECT @@autocommit, @@in_transaction")
            print("inside pool.transaction():", await cur.fetchone())

        # Many tasks share the four connections, in strict arrival order.
        async def one_query(i: int) -> int:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute("SELECT %s * 2", (i,))
                (doubled,) = await cur.fetchone()
                return int(doubled)

        results = await asyncio.gather(*(one_query(i) for i in range(20)))
        print("20 concurrent queries:", sum(results))
        stats = pool.stats()
        print(
            f"{pool!r}\nacquires={stats.acquires} created={stats.created} "
            f"wait p99={stats.wait_time.p99 * 1000:.2f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
