"""WebSocketPool and create_pool(): pooled WebSocket connections keyed by URI.

A :class:`WebSocketPool` is a thin facade over the core :class:`~poolkit.KeyedPool`: one
:class:`~poolkit.Pool` per URI (an :class:`Endpoint`), all under one global cap. The facade adds
what the core cannot know: resolving ``"/ws/btcusdt"`` against ``base_uri``, routing a release
straight to the right URI's pool, use-after-release detection (via the pool hooks), and the
WebSocket traffic counters in :meth:`WebSocketPool.stats`.
"""

from __future__ import annotations

import asyncio
import json
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from .. import AcquireContext, ConfigError, KeyedPool, Pool, PoolConfig, PoolEvent, PoolStats
from ._connection import Decode, WebSocketConnection, WireCounters, check_decode, compact_dumps
from ._connector import IdleMessages, WebSocketConnector
from ._uri import Endpoint, check_uri, redact_uri, resolve_uri

__all__ = (
    "WebSocketAcquire",
    "WebSocketPool",
    "create_pool",
)

Hook = Callable[[WebSocketConnection], Awaitable[None] | None]

#: PoolConfig defaults that differ from the core's, for WebSocket connections.
_WS_DEFAULTS: Final[Mapping[str, Any]] = {
    "min_size": 0,
    "acquire_timeout": 10.0,
    "max_idle_time": 300.0,
    "health_check_interval": 30.0,
}


@dataclass(frozen=True, slots=True)
class _ConnectorOptions:
    ssl: ssl_module.SSLContext | None
    headers: Mapping[str, str] | None
    decode: Decode
    dumps: Callable[[Any], str | bytes]
    loads: Callable[[str | bytes], Any]
    idle_messages: IdleMessages
    ping_interval: float | None
    ping_timeout: float | None
    close_timeout: float
    open_timeout: float
    max_message_size: int | None
    max_queue: int | None
    compression: str | None
    subprotocols: Sequence[str] | None
    origin: str | None
    connect_kwargs: Mapping[str, Any] | None


