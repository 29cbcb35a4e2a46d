"""What ``poolkit bench`` measures on each kind of server: one adapter per backend.

An :class:`Adapter` knows how to build a pool for the target (through the backend's public
``create_pool``, or :class:`~poolkit.Pool` over the stdlib HTTP connector for the embedded
server), the one cheap operation a request performs on a borrowed connection, and, for
databases, how to read the server's connection limit. Backends are imported only here, only
once chosen, so ``poolkit bench`` works with no extra installed.
"""

from __future__ import annotations

import importlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from .. import Connector, Pool
from ._client import HTTPStreamConnection, HTTPStreamConnector
from ._errors import EXIT_USAGE, BenchError
from ._url import Target

__all__ = ("Adapter", "BenchPool", "embedded_adapter", "load_adapter")


class BenchPool(Protocol):
    """What the measurements need from a pool; :class:`~poolkit.Pool` has it as is.

    Keyed backends (WebSocket, HTTP) are wrapped so that every acquire goes to the target's
    key, through the backend's own ``acquire``.
    """

    @property
    def connector(self) -> Connector[Any]:
        """The connector of the target's pool (used directly for connect-per-request)."""
        ...

    async def open(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Open the pool; with ``wait``, fail fast if the first connection cannot be made."""
        ...

    def acquire(self) -> Any:
        """An async context manager lending one connection."""
        ...

    async def close(self) -> None:
        """Close the pool and every connection."""
        ...


@dataclass(frozen=True, slots=True)
class Adapter:
    """How to benchmark one target.

    Attributes:
        label: what the target is, for the report (e.g. ``"PostgreSQL (asyncpg)"``).
        operation_label: the work of one request (e.g. ``"SELECT 1"``).
        make_pool: build an *unopened* pool from :class:`~poolkit.PoolConfig` keyword fields
            (``min_size``, ``max_size``, timeouts, ``name``).
        operation: run one request on a borrowed connection.
        server_limit: read the server's connection limit through a connection (databases).
    """

    label: str
    operation_label: str
    make_pool: Callable[..., BenchPool]
    operation: Callable[[Any], Awaitable[None]]
    server_limit: Callable[[Any], Awaitable[int]] | None = None


class _OneKey:
    """A keyed backend pool (``KeyedPool``-like) seen as the pool of one key."""

    def __init__(self, keyed: Any, key: str | None) -> None:
        self._keyed = keyed
        self._key = key
        self._pool: Pool[Any] = keyed.pool(key)

    @property
    def connector(self) -> Connector[Any]:
        return self._pool.connector

    async def open(self, *, wait: bool = True, timeout: float | None = None) -> None:
        await self._pool.open(wait=wait, timeout=timeout)

    def acquire(self) -> Any:
        return self._keyed.acquire(self._key)

    async def close(self) -> None:
        await self._keyed.close()


async def _http_get(conn: HTTPStreamConnection, path: str) -> None:
    status = await conn.request(path)
    if status >= 500:
        raise ConnectionError(f"the server answered HTTP {status}")


def _stream_http_adapter(host: str, port: int, path: str, *, tls: bool, label: str) -> Adapter:
    context = ssl.create_default_context() if tls else None
    connector = HTTPStreamConnector(host, port, tls=context, path=path)

    def make_pool(**config: Any) -> BenchPool:
        return Pool(connector, **config)

    async def operation(conn: HTTPStreamConnection) -> None:
        await _http_get(conn, path)

    return Adapter(
        label=label, operation_label=f"GET {path}", make_pool=make_pool, operation=operation
    )


def embedded_adapter(host: str, port: int) -> Adapter:
    """The adapter for the in-process HTTP/1.1 server (stdlib client, no extra needed)."""
    return _stream_http_adapter(
        host, port, "/", tls=False, label="embedded HTTP/1.1 server (in-process, stdlib client)"
    )


def _import_backend(target: Target) -> Any:
    module = f"poolkit.{target.backend}"
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BenchError(
            f"{target.scheme}:// targets need the {target.backend} extra: "
            f"pip install 'poolkit[{target.backend}]' ({' '.join(str(exc).split())})",
            EXIT_USAGE,
        ) from exc


def _create_pool(backend: Any, target: Target) -> Callable[..., BenchPool]:
    def make_pool(**config: Any) -> BenchPool:
        pool: Pool[Any] = backend.create_pool(target.url, **config)
        return pool

    return make_pool


def _postgres(target: Target) -> Adapter:
    backend = _import_backend(target)

    async def operation(conn: Any) -> None:
        await conn.fetchval("SELECT 1")

    async def server_limit(conn: Any) -> int:
        return int(await conn.fetchval("SHOW max_connections"))

    return Adapter(
        label="PostgreSQL (poolkit.postgres, asyncpg)",
        operation_label="SELECT 1",
        make_pool=_create_pool(backend, target),
        operation=operation,
        server_limit=server_limit,
    )


async def _mysql_scalar(conn: Any, sql: str) -> Any:
    async with conn.cursor() as cur:
        await cur.execute(sql)
        row = await cur.fetchone()
    return row[0] if row else None


def _mysql(target: Target) -> Adapter:
    backend = _import_backend(target)

    async def operation(conn: Any) -> None:
        await _mysql_scalar(conn, "SELECT 1")

    async def server_limit(conn: Any) -> int:
        return int(await _mysql_scalar(conn, "SELECT @@max_connections"))

    return Adapter(
        label="MySQL/MariaDB (poolkit.mysql, aiomysql)",
        operation_label="SELECT 1",
        make_pool=_create_pool(backend, target),
        operation=operation,
        server_limit=server_limit,
    )


def _http(target: Target) -> Adapter:
    backend = _import_backend(target)
    path = _path_of(target.url)
    shown = _path_of(target.display)  # a token in the query string must not be printed
    # The pool's base URL is the origin (with any credentials: Basic auth); the path and the
    # query string go with each request.
    parts = urlsplit(target.url)
    origin = f"{parts.scheme}://{parts.netloc}"

    def make_pool(**config: Any) -> BenchPool:
        pool = backend.create_pool(origin, **config)
        # A pool keyed by origin is measured through its base origin (key None), so that the
        # credentials of the base URL are applied once.
        return pool if isinstance(pool, Pool) else _OneKey(pool, None)

    async def operation(conn: Any) -> None:
        response = await conn.get(path)
        if response.status >= 500:
            raise ConnectionError(f"the server answered HTTP {response.status}")

    return Adapter(
        label="HTTP (poolkit.http, aiohttp)",
        operation_label=f"GET {shown}",
        make_pool=make_pool,
        operation=operation,
    )


def _websocket(target: Target) -> Adapter:
    backend = _import_backend(target)

    def make_pool(**config: Any) -> BenchPool:
        min_size = config.pop("min_size", 0)
        keyed = backend.create_pool(target.url, min_per_uri=min_size, **config)
        return _OneKey(keyed, target.url)

    async def operation(conn: Any) -> None:
        await conn.ping()

    return Adapter(
        label="WebSocket (poolkit.websocket, websockets)",
        operation_label="ping/pong",
        make_pool=make_pool,
        operation=operation,
    )


def _path_of(url: str) -> str:
    """The path and query of ``url`` (``"/"`` if it has neither), without the fragment."""
    rest = url.split("://", 1)[1].split("#", 1)[0]
    starts = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
    if not starts:
        return "/"
    tail = rest[min(starts) :]
    return tail if tail.startswith("/") else "/" + tail


_LOADERS: dict[str, Callable[[Target], Adapter]] = {
    "postgres": _postgres,
    "mysql": _mysql,
    "http": _http,
    "websocket": _websocket,
}


def load_adapter(target: Target) -> Adapter:
    """Import the backend for ``target`` and return its adapter.

    Raises:
        BenchError: the backend's extra is not installed (exit code 2).
    """
    return _LOADERS[target.backend](target)
