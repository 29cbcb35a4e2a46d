"""poolkit.http keeps the backend contract (``tests/backends/contract.py``).

The contract drives a single-target :class:`~poolkit.Pool`: here the core pool of the base
origin of an :class:`~poolkit.http.HTTPPool` (``http_pool.pool()``), against a real aiohttp
server on 127.0.0.1. ``ResetContract`` does not apply: an HTTP connection carries no session
state to clean (no cookie jar, no per-borrower headers; ``test_http_security.py`` pins that).

One contract test is overridden on purpose: HTTP is stateless, so when the socket of a borrowed
connection dies, the next request of the same borrower opens a fresh socket in the same slot
instead of failing (the dead socket itself is never reused, and the slot still holds at most
one socket).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backends.contract import (
    KillContract,
    PoolFactory,
    ServerCountContract,
    pool_factory,
    wait_until,
)
from backends.http_server import HTTPTestServer, serve
from poolkit.http import HTTPConnection, create_pool


@pytest.fixture
async def contract_server() -> AsyncIterator[HTTPTestServer]:
    """A plain-HTTP server on 127.0.0.1 for one contract test."""
    async with serve() as server:
        yield server


class TestHTTPContract(
    KillContract[HTTPConnection],
    ServerCountContract[HTTPConnection],
):
    """The shared contract, on pooled keep-alive HTTP connections to one origin."""

    server: HTTPTestServer

    @pytest.fixture
    async def make_pool(self, contract_server: HTTPTestServer) -> AsyncIterator[PoolFactory]:
        """The core pool of the base origin of an HTTPPool on the test server."""
        self.server = contract_server

        def build(**config: Any) -> Any:
            return create_pool(contract_server.url, **config).pool()

        async with pool_factory(build) as make:
            yield make

    async def connection_identity(self, conn: HTTPConnection) -> object:
        """The client-side port of the current socket."""
        address = conn.local_address
        assert address is not None
        return address[1]

    async def roundtrip(self, conn: HTTPConnection) -> None:
        """One GET on the connection."""
        assert (await conn.get("/ok")).text() == "ok"

    async def kill(self, conn: HTTPConnection) -> None:
        """Reset every connection from the server's side; wait until the client sees it."""
        self.server.reset_all()

        async def dead() -> bool:
            return not conn.is_alive()

        await wait_until(dead)

    async def server_connection_count(self) -> int:
        """Connections the test server holds open."""
        return self.server.open_connections

    async def test_a_connection_killed_in_use_fails_only_its_borrower(
        self, make_pool: PoolFactory
    ) -> None:
        """HTTP override: a borrower whose socket is killed gets a fresh socket in its slot.

        The dead socket is never used again, nothing fails, and the slot never holds more
        than one socket (the server sees one connection at a time).
        """
        pool = make_pool(min_size=1, max_size=1, check_on_acquire="never")
        async with pool:
            async with pool.acquire(timeout=10) as conn:
                victim = await self.connection_identity(conn)
                await self.kill(conn)
                await self.roundtrip(conn)
                assert await self.connection_identity(conn) != victim
                assert conn.sockets_opened == 2
                await asyncio.sleep(0)
                assert self.server.open_connections <= 1
            async with pool.acquire(timeout=10) as conn:
                await self.roundtrip(conn)
            assert pool.stats().extra["http_reconnects"] == 1
