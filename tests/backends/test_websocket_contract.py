"""poolkit.websocket keeps the backend contract (``tests/backends/contract.py``).

The contract drives a single-target :class:`~poolkit.Pool`: here, the core pool of one URI of a
:class:`~poolkit.websocket.WebSocketPool` (``ws_pool.pool("/contract")``), against a real
websockets server on 127.0.0.1. ``ResetContract`` does not apply: a WebSocket connection left
unclean is closed and replaced, never cleaned (``test_websocket.py`` covers that rule).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backends.contract import (
    BackendContract,
    KillContract,
    PoolFactory,
    ServerCountContract,
    pool_factory,
)
from backends.ws_server import WSServer
from poolkit.websocket import WebSocketConnection, create_pool


@pytest.fixture
async def contract_server() -> AsyncIterator[WSServer]:
    """A plain ws:// server on 127.0.0.1 for one contract test."""
    srv = WSServer()
    await srv.start()
    yield srv
    await srv.stop()


class TestWebSocketContract(
    BackendContract[WebSocketConnection],
    KillContract[WebSocketConnection],
    ServerCountContract,
):
    """The shared contract, on pooled websockets connections to one URI."""

    server: WSServer

    @pytest.fixture
    async def make_pool(self, contract_server: WSServer) -> AsyncIterator[PoolFactory]:
        """The core pool of ``/contract`` in a WebSocketPool on the test server."""
        self.server = contract_server

        def build(**config: Any) -> Any:
            max_size = config.pop("max_size", 10)
            min_size = config.pop("min_size", 0)
            ws_pool = create_pool(
                contract_server.base_uri,
                environ={},
                max_size=max_size,
                min_per_uri=min_size,
                **config,
            )
            return ws_pool.pool("/contract")

        async with pool_factory(build) as make:
            yield make

    async def connection_identity(self, conn: WebSocketConnection) -> object:
        """The client-side port of the TCP connection."""
        return conn.ws.local_address[1]

    async def roundtrip(self, conn: WebSocketConnection) -> None:
        """A JSON echo."""
        await conn.send({"ping": 1})
        assert await conn.recv(timeout=5) == {"ping": 1}

    async def kill(self, conn: WebSocketConnection) -> None:
        """Reset the TCP connection from the server's side and wait until the client sees it."""
        self.server.reset_all()
        await asyncio.wait_for(conn.ws.wait_closed(), 5)

    async def server_connection_count(self) -> int:
        """Connections open on this test's own server."""
        return len(self.server.active)
