"""FastAPI / Starlette integration: pools opened in the app's lifespan, a connection per request.

::

    from typing import Annotated
    import asyncpg
    from fastapi import FastAPI
    from poolkit.integrations.fastapi import Acquire, PoolManager, add_exception_handlers
    from poolkit.postgres import create_pool

    pools = PoolManager({"pg": lambda: create_pool(DSN, max_size=10, acquire_timeout=2)})
    app = FastAPI(lifespan=pools.lifespan)
    add_exception_handlers(app)             # PoolTimeout / PoolOverloaded -> 503 + Retry-After
    app.include_router(pools.router())      # optional GET /pools

    @app.get("/users/{user_id}")
    async def get_user(user_id: int, conn: Annotated[asyncpg.Connection, Acquire("pg")]):
        return dict(await conn.fetchrow("SELECT * FROM users WHERE id = $1", user_id))

``Acquire("pg")`` is ``Depends(connection("pg"), scope="function")``: the connection is released
when the endpoint function returns, *before* the response is sent. A streaming response (whose
body is produced after the endpoint returns) must use ``Acquire("pg", streaming=True)``, which
holds the connection until the response has been sent. ``Depends(connection("pg"))`` without a
scope behaves like the streaming variant (FastAPI's default for dependencies with ``yield``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

try:
    from fastapi import APIRouter, Depends, FastAPI
    from fastapi.responses import JSONResponse
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import Response
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "poolkit.integrations.fastapi requires `pip install poolkit[fastapi]`"
    ) from exc

from .. import HealthThresholds
from ._common import UNAVAILABLE_ERRORS, PoolGroup, PoolSource, is_keyed, log_unavailable

__all__ = (
    "STATE_KEY",
    "Acquire",
    "PoolManager",
    "add_exception_handlers",
    "connection",
    "get_pools",
    "pool",
)

logger = logging.getLogger("poolkit.integrations.fastapi")

#: Key of the :class:`PoolManager` in the lifespan state (``request.state``) and ``app.state``.
STATE_KEY = "poolkit_pools"


class PoolManager(PoolGroup):
    """Named pools opened in a FastAPI (or Starlette) app's lifespan and closed at shutdown.

    Pass :meth:`lifespan` to ``FastAPI(lifespan=...)``; to combine it with your own lifespan,
    enter it inside yours::

        @asynccontextmanager
        async def lifespan(app):
            async with pools.lifespan(app) as state:
                ...                                   # your own startup
                yield {**state, "other": thing}

    Args:
        pools: name -> pool, zero-argument function returning a pool (called at startup, in
            the server's event loop; may be ``async``), or :class:`~poolkit.PoolSettings`.
        thresholds: health thresholds for the ``/pools`` report.
        sample_interval: seconds between background health samples (``None``: on demand).
    """

    def __init__(
        self,
        pools: Mapping[str, PoolSource] | None = None,
        *,
        thresholds: HealthThresholds | None = None,
        sample_interval: float | None = 5.0,
    ) -> None:
        super().__init__(pools, thresholds=thresholds, sample_interval=sample_interval)
        self._dependencies: dict[tuple[str, Any, float | None], Callable[..., Any]] = {}

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[dict[str, Any]]:
        """Open every pool at startup, close them at shutdown.

        Yields the lifespan state ``{STATE_KEY: self}`` (Starlette copies it into each
        ``request.state``); the manager is also stored as ``app.state.poolkit_pools``.
        """
        async with self:
            state = getattr(app, "state", None)
            if state is not None:
                setattr(state, STATE_KEY, self)
            try:
                yield {STATE_KEY: self}
            finally:
                if state is not None and getattr(state, STATE_KEY, None) is self:
                    delattr(state, STATE_KEY)

    def connection(
        self, name: str, *, key: Any = None, timeout: float | None = None
    ) -> Callable[..., Any]:
        """A dependency yielding a connection of pool ``name`` of *this* manager.

        Like the module-level :func:`connection`, without looking the manager up in the app.
        """
        cache_key = (name, key, timeout)
        dependency = self._dependencies.get(cache_key)
        if dependency is None:
            dependency = self._dependencies[cache_key] = _make_dependency(name, key, timeout, self)
        return dependency

    def router(
        self, path: str = "/pools", *, include_in_schema: bool = False, **router_kwargs: Any
    ) -> APIRouter:
        """An ``APIRouter`` with ``GET {path}``: overall status, and per pool health and stats.

        The body never holds a target, a credential or a connection error message. Protect it
        like any operational endpoint (e.g. ``dependencies=[Depends(require_admin)]``).

        Args:
            path: the route's path.
            include_in_schema: list it in the OpenAPI schema.
            **router_kwargs: passed to ``APIRouter`` (``dependencies``, ``tags``...).
        """
        router = APIRouter(**router_kwargs)

        async def pool_status() -> dict[str, Any]:
            return self.status()

        router.add_api_route(
            path,
            pool_status,
            methods=["GET"],
            include_in_schema=include_in_schema,
            name="poolkit_pools",
        )
        return router


def get_pools(conn: HTTPConnection) -> PoolManager:
    """The :class:`PoolManager` serving this request (from the lifespan state or ``app.state``).

    Raises:
        RuntimeError: no manager is installed (``lifespan=manager.lifespan`` is missing).
    """
    state = conn.scope.get("state")
    manager = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    if manager is None:
        manager = getattr(conn.app.state, STATE_KEY, None)
    if isinstance(manager, PoolManager):
        return manager
    raise RuntimeError(
        "no poolkit PoolManager is running for this app: pass "
        "FastAPI(lifespan=manager.lifespan), or enter manager.lifespan(app) in your lifespan"
    )


_dependencies: dict[tuple[str, Any, float | None], Callable[..., Any]] = {}


def connection(name: str, *, key: Any = None, timeout: float | None = None) -> Callable[..., Any]:
    """A dependency that yields a connection of pool ``name`` and releases it afterwards.

    Use it as ``Depends(connection("pg"), scope="function")`` to release the connection before
    the response is sent, or plainly ``Depends(connection("pg"))`` to hold it until the response
    has been sent (needed by streaming responses). :func:`Acquire` spells both.

    The same ``(name, timeout)`` gives the same dependency object, so FastAPI's per-request
    cache hands every sub-dependency of one request the *same* connection.

    Args:
        name: the pool's name in the :class:`PoolManager`.
        key: for a pool keyed by origin or URI (``KeyedPool``, the HTTP and WebSocket pools):
            what to pass to ``acquire(key)``, e.g. ``"/ws/btcusdt"``.
        timeout: acquire timeout (default: the pool's ``acquire_timeout``).
    """
    cache_key = (name, key, timeout)
    dependency = _dependencies.get(cache_key)
    if dependency is None:
        dependency = _dependencies[cache_key] = _make_dependency(name, key, timeout, None)
    return dependency


def Acquire(
    name: str, *, key: Any = None, timeout: float | None = None, streaming: bool = False
) -> Any:
    """``Depends`` on a connection of pool ``name``: ``conn: Annotated[Conn, Acquire("pg")]``.

    Args:
        name: the pool's name in the :class:`PoolManager`.
        key: for a keyed pool (origin, URI): the key to acquire, e.g. ``"/ws/btcusdt"``.
        timeout: acquire timeout (default: the pool's ``acquire_timeout``).
        streaming: hold the connection until the response has been sent (``scope="request"``)
            instead of releasing it when the endpoint returns (``scope="function"``). Needed
            when the response body is produced after the endpoint returns
            (``StreamingResponse``, generators).
    """
    return Depends(
        connection(name, key=key, timeout=timeout), scope="request" if streaming else "function"
    )


def pool(name: str) -> Callable[..., Any]:
    """A dependency returning the pool ``name`` itself (to acquire inside a stream, or a keyed
    pool's ``acquire(key)``): ``p = Depends(pool("pg"))``."""

    async def get_pool(conn: HTTPConnection) -> Any:
        return get_pools(conn)[name]

    get_pool.__name__ = f"poolkit_pool_{name}"
    return get_pool


def _make_dependency(
    name: str, key: Any, timeout: float | None, manager: PoolManager | None
) -> Callable[..., Any]:
    async def acquire_connection(conn: HTTPConnection) -> AsyncIterator[Any]:
        source = manager if manager is not None else get_pools(conn)
        target = source[name]
        if key is not None:
            lease = target.acquire(key, timeout=timeout)
        elif is_keyed(target):
            raise TypeError(
                f"pool {name!r} is a keyed pool: pass key=... (connection({name!r}, key=...)) "
                f"or depend on the pool itself with Depends(pool({name!r}))"
            )
        else:
            lease = target.acquire(timeout=timeout)
        async with lease as pooled:
            yield pooled

    acquire_connection.__name__ = f"poolkit_connection_{name}"
    acquire_connection.__qualname__ = acquire_connection.__name__
    return acquire_connection


def add_exception_handlers(
    app: FastAPI | Any,
    *,
    retry_after: int = 1,
    errors: tuple[type[Exception], ...] = UNAVAILABLE_ERRORS,
) -> None:
    """Answer pool exhaustion with ``503 Service Unavailable`` and a ``Retry-After`` header.

    ``PoolTimeout``, ``PoolOverloaded`` and ``PoolClosed`` (raised by a dependency or by the
    endpoint) become ``503`` with body ``{"detail": "Service Unavailable"}``: no pool name, size
    or host reaches the client. The details go to the ``poolkit.integrations`` logger at
    WARNING. Call it before the app starts (Starlette builds its middleware at startup).

    Args:
        app: the FastAPI or Starlette application.
        retry_after: seconds for the ``Retry-After`` header (a non-negative integer).
        errors: the exception classes to map.
    """
    if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
        raise ValueError(f"retry_after={retry_after!r}: must be a non-negative integer")
    headers = {"Retry-After": str(retry_after)}

    async def unavailable(request: Request, exc: Exception) -> Response:
        log_unavailable(f"{request.method} {request.url.path}", exc)
        return JSONResponse({"detail": "Service Unavailable"}, status_code=503, headers=headers)

    for error in errors:
        app.add_exception_handler(error, unavailable)
