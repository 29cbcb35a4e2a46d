"""poolkit.postgres keeps the backend contract (``tests/backends/contract.py``).

Runs against the shared local PostgreSQL. Every pool of a test tags its sessions with a unique
``application_name``, so that server-side counts see only this test's connections.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from backends.contract import (
    KillContract,
    PoolFactory,
    ResetContract,
    ServerCountContract,
    pool_factory,
)
from poolkit.postgres import create_pool

pytestmark = pytest.mark.postgres


class TestPostgresContract(
    ResetContract[asyncpg.Connection],
    KillContract[asyncpg.Connection],
    ServerCountContract[asyncpg.Connection],
):
    """The shared contract, on asyncpg connections with the default ``"clean"`` reset."""

    dsn: str
    app: str

    @pytest.fixture
    async def make_pool(self, pg_dsn: str) -> AsyncIterator[PoolFactory]:
        """Pools on the shared server, tagged with this test's application_name."""
        self.dsn = pg_dsn
        self.app = f"poolkit-contract-{uuid.uuid4().hex[:12]}"

        def build(**config: Any) -> Any:
            return create_pool(
                pg_dsn, environ={}, server_settings={"application_name": self.app}, **config
            )

        async with pool_factory(build) as make:
            yield make

    async def connection_identity(self, conn: asyncpg.Connection) -> object:
        """The backend's process id, as the server reports it."""
        return await conn.fetchval("SELECT pg_backend_pid()")

    async def roundtrip(self, conn: asyncpg.Connection) -> None:
        """``SELECT 1`` with a parameter (a cached prepared statement)."""
        assert await conn.fetchval("SELECT $1::int", 1) == 1

    async def dirty(self, conn: asyncpg.Connection) -> None:
        """A setting, a temp table and an advisory lock."""
        await conn.execute(
            "SET work_mem = '7MB'; CREATE TEMP TABLE contract_t (x int); "
            "SELECT pg_advisory_lock(4242)"
        )

    async def is_clean(self, conn: asyncpg.Connection) -> bool:
        """None of :meth:`dirty`'s changes are present."""
        row = await conn.fetchrow(
            "SELECT current_setting('work_mem') <> '7MB' AS setting, "
            "to_regclass('pg_temp.contract_t') IS NULL AS temp, "
            "NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid()) AS locks"
        )
        assert row is not None
        return bool(row["setting"] and row["temp"] and row["locks"])

    async def kill(self, conn: asyncpg.Connection) -> None:
        """pg_terminate_backend from another session, waiting for the backend to exit."""
        pid = conn.get_server_pid()
        admin = await asyncpg.connect(self.dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
        finally:
            await admin.close()

    async def server_connection_count(self) -> int:
        """Sessions with this test's application_name."""
        admin = await asyncpg.connect(self.dsn)
        try:
            count = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", self.app
            )
        finally:
            await admin.close()
        return int(count)
