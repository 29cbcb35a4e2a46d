"""HTTP over aiohttp: :class:`HTTPConnector`, :class:`HTTPPool`, :class:`HTTPClient` and
:func:`create_pool`.

An :class:`HTTPPool` keeps, per origin (``scheme://host:port``), a core :class:`~poolkit.Pool`
of :class:`HTTPConnection` objects, each exactly one keep-alive socket (see the design note in
``_http_conn.py``). The origins live in one :class:`~poolkit.KeyedPool`, so ``max_size`` caps
each origin and ``max_total`` all of them together.

Borrowing gives an :class:`HTTPClient` bound to one connection for the length of the borrow::

    pool = create_pool("https://api.example.com", max_size=10)
    async with pool:
        async with pool.acquire() as client:          # one socket, several requests
            user = (await client.get("/users/1")).json()
            await client.post("/audit", json={"seen": user["id"]})
        response = await pool.request("GET", "/health")   # borrow, send, read, give back
        async with pool.acquire("https://cdn.example.com/assets/") as cdn:  # another origin
            logo = (await cdn.get("logo.png")).body

The backend is split by concern: ``_http_conn.py`` (one pooled connection, requests, the safe
retry; its docstring is the design note), ``_http_wire.py`` (the protocol and the one-socket
aiohttp connector), ``_http_connector.py`` (the :class:`~poolkit.Connector`),
``_http_client.py`` (the borrowed client), ``_http_response.py`` (responses and request
options) and ``_http_util.py`` (origins, redaction, TLS settings, counters).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Unpack

try:
    import aiohttp  # noqa: F401 - imported for the error below when missing
    from yarl import URL
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("poolkit.http requires `pip install poolkit[http]`") from exc

from poolkit import (
    ConfigError,
    KeyedPool,
    Pool,
    PoolConfig,
    PoolEvent,
    PoolStats,
    PoolUsageError,
)

from ._http_client import ClientLease, HTTPClient
from ._http_conn import CrossOriginError, HTTPConnection
from ._http_connector import HTTPConnector, split_base_url, validate_options
from ._http_response import (
    HTTPResponse,
    HTTPStatusError,
    RequestMethods,
    RequestOptions,
    StreamResponse,
)
from ._http_util import Origin, TLSSettings, redact_url, resolve_url

if TYPE_CHECKING:
    import ssl

__all__ = (
    "ClientLease",
    "CrossOriginError",
    "HTTPClient",
    "HTTPConnection",
    "HTTPConnector",
    "HTTPPool",
    "HTTPResponse",
    "HTTPStatusError",
    "Origin",
    "RequestOptions",
    "StreamResponse",
    "create_pool",
    "redact_url",
)

Hook = Callable[[HTTPConnection], Any]

_HTTP_DEFAULT_IDLE = 15.0
_NO_BASE = URL("/")
_ROUTE_CACHE_SIZE = 1024
_HTTP_DEFAULT_HEALTH_INTERVAL = 10.0


class HTTPPool(RequestMethods):
    """Pooled keep-alive HTTP connections, per origin, under one configuration.

    Built by :func:`create_pool` (see there for every argument). ``max_size`` caps the sockets
    of each origin, ``max_total`` those of all origins together.

    The request methods (``request``, ``get``, ``post`` ...) borrow a connection, send, read the
    whole response and give the connection back; ``acquire()`` borrows one for several requests.
    """

    def __init__(
        self,
        base_url: str | URL | None = None,
        config: PoolConfig | None = None,
        *,
        max_total: int | None = None,
        ssl: ssl.SSLContext | bool | None = None,
        cafile: str | PathLike[str] | None = None,
        cadata: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        request_timeout: float | None = 30.0,
        read_timeout: float | None = None,
        retry_idempotent: bool = True,
        health_path: str | None = None,
        health_method: str = "GET",
        health_status: int | Collection[int] | None = None,
        on_connect: Hook | None = None,
        on_acquire: Hook | None = None,
        on_release: Hook | None = None,
        on_close: Hook | None = None,
        on_event: Callable[[PoolEvent], None] | None = None,
        environ: Mapping[str, str] | None = None,
        **config_fields: Any,
    ) -> None:
        """Create the pool (no I/O); see :func:`create_pool`."""
        if config is None:
            # HTTP defaults < HTTP_POOL_* environment variables < keyword arguments.
            merged = _http_defaults(config_fields, health_path)
            defaults = {k: v for k, v in merged.items() if k not in config_fields}
            env = os.environ if environ is None else environ
            config = PoolConfig.from_env("HTTP_POOL", env, **defaults)
            if config_fields:
                config = config.replace(**config_fields)
        elif not isinstance(config, PoolConfig):
            raise ConfigError("config", config, "must be a PoolConfig")
        elif config_fields:
            config = config.replace(**config_fields)
        self._base: URL | None = None
        self._origin: Origin | None = None
        self._base_url = base_url
        if base_url is not None:
            self._origin, self._base, _ = split_base_url(base_url)
        name = config.name or "http"
        self._name = name
        self._tls = TLSSettings(ssl, cafile=cafile, cadata=cadata, owner=f"pool {name!r}")
        # Validate every option now, not at the first connect of an origin.
        self._options: dict[str, Any] = {
            "headers": dict(headers or {}),
            "request_timeout": request_timeout,
            "read_timeout": read_timeout,
            "connect_timeout": config.connect_timeout,
            "retry_idempotent": retry_idempotent,
            "health_path": health_path,
            "health_method": health_method,
            "health_status": health_status,
        }
        validate_options(
            request_timeout=request_timeout,
            read_timeout=read_timeout,
            connect_timeout=config.connect_timeout,
            health_path=health_path,
            health_method=health_method,
            health_status=health_status,
        )
        self._routes: dict[str, tuple[Pool[HTTPConnection], URL]] = {}
        self._keyed: KeyedPool[Origin, HTTPConnection] = KeyedPool(
            self._make_connector,
            config.replace(name=name),
            max_total=max_total,
            key_name=str,
            on_connect=on_connect,
            on_acquire=on_acquire,
            on_release=on_release,
            on_close=on_close,
            on_event=on_event,
        )

    def _make_connector(self, origin: Origin) -> HTTPConnector:
        if origin == self._origin and self._base_url is not None:
            # The base URL (its path, and its credentials) belongs to the base origin only.
            return HTTPConnector(self._base_url, tls=self._tls, **self._options)
        return HTTPConnector(origin.url(), tls=self._tls, **self._options)

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """The pool's name (each origin's pool is named ``name[origin]``)."""
        return self._name

    @property
    def config(self) -> PoolConfig:
        """The configuration of every origin's pool (``max_size`` is per origin)."""
        return self._keyed.config

    @property
    def base_url(self) -> str | None:
        """The base URL, redacted (``None`` if the pool has none)."""
        return redact_url(self._base) if self._base is not None else None

    @property
    def closed(self) -> bool:
        """Whether ``close()`` or ``terminate()`` has begun."""
        return self._keyed.closed

    @property
    def keyed(self) -> KeyedPool[Origin, HTTPConnection]:
        """The underlying :class:`~poolkit.KeyedPool` (one core pool per origin)."""
        return self._keyed

    def origins(self) -> list[str]:
        """The origins that have a pool, e.g. ``["https://api.example.com"]``."""
        keys = self._keyed.keys()  # (KeyedPool iterates over (key, pool) pairs)
        return [str(origin) for origin in keys]

    def pool(self, url: str | URL | None = None) -> Pool[HTTPConnection]:
        """The core pool of ``url``'s origin (default: the base origin)."""
        return self._lookup(url)[0]

    def __repr__(self) -> str:
        stats = self._keyed.total_stats()
        return (
            f"<HTTPPool {self._name!r} base={self.base_url} origins={len(self._keyed.keys())} "
            f"[size={stats.size} idle={stats.idle} in_use={stats.in_use} "
            f"waiting={stats.waiting} max_size={self.config.max_size} "
            f"max_total={self._keyed.max_total}]>"
        )

    # ------------------------------------------------------------------ routing

    def _route(self, url: str | URL | None) -> tuple[Origin, URL]:
        """Return the origin and the absolute target/base URL of ``url``."""
        base = self._base
        if url is None or url == "":
            if self._origin is None or base is None:
                raise PoolUsageError(f"pool {self._name!r} has no base_url: pass an absolute URL")
            return self._origin, base
        if base is None:
            target = resolve_url(_NO_BASE, url)
            if not target.absolute:
                raise PoolUsageError(
                    f"pool {self._name!r} has no base_url: {redact_url(target)} must be absolute"
                )
            return Origin.of(target), target
        target = resolve_url(base, url)
        origin = self._origin
        assert origin is not None
        if origin.matches(target):
            return origin, target
        return Origin.of(target), target

    def _lookup(self, url: str | URL | None) -> tuple[Pool[HTTPConnection], URL]:
        """The pool and absolute URL of ``url``, memoised for string URLs (the hot path)."""
        if isinstance(url, str):
            hit = self._routes.get(url)
            if hit is not None:
                return hit
        origin, target = self._route(url)
        found = (self._keyed.pool(origin), target)
        if isinstance(url, str):
            if len(self._routes) >= _ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[url] = found
        return found

    # ------------------------------------------------------------------ borrowing

    def acquire(self, url: str | URL | None = None, *, timeout: float | None = None) -> ClientLease:
        """Borrow a connection to ``url``'s origin as an :class:`HTTPClient`.

        Args:
            url: ``None`` for the base URL; an absolute URL for another origin (its path
                becomes the client's base); a relative one resolves against the base URL.
            timeout: acquire timeout (default: the pool's ``acquire_timeout``).

        Raises:
            PoolTimeout: no connection became free within ``timeout``.
            ConnectError: a connection could not be opened (``TLSError`` for certificates).
        """
        pool, base = self._lookup(url)
        return ClientLease(pool.acquire(timeout), base)

    async def release(self, client: HTTPClient) -> None:
        """Give back a client obtained with ``await pool.acquire()``.

        Raises:
            PoolUsageError: the client was already released.
        """
        conn = client._detach()
        if conn is None:
            raise PoolUsageError(f"this HTTP client was already released to pool {self._name!r}")
        await self._keyed.pool(conn.origin).release(conn)

    async def request(
        self, method: str, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> HTTPResponse:
        """Borrow a connection, send one request, read the response, give it back.

        See :class:`RequestOptions`; ``url`` may be absolute to reach another origin.
        """
        pool, target = self._lookup(url)
        async with pool.acquire() as conn:
            return await conn._fetch(method, target, kwargs)

    def stream(
        self, method: str, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """Borrow a connection for one streaming response, released when the block ends."""
        pool, target = self._lookup(url)
        return self._stream(pool, method, target, kwargs)

    @asynccontextmanager
    async def _stream(
        self, pool: Pool[HTTPConnection], method: str, target: URL, kwargs: RequestOptions
    ) -> AsyncIterator[StreamResponse]:
        async with (
            pool.acquire() as conn,
            conn.stream(method, target, **kwargs) as response,
        ):
            yield response

    # ------------------------------------------------------------------ life cycle

    async def open(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Open the base origin's pool and warm it to ``min_size`` (other origins open lazily).

        Raises:
            ConnectError: ``wait=True`` and the first connection failed (``TLSError`` ...).
        """
        if self._origin is not None:
            await self._keyed.pool(self._origin).open(wait=wait, timeout=timeout)

    async def close(self, timeout: float | None = None) -> None:
        """Close every origin's pool (see :meth:`Pool.close`); idempotent."""
        await self._keyed.close(timeout)

    def terminate(self) -> None:
        """Abort every connection now (works when the event loop is closed)."""
        self._keyed.terminate()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ stats

    def stats(self) -> PoolStats:
        """All origins together: the core counters plus, in ``extra``, the HTTP counters.

        ``extra`` holds ``http_requests``, ``http_responses_1xx`` ... ``http_responses_5xx``,
        ``http_errors``, ``http_retries``, ``http_reconnects``, ``http_bytes_sent`` and
        ``http_bytes_received``.
        """
        return self._keyed.total_stats()

    def stats_by_origin(self) -> dict[str, PoolStats]:
        """One snapshot per origin, keyed by origin (``"https://api.example.com"``)."""
        return {str(origin): stats for origin, stats in self._keyed.stats().items()}


def _http_defaults(fields: Mapping[str, Any], health_path: str | None) -> dict[str, Any]:
    """HTTP's defaults for fields the caller did not set.

    Idle keep-alive connections expire after 15 s (aiohttp's default; keep it below the
    server's keep-alive timeout). Liveness checks cost no I/O, so they run every 10 s; with a
    health probe, connections are probed in the background rather than before every acquire.
    """
    merged = dict(fields)
    merged.setdefault("max_idle_time", _HTTP_DEFAULT_IDLE)
    idle = merged["max_idle_time"]
    interval = _HTTP_DEFAULT_HEALTH_INTERVAL
    if isinstance(idle, int | float) and not isinstance(idle, bool) and idle > 0:
        interval = min(interval, float(idle))
    merged.setdefault("health_check_interval", interval)
    if health_path is not None:
        merged.setdefault("check_on_acquire", "never")
    return merged


def create_pool(
    base_url: str | URL | None = None,
    config: PoolConfig | None = None,
    *,
    max_total: int | None = None,
    ssl: ssl.SSLContext | bool | None = None,
    cafile: str | PathLike[str] | None = None,
    cadata: str | bytes | None = None,
    headers: Mapping[str, str] | None = None,
    request_timeout: float | None = 30.0,
    read_timeout: float | None = None,
    retry_idempotent: bool = True,
    health_path: str | None = None,
    health_method: str = "GET",
    health_status: int | Collection[int] | None = None,
    on_connect: Hook | None = None,
    on_acquire: Hook | None = None,
    on_release: Hook | None = None,
    on_close: Hook | None = None,
    on_event: Callable[[PoolEvent], None] | None = None,
    environ: Mapping[str, str] | None = None,
    **config_fields: Any,
) -> HTTPPool:
    """Create a pool of keep-alive HTTP connections (no I/O until opened or first used).

    Args:
        base_url: the default origin and base path, e.g. ``"https://api.example.com/v1/"``;
            ``None`` to use absolute URLs only. Credentials in it
            (``https://user:pw@host``) become Basic auth for that origin and are never shown.
        config: a :class:`~poolkit.PoolConfig`; keyword ``config_fields`` override it.
            Without one, the HTTP defaults (``max_idle_time=15``, the keep-alive expiry;
            ``health_check_interval=10``; with ``health_path``, ``check_on_acquire="never"``)
            are overridden by ``HTTP_POOL_*`` environment variables (``HTTP_POOL_MAX_SIZE=20``),
            which the keyword arguments override in turn.
        max_total: cap on sockets across all origins (``max_size`` caps each origin).
        ssl: ``None`` (verify with the system trust store), an :class:`ssl.SSLContext`, or
            ``False`` to disable verification (logged once as a warning).
        cafile: PEM file of CA certificates to trust instead of the system store.
        cadata: PEM/DER CA certificates to trust.
        headers: default headers of every request (e.g. ``User-Agent``).
        request_timeout: seconds for a whole request, body included (``None``: unbounded).
        read_timeout: seconds between two reads of a response (``None``: unbounded).
        retry_idempotent: retry GET/HEAD/OPTIONS/TRACE/PUT/DELETE once when the pooled socket
            was closed before any response byte arrived (never POST or PATCH).
        health_path: path probed by health checks (``None``: liveness only, no I/O).
        health_method: the probe's method (default ``GET``).
        health_status: accepted probe status(es) (default: any 2xx or 3xx).
        on_connect: hook called with each new :class:`HTTPConnection`.
        on_acquire: hook called before a connection is handed out.
        on_release: hook called when a connection comes back.
        on_close: hook called before a connection is closed.
        on_event: callback receiving every :class:`~poolkit.PoolEvent`.
        environ: the environment to read ``HTTP_POOL_*`` from (default ``os.environ``).
        **config_fields: :class:`~poolkit.PoolConfig` fields (``max_size``, ``min_size`` ...).

    Returns:
        The pool; ``async with pool:`` opens (warming ``min_size`` connections to the base
        origin) and closes it.

    Raises:
        ConfigError: an invalid URL or value (URLs are shown redacted).

    Example::

        async with create_pool("https://api.example.com", max_size=10) as pool:
            response = await pool.get("/status")
            async with pool.acquire() as client:
                await client.put("/items/1", json={"name": "x"})
    """
    return HTTPPool(
        base_url,
        config,
        max_total=max_total,
        ssl=ssl,
        cafile=cafile,
        cadata=cadata,
        headers=headers,
        request_timeout=request_timeout,
        read_timeout=read_timeout,
        retry_idempotent=retry_idempotent,
        health_path=health_path,
        health_method=health_method,
        health_status=health_status,
        on_connect=on_connect,
        on_acquire=on_acquire,
        on_release=on_release,
        on_close=on_close,
        on_event=on_event,
        environ=environ,
        **config_fields,
    )