class WebSocketPool:
    """Pooled WebSocket connections, keyed by URI, under a global cap.

    Made by :func:`create_pool`. Each URI gets its own :class:`~poolkit.Pool` (strict FIFO
    waiters, health checks, idle reaping, lifetimes); ``max_size`` caps the connections of all
    URIs together, evicting the least recently used idle connection of another URI when needed.

    Example::

        pool = create_pool("wss://stream.example.com", max_size=10)
        async with pool:
            async with pool.acquire("/ws/btcusdt") as conn:
                await conn.send({"subscribe": "trades"})
                async for msg in conn:
                    ...
    """

    def __init__(
        self,
        base_uri: str | None,
        options: _ConnectorOptions,
        config: PoolConfig,
        *,
        max_size: int,
        on_connect: Hook | None = None,
        on_acquire: Hook | None = None,
        on_release: Hook | None = None,
        on_close: Hook | None = None,
        on_event: Callable[[PoolEvent], None] | None = None,
    ) -> None:
        self._base_uri = base_uri
        self._options = options
        self._counters: dict[Endpoint, WireCounters] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._keyed: KeyedPool[Endpoint, WebSocketConnection] = KeyedPool(
            self._make_connector,
            config,
            max_total=max_size,
            key_name=lambda endpoint: endpoint.display,
            on_connect=on_connect,
            on_acquire=_lease_hook(on_acquire),
            on_release=_return_hook(on_release) if on_release is not None else None,
            on_close=on_close,
            on_event=on_event,
        )
        self._max_size = max_size
        # Without a user on_release hook the lease ends at the borrower's release itself.
        self._ends_lease_at_release = on_release is None

    # -- properties -----------------------------------------------------------------------------

    @property
    def base_uri(self) -> str | None:
        """The redacted base URI that paths are resolved against (``None`` if not set)."""
        return redact_uri(self._base_uri) if self._base_uri is not None else None

    @property
    def config(self) -> PoolConfig:
        """The configuration of each URI's pool (``max_size`` there is the per-URI cap)."""
        return self._keyed.config

    @property
    def max_size(self) -> int:
        """The cap on connections across all URIs."""
        return self._max_size

    @property
    def keyed(self) -> KeyedPool[Endpoint, WebSocketConnection]:
        """The underlying core :class:`~poolkit.KeyedPool`."""
        return self._keyed

    @property
    def closed(self) -> bool:
        """``True`` once ``close()`` or ``terminate()`` has begun."""
        return self._keyed.closed

    def __repr__(self) -> str:
        total = self._keyed.total_stats()
        base = self.base_uri or "-"
        return (
            f"<WebSocketPool base={base} uris={len(self._keyed.keys())} size={total.size} "
            f"idle={total.idle} in_use={total.in_use} waiting={total.waiting} "
            f"max_size={self._max_size}>"
        )

    # -- URIs -----------------------------------------------------------------------------------

    def endpoint(self, uri_or_path: str) -> Endpoint:
        """Return the :class:`Endpoint` for a path (joined to ``base_uri``) or a full URI.

        Raises:
            ConfigError: not a ws/wss URI, or a path without ``base_uri``.
        """
        endpoint = self._endpoints.get(uri_or_path)
        if endpoint is None:
            endpoint = Endpoint(resolve_uri(self._base_uri, uri_or_path))
            if len(self._endpoints) < 10_000:
                self._endpoints[uri_or_path] = endpoint
        return endpoint

    def pool(self, uri_or_path: str) -> Pool[WebSocketConnection]:
        """Return the core :class:`~poolkit.Pool` of one URI (created on first use)."""
        return self._keyed.pool(self.endpoint(uri_or_path))

    def uris(self) -> list[str]:
        """Return the redacted URIs that have a pool."""
        return [endpoint.display for endpoint, _pool in self._keyed]

    # -- acquire / release ----------------------------------------------------------------------

    def acquire(self, uri_or_path: str, timeout: float | None = None) -> WebSocketAcquire:
        """Borrow a connection to a URI: ``async with pool.acquire("/ws/x") as conn``.

        Also awaitable: ``conn = await pool.acquire("/ws/x")``, then :meth:`release`. A
        released connection is reused for the same URI when it is clean (see
        :meth:`WebSocketConnection.is_clean`).

        Args:
            uri_or_path: a path joined to ``base_uri`` (see :func:`resolve_uri`) or a full
                ``ws://``/``wss://`` URI.
            timeout: bound on the wait (default: ``acquire_timeout``).

        Raises:
            PoolTimeout: no connection within ``timeout`` (``.timeout`` and ``.max_size`` are
                set; the last connect error is chained).
            ConnectError: the first connection could not be opened (``TLSError`` and
                ``AuthenticationError`` fail waiters at once).
            PoolClosed: the pool is closed.
            ConfigError: a bad URI or path.
        """
        return WebSocketAcquire(self, self._keyed.acquire(self.endpoint(uri_or_path), timeout))

    async def release(self, conn: WebSocketConnection, *, discard: bool = False) -> None:
        """Give back a connection obtained with ``await pool.acquire(...)``.

        Args:
            conn: the connection.
            discard: close it instead of reusing it.

        Raises:
            PoolUsageError: released twice, or not from this pool.
        """
        endpoint = conn.endpoint
        if endpoint not in self._counters:
            await self._keyed.release(conn, discard=discard)  # raises: not from this pool
            return
        pool = self._keyed.pool(endpoint)
        if not conn._released:
            self._end_use(conn)
        await pool.release(conn, discard=discard)

    # -- lifecycle ------------------------------------------------------------------------------

    async def close(self, timeout: float | None = None) -> None:
        """Close every URI's pool (idempotent; see :meth:`Pool.close`)."""
        await self._keyed.close(timeout)

    def terminate(self) -> None:
        """Abort every connection now (works even if the event loop is closed)."""
        self._keyed.terminate()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- stats ----------------------------------------------------------------------------------

    def stats(self) -> PoolStats:
        """All URIs together: the core snapshot (``max_size`` is the global cap) plus, in
        ``extra``, the traffic counters: ``messages_sent``, ``messages_received``,
        ``bytes_sent``, ``bytes_received``, ``connects``, ``reconnects``, ``lost``,
        ``dirty_discards``, ``unread_discarded`` and ``ping_failures``.

        The same :class:`~poolkit.PoolStats` every poolkit pool returns.
        """
        return self._keyed.total_stats()

    def stats_by_uri(self) -> dict[str, PoolStats]:
        """One snapshot per URI (redacted; a second pool to the same URI gets `` #2``)."""
        by_uri: dict[str, PoolStats] = {}
        for endpoint, snap in self._keyed.stats().items():
            label = endpoint.display
            n = 2
            while label in by_uri:
                label = f"{endpoint.display} #{n}"
                n += 1
            by_uri[label] = snap
        return by_uri

    # -- internals ------------------------------------------------------------------------------

    def _end_use(self, conn: WebSocketConnection) -> None:
        # Synchronous, before the core's release: later send/recv by the borrower now raise.
        conn._released = True
        if self._ends_lease_at_release:
            conn._leased = False

    def _make_connector(self, endpoint: Endpoint) -> WebSocketConnector:
        counters = self._counters.get(endpoint)
        if counters is None:
            counters = self._counters[endpoint] = WireCounters()
        opts = self._options
        secure = endpoint.uri.lower().startswith("wss:")
        return WebSocketConnector(
            endpoint,
            ssl=opts.ssl if secure else None,
            headers=opts.headers,
            decode=opts.decode,
            dumps=opts.dumps,
            loads=opts.loads,
            idle_messages=opts.idle_messages,
            ping_interval=opts.ping_interval,
            ping_timeout=opts.ping_timeout,
            close_timeout=opts.close_timeout,
            open_timeout=opts.open_timeout,
            max_message_size=opts.max_message_size,
            max_queue=opts.max_queue,
            compression=opts.compression,
            subprotocols=opts.subprotocols,
            origin=opts.origin,
            connect_kwargs=opts.connect_kwargs,
            counters=counters,
        )


