"""poolkit.mysql keeps the backend contract (``tests/backends/contract.py``).

Runs against the shared local MariaDB. The pools of a test record the server thread id of every
connection they open (``on_connect``), so server-side counts see only this test's connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiomysql
import pytest

from backends.contract import (
    KillContract,
    PoolFactory,
    ResetContract,
    ServerCountContract,
    pool_factory,
    wait_until,
)
from poolkit.mysql import MySQLConnection, MySQLConnector, create_pool, parse_dsn

pytestmark = pytest.mark.mysql


class TestMySQLContract(
    ResetContract[MySQLConnection],
    KillContract[MySQLConnection],
    ServerCountContract[MySQLConnection],
):
    """The shared contract, on aiomysql connections with the default ``"clean"`` reset."""

    dsn: str
    thread_ids: list[int]

    @pytest.fixture
    async def make_pool(self, mysql_dsn: str) -> AsyncIterator[PoolFactory]:
        """Pools on the shared server that record the thread id of each new connection."""
        self.dsn = mysql_dsn
        self.thread_ids = []

        def build(**config: Any) -> Any:
            return create_pool(
                mysql_dsn,
                environ={},
                on_connect=lambda conn: self.thread_ids.append(conn.thread_id()),
                **config,
            )

        async with pool_factory(build) as make:
            yield make

    async def _admin(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run ``sql`` on a separate, unpooled connection and return all rows."""
        conn = await MySQLConnector(**parse_dsn(self.dsn)).connect()
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql, args or None)
                return [tuple(row) for row in await cur.fetchall()]
        finally:
            conn.close()

    async def connection_identity(self, conn: MySQLConnection) -> object:
        """The server thread id (``CONNECTION_ID()``) from the handshake."""
        return conn.thread_id()

    async def roundtrip(self, conn: MySQLConnection) -> None:
        """``SELECT %s`` with a parameter."""
        async with conn.cursor() as cur:
            await cur.execute("SELECT %s", (1,))
            assert await cur.fetchone() == (1,)

    async def dirty(self, conn: MySQLConnection) -> None:
        """A user variable, a session variable, a temporary table and a named lock."""
        async with conn.cursor() as cur:
            await cur.execute("SET @contract = 1, SESSION sql_select_limit = 7")
            await cur.execute("CREATE TEMPORARY TABLE contract_t (x INT)")
            await cur.execute("SELECT GET_LOCK('poolkit_contract_lock', 0)")

    async def is_clean(self, conn: MySQLConnection) -> bool:
        """None of :meth:`dirty`'s changes are present."""
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT @contract IS NULL, @@sql_select_limit = @@global.sql_select_limit, "
                "IS_USED_LOCK('poolkit_contract_lock') IS NULL"
            )
            row = await cur.fetchone()
            try:
                await cur.execute("SELECT COUNT(*) FROM contract_t")
            except aiomysql.ProgrammingError:
                temp_gone = True
            else:
                await cur.fetchall()
                temp_gone = False
        return bool(row is not None and all(row) and temp_gone)

    async def kill(self, conn: MySQLConnection) -> None:
        """``KILL CONNECTION`` from another session, waiting for the thread to be gone."""
        victim = conn.thread_id()
        await self._admin(f"KILL CONNECTION {int(victim)}")

        async def gone() -> bool:
            rows = await self._admin(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", victim
            )
            return int(rows[0][0]) == 0

        await wait_until(gone)

    async def server_connection_count(self) -> int:
        """Server threads that are connections opened by this test's pools."""
        if not self.thread_ids:
            return 0
        marks = ",".join(["%s"] * len(self.thread_ids))
        rows = await self._admin(
            f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID IN ({marks})",
            *self.thread_ids,
        )
        return int(rows[0][0])
