"""Pooled WebSocket connections and a stream fan-out hub, on websockets: ``poolkit.websocket``.

Everything a WebSocket user needs is importable from here::

    from poolkit.websocket import FanOut, Gap, create_pool

    pool = create_pool("wss://stream.example.com", max_size=10)
    async with pool:
        async with pool.acquire("/ws/btcusdt") as conn:       # keyed by URI, reused when clean
            await conn.send({"subscribe": "trades"})           # dicts go out as JSON
            print(await conn.recv())

        async with FanOut(pool) as hub:                        # one upstream per stream
            async with hub.subscribe("/ws/btcusdt", subscribe={"subscribe": "trades"}) as s:
                async for msg in s:
                    if isinstance(msg, Gap):                   # upstream lost and restored
                        ...

Requires the ``websocket`` extra: ``pip install poolkit[websocket]``.
"""

from __future__ import annotations

try:
    import websockets.asyncio.client as _websockets_client  # noqa: F401 - the driver check
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "poolkit.websocket requires `pip install poolkit[websocket]` (websockets >= 13)"
    ) from _exc

from poolkit import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    ConnectionBroken,
    KeyedPool,
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

from ._connection import Decode, WebSocketClosed, WebSocketConnection, WireCounters
from ._connector import IdleMessages, WebSocketConnector
from ._fanout import (
    FanOut,
    Gap,
    Overflow,
    StreamStats,
    SubscriberOverflow,
    SubscriberStats,
    SubscribeSpec,
    Subscription,
)
from ._uri import Endpoint, redact_uri, resolve_uri
from ._wspool import (
    WebSocketAcquire,
    WebSocketPool,
    create_pool,
)

__all__ = (
    "AuthenticationError",
    "ConfigError",
    "ConnectError",
    "ConnectionBroken",
    "Decode",
    "Endpoint",
    "FanOut",
    "Gap",
    "IdleMessages",
    "KeyedPool",
    "Overflow",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolError",
    "PoolOverloaded",
    "PoolStats",
    "PoolTimeout",
    "PoolUsageError",
    "StreamStats",
    "SubscribeSpec",
    "SubscriberOverflow",
    "SubscriberStats",
    "Subscription",
    "TLSError",
    "WebSocketAcquire",
    "WebSocketClosed",
    "WebSocketConnection",
    "WebSocketConnector",
    "WebSocketPool",
    "WireCounters",
    "create_pool",
    "redact_uri",
    "resolve_uri",
)

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("poolkit.websocket."):
        try:
            _obj.__module__ = "poolkit.websocket"
        except (AttributeError, TypeError):  # pragma: no cover - aliases are read-only
            pass
del _name, _obj