def _lease_hook(user: Hook | None) -> Hook:
    if user is None:

        def on_acquire(conn: WebSocketConnection) -> None:
            conn._leased = True
            conn._released = False

        return on_acquire

    def on_acquire_then_user(conn: WebSocketConnection) -> Awaitable[None] | None:
        conn._leased = True
        conn._released = False
        return user(conn)

    return on_acquire_then_user


def _return_hook(user: Hook) -> Hook:
    async def user_then_end_lease(conn: WebSocketConnection) -> None:
        # The hook may still talk (unsubscribe, drain): only its own task may, until it ends.
        conn._hook_task = asyncio.current_task()
        try:
            result = user(conn)
            if result is not None:
                await result
        finally:
            conn._hook_task = None
            conn._leased = False

    return user_then_end_lease


class WebSocketAcquire:
    """What :meth:`WebSocketPool.acquire` returns: an async context manager, and awaitable.

    ``async with pool.acquire(uri) as conn`` releases on exit; ``conn = await
    pool.acquire(uri)`` leaves the release to you (``await pool.release(conn)``). Once released,
    the connection refuses ``send``/``recv`` with :class:`~poolkit.PoolUsageError`.
    """

    __slots__ = ("_conn", "_inner", "_pool")

    def __init__(self, pool: WebSocketPool, inner: AcquireContext[WebSocketConnection]) -> None:
        self._pool = pool
        self._inner = inner
        self._conn: WebSocketConnection | None = None

    def __await__(self) -> Generator[Any, None, WebSocketConnection]:
        return self._inner.__await__()

    async def __aenter__(self) -> WebSocketConnection:
        conn = await self._inner.__aenter__()
        self._conn = conn
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._pool._end_use(conn)
        await self._inner.__aexit__(exc_type, exc, tb)


