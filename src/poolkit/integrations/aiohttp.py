"""aiohttp web integration: pools opened through ``cleanup_ctx``, a typed app key, a 503 middleware.

::

    from aiohttp import web
    from poolkit.integrations import aiohttp as pk
    from poolkit.postgres import create_pool

    app = web.Application()
    pk.setup(app, {"pg": lambda: create_pool(DSN, max_size=10, acquire_timeout=2)})

    async def handler(request: web.Request) -> web.Response:
        async with pk.acquire(request, "pg") as conn:
            return web.json_response({"n": await conn.fetchval("SELECT 1")})

:func:`setup` stores a :class:`~poolkit.integrations.PoolGroup` under the typed key
:data:`POOLS` (so ``app[POOLS]`` is typed and raises no ``NotAppKeyWarning``), opens every
pool when the app starts and closes them at cleanup, and installs :func:`error_middleware`:
``PoolTimeout`` / ``PoolOverloaded`` / ``PoolClosed`` become ``503`` with ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

try:
    from aiohttp import web
    from aiohttp.typedefs import Handler, Middleware
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "poolkit.integrations.aiohttp requires `pip install poolkit[aiohttp]`"
    ) from exc

from .. import HealthThresholds
from ._common import UNAVAILABLE_ERRORS, PoolGroup, PoolSource, is_keyed, log_unavailable

__all__ = ("POOLS", "acquire", "error_middleware", "get_pools", "setup")

logger = logging.getLogger("poolkit.integrations.aiohttp")

#: Typed application key of the :class:`PoolGroup` (``request.config_dict[POOLS]``).
POOLS: web.AppKey[PoolGroup] = web.AppKey("poolkit_pools", PoolGroup)


def setup(
    app: web.Application,
    pools: Mapping[str, PoolSource] | PoolGroup,
    *,
    middleware: bool = True,
    retry_after: int = 1,
    stats_path: str | None = None,
    thresholds: HealthThresholds | None = None,
    sample_interval: float | None = 5.0,
) -> PoolGroup:
    """Attach pools to ``app``: opened at startup, closed at cleanup.

    Args:
        app: the application (before it starts).
        pools: name -> pool, zero-argument function returning a pool (called at startup, in the
            server's event loop; may be ``async``), or :class:`~poolkit.PoolSettings`; or a
            ready :class:`PoolGroup`.
        middleware: install :func:`error_middleware` (503 on pool exhaustion).
        retry_after: seconds for the ``Retry-After`` header.
        stats_path: if set, add ``GET stats_path`` returning the pools' health and stats.
        thresholds: health thresholds (ignored when ``pools`` is a :class:`PoolGroup`).
        sample_interval: seconds between background health samples (likewise).

    Returns:
        The group, also available as ``app[POOLS]``.
    """
    group = (
        pools
        if isinstance(pools, PoolGroup)
        else PoolGroup(pools, thresholds=thresholds, sample_interval=sample_interval)
    )
    app[POOLS] = group

    async def pools_ctx(app: web.Application) -> AsyncIterator[None]:
        await group.open()
        try:
            yield
        finally:
            await group.close()

    app.cleanup_ctx.append(pools_ctx)
    if middleware:
        app.middlewares.append(error_middleware(retry_after=retry_after))
    if stats_path is not None:

        async def pool_status(request: web.Request) -> web.Response:
            return web.json_response(request.config_dict[POOLS].status())

        app.router.add_get(stats_path, pool_status, name="poolkit_pools")
    return group


def get_pools(request: web.Request) -> PoolGroup:
    """The :class:`PoolGroup` of this request's application (or of a parent application).

    Raises:
        RuntimeError: :func:`setup` was not called on this app or a parent.
    """
    try:
        return request.config_dict[POOLS]
    except KeyError:
        raise RuntimeError(
            "no poolkit pools on this application: call poolkit.integrations.aiohttp.setup(app, "
            "pools) before starting it"
        ) from None


def acquire(
    request: web.Request, name: str, *, key: Any = None, timeout: float | None = None
) -> Any:
    """``async with acquire(request, "pg") as conn``: a connection of pool ``name``.

    Args:
        request: the current request.
        name: the pool's name given to :func:`setup`.
        key: for a pool keyed by origin or URI (``KeyedPool``, the HTTP and WebSocket pools):
            what to pass to ``acquire(key)``.
        timeout: acquire timeout (default: the pool's ``acquire_timeout``).

    Returns:
        The pool's acquire context (an async context manager, also awaitable).
    """
    target = get_pools(request)[name]
    if key is not None:
        return target.acquire(key, timeout=timeout)
    if is_keyed(target):
        raise TypeError(f"pool {name!r} is a keyed pool: pass key=... to acquire()")
    return target.acquire(timeout=timeout)


def error_middleware(
    *,
    retry_after: int = 1,
    errors: tuple[type[Exception], ...] = UNAVAILABLE_ERRORS,
) -> Middleware:
    """A middleware answering pool exhaustion with ``503`` and ``Retry-After``.

    The body is ``{"detail": "Service Unavailable"}``; the exception's message (pool name,
    sizes, no secrets) goes to the ``poolkit.integrations`` logger at WARNING. An error raised
    after a streamed response was prepared cannot be turned into a 503 and propagates.

    Args:
        retry_after: seconds for the ``Retry-After`` header (a non-negative integer).
        errors: the exception classes to map.
    """
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
        raise ValueError(f"retry_after={retry_after!r}: must be a non-negative integer")
    headers = {"Retry-After": str(retry_after)}

    @web.middleware
    async def poolkit_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors as exc:
            log_unavailable(f"{request.method} {request.path}", exc)
            return web.json_response({"detail": "Service Unavailable"}, status=503, headers=headers)

    return poolkit_errors