def create_pool(
    base_uri: str | None = None,
    config: PoolConfig | None = None,
    *,
    max_size: int | None = None,
    max_per_uri: int | None = None,
    min_per_uri: int | None = None,
    ssl: ssl_module.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    decode: Decode = "auto",
    dumps: Callable[[Any], str | bytes] = compact_dumps,
    loads: Callable[[str | bytes], Any] = json.loads,
    idle_messages: IdleMessages = "close",
    ping_interval: float | None = 20.0,
    ping_timeout: float | None = 20.0,
    max_message_size: int | None = 2**20,
    max_queue: int | None = 16,
    compression: str | None = "deflate",
    subprotocols: Sequence[str] | None = None,
    origin: str | None = None,
    connect_kwargs: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    on_connect: Hook | None = None,
    on_acquire: Hook | None = None,
    on_release: Hook | None = None,
    on_close: Hook | None = None,
    on_event: Callable[[PoolEvent], None] | None = None,
    **config_fields: Any,
) -> WebSocketPool:
    """Create a pool of WebSocket connections keyed by URI (not opened yet; no I/O).

    Connections are opened on demand, per URI. The configuration comes from ``config``, else
    from ``WEBSOCKET_POOL_*`` environment variables (``WEBSOCKET_POOL_ACQUIRE_TIMEOUT=5``), with
    WebSocket defaults (``acquire_timeout=10``, ``max_idle_time=300``,
    ``health_check_interval=30``); :class:`~poolkit.PoolConfig` fields given as keywords
    override both. Sizes are set here, not in ``config``:

    Args:
        base_uri: ``ws://`` or ``wss://`` URI that paths given to ``acquire()`` are joined to.
        config: a ready :class:`~poolkit.PoolConfig` for each URI's pool (timeouts, health
            checks, lifetimes); ``config.max_size``/``min_size`` are the defaults of
            ``max_size``/``min_per_uri``.
        max_size: cap on open connections across all URIs (default 10).
        max_per_uri: cap per URI (default: ``max_size``).
        min_per_uri: connections kept open per URI once it has been used (default 0). With 1 or
            more, a connection that drops while idle is re-opened in the background with
            capped, jittered exponential backoff (``reconnect_initial_delay`` ..
            ``reconnect_max_delay``).
        ssl: TLS context for ``wss://`` URIs; ``None`` means a default *verifying* context.
        headers: extra handshake headers (e.g. ``Authorization``); never logged or shown.
        decode: how received messages are decoded (see :data:`Decode`; default ``"auto"``).
        dumps: encoder for non-``str``/``bytes`` messages passed to ``send``.
        loads: JSON decoder used by ``decode="auto"``/``"json"``.
        idle_messages: ``"close"`` (default) or ``"discard"``: what to do with messages that
            arrive on an idle connection (see :data:`IdleMessages`).
        ping_interval: websockets' keepalive interval (applies while in use and idle).
        ping_timeout: websockets' keepalive pong timeout.
        max_message_size: largest incoming message in bytes.
        max_queue: websockets' receive buffer high-water mark, in frames.
        compression: ``"deflate"`` (default) or ``None``.
        subprotocols: subprotocols to offer.
        origin: ``Origin`` header.
        connect_kwargs: more keyword arguments for ``websockets.asyncio.client.connect``.
        environ: the environment to read (``os.environ`` when ``None``).
        on_connect: hook run on each new connection (sync or async).
        on_acquire: hook run before a connection is handed out.
        on_release: hook run in the pool's release task before the cleanliness test: the
            place to unsubscribe and :meth:`~WebSocketConnection.discard_pending`.
        on_close: hook run before a connection is closed.
        on_event: callback receiving every :class:`~poolkit.PoolEvent`.
        **config_fields: :class:`~poolkit.PoolConfig` fields (``acquire_timeout``,
            ``max_idle_time``, ``health_check_interval``, ``check_timeout``, ...).

    Raises:
        ConfigError: an invalid value (the message names the field).
    """
    if base_uri is not None:
        check_uri(base_uri, field="base_uri")
    if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
        raise ConfigError("ssl", ssl, "must be an ssl.SSLContext or None")
    check_decode(decode)
    if idle_messages not in ("close", "discard"):
        raise ConfigError("idle_messages", idle_messages, 'must be "close" or "discard"')
    for name in ("max_size", "min_size"):
        if name in config_fields:
            hint = "max_size" if name == "max_size" else "min_per_uri"
            raise ConfigError(
                name, config_fields[name], f"set sizes with create_pool({hint}=...) instead"
            )
    if config is None:
        base = PoolConfig.from_env("WEBSOCKET_POOL", environ, **_WS_DEFAULTS)
        total = max_size if max_size is not None else 10
    else:
        if not isinstance(config, PoolConfig):
            raise ConfigError("config", config, "must be a PoolConfig")
        base = config
        total = max_size if max_size is not None else config.max_size
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ConfigError("max_size", total, "must be an integer >= 1")
    per_uri = total if max_per_uri is None else max_per_uri
    if isinstance(per_uri, bool) or not isinstance(per_uri, int) or per_uri < 1:
        raise ConfigError("max_per_uri", per_uri, "must be an integer >= 1")
    if per_uri > total:
        raise ConfigError("max_per_uri", per_uri, f"must not exceed max_size ({total})")
    floor = min_per_uri if min_per_uri is not None else (0 if config is None else base.min_size)
    if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
        raise ConfigError("min_per_uri", floor, "must be an integer >= 0")
    if floor > per_uri:
        raise ConfigError("min_per_uri", floor, f"must not exceed max_per_uri ({per_uri})")
    cfg = base.replace(**config_fields, max_size=per_uri, min_size=floor)
    for name, value in (("ping_interval", ping_interval), ("ping_timeout", ping_timeout)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise ConfigError(name, value, "must be a number of seconds > 0 or None")
    options = _ConnectorOptions(
        ssl=ssl,
        headers=headers,
        decode=decode,
        dumps=dumps,
        loads=loads,
        idle_messages=idle_messages,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=cfg.close_timeout,
        open_timeout=cfg.connect_timeout,
        max_message_size=max_message_size,
        max_queue=max_queue,
        compression=compression,
        subprotocols=subprotocols,
        origin=origin,
        connect_kwargs=connect_kwargs,
    )
    return WebSocketPool(
        base_uri,
        options,
        cfg,
        max_size=total,
        on_connect=on_connect,
        on_acquire=on_acquire,
        on_release=on_release,
        on_close=on_close,
        on_event=on_event,
    )
