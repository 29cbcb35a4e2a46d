"""What the web-framework and metrics integrations share: a group of named pools, and helpers.

:class:`PoolGroup` opens several named pools together (in an application's lifespan), closes
them together, samples their health in the background and renders the ``/pools`` report. The
FastAPI and aiohttp integrations build on it; it imports no framework.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

from .. import HealthMonitor, HealthReport, HealthThresholds, PoolSettings, PoolStats
from ..errors import PoolClosed, PoolOverloaded, PoolTimeout, PoolUsageError

__all__ = (
    "UNAVAILABLE_ERRORS",
    "PoolGroup",
    "PoolSource",
    "backend_name",
    "is_keyed",
    "iter_pools",
    "log_unavailable",
    "pool_name",
    "snapshot",
    "sub_pools",
)

logger = logging.getLogger("poolkit.integrations")

#: Errors that mean "the pool cannot serve this request now": answered with 503 + Retry-After.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (PoolTimeout, PoolOverloaded, PoolClosed)

#: A pool, a zero-argument function returning one (sync or async), or :class:`PoolSettings`.
PoolSource = Any


def snapshot(pool: Any) -> PoolStats:
    """Return ``pool``'s :class:`~poolkit.PoolStats`, whatever shape its ``stats()`` has.

    A keyed pool's ``total_stats()``; else ``stats()`` itself, or the core snapshot a
    third-party backend's own ``stats()`` wraps as ``.pool``.
    """
    total = getattr(pool, "total_stats", None)
    if callable(total):
        result: PoolStats = total()
        return result
    stats = pool.stats()
    if isinstance(stats, PoolStats):
        return stats
    inner = getattr(stats, "pool", None)
    if isinstance(inner, PoolStats):
        return inner
    raise TypeError(f"{type(pool).__name__}.stats() returned {type(stats).__name__}, not PoolStats")


def backend_name(pool: Any) -> str:
    """Name the backend a pool talks to (``postgres``, ``mysql``, ``http``, ``websocket``...).

    Uses, in order: the pool's ``backend`` attribute; the pool's own class when a backend
    defines it (``poolkit.backends.http.HTTPPool`` -> ``http``); the connector's ``backend``
    attribute or module (``poolkit.backends.postgres`` -> ``postgres``); a keyed pool's first
    per-key pool; else the connector's class name.
    """
    explicit = getattr(pool, "backend", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    own = _module_backend(type(pool).__module__)
    if own is not None:
        return own
    connector = getattr(pool, "connector", None)
    if connector is None:
        subs = sub_pools(pool)  # a keyed pool: its per-key pools know their connector
        return backend_name(subs[0]) if subs else "unknown"
    explicit = getattr(connector, "backend", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    module = type(connector).__module__
    named = _module_backend(module)
    if named is not None:
        return named
    parts = module.split(".")
    if parts[0] == "poolkit" and len(parts) >= 2:
        return parts[1].lstrip("_")  # e.g. poolkit.testing
    return type(connector).__name__.lower()


def _module_backend(module: str) -> str | None:
    """``postgres`` for ``poolkit.backends.postgres``, ``websocket`` for a module inside the
    ``poolkit.websocket`` package, else None."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "poolkit":
        return None
    if parts[1] == "backends" and len(parts) >= 3:
        return parts[2]
    if parts[1] in _BACKEND_PACKAGES:  # e.g. poolkit.websocket._wspool
        return parts[1]
    return None


_BACKEND_PACKAGES = frozenset({"postgres", "mysql", "http", "websocket"})


def is_keyed(pool: Any) -> bool:
    """``True`` for a keyed pool (``acquire(key)``, ``keys()``, ``pool(key)``)."""
    return callable(getattr(pool, "keys", None)) and callable(getattr(pool, "pool", None))


def sub_pools(pool: Any) -> list[Any]:
    """A keyed pool's per-key pools (empty for a plain pool)."""
    if not is_keyed(pool):
        return []
    keys: list[Any] = pool.keys()
    return [pool.pool(key) for key in keys]


def iter_pools(pools: Any) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, pool)`` from a mapping, a :class:`PoolGroup`, a callable returning either,
    or an iterable of pools (named by ``pool.name``)."""
    source = pools() if callable(pools) and not hasattr(pools, "stats") else pools
    if isinstance(source, PoolGroup | Mapping):
        yield from source.items()
    elif hasattr(source, "stats"):
        yield pool_name(source), source
    else:
        for pool in source:
            yield pool_name(pool), pool


def pool_name(pool: Any) -> str:
    """A pool's name: ``pool.name``, else its config's name, else its class name."""
    name = getattr(pool, "name", None)
    if isinstance(name, str) and name:
        return name
    config = getattr(pool, "config", None)
    name = getattr(config, "name", None)
    if isinstance(name, str) and name:
        return name
    return type(pool).__name__


def log_unavailable(where: str, exc: BaseException) -> None:
    """Log why a request was answered with 503 (the pool's message; it holds no secrets)."""
    logger.warning("%s -> 503 Service Unavailable: %s: %s", where, type(exc).__name__, exc)


class PoolGroup:
    """Named pools opened and closed together, with a health monitor each.

    Entries are pools, zero-argument functions returning a pool (called at :meth:`open`, inside
    the running event loop; they may be ``async``), or :class:`~poolkit.PoolSettings`
    (``settings.create_pool()`` is called at :meth:`open`).

    Example::

        group = PoolGroup({"pg": lambda: poolkit.postgres.create_pool(dsn, max_size=10)})
        async with group:
            async with group["pg"].acquire() as conn:
                ...

    Args:
        pools: name -> pool (or factory, or settings).
        thresholds: health thresholds for :meth:`health`.
        sample_interval: seconds between background health samples while open (``None``: only
            sample when :meth:`health` is called).
    """

    def __init__(
        self,
        pools: Mapping[str, PoolSource] | None = None,
        *,
        thresholds: HealthThresholds | None = None,
        sample_interval: float | None = 5.0,
    ) -> None:
        if sample_interval is not None and not sample_interval > 0:
            raise ValueError(f"sample_interval={sample_interval!r}: must be > 0 or None")
        self._sources: dict[str, PoolSource] = {}
        self._pools: dict[str, Any] = {}
        self._monitors: dict[str, HealthMonitor] = {}
        self._thresholds = thresholds
        self._sample_interval = sample_interval
        self._sampler: asyncio.Task[None] | None = None
        self._open = False
        for name, source in (pools or {}).items():
            self.add(name, source)

    def add(self, name: str, pool: PoolSource) -> None:
        """Add a pool (or a factory, or settings) under ``name``; before :meth:`open` only."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"pool name {name!r}: must be a non-empty string")
        if name in self._sources:
            raise ValueError(f"a pool named {name!r} is already in this group")
        if self._open:
            raise PoolUsageError(f"cannot add pool {name!r}: the group is already open")
        self._sources[name] = pool
        if _is_pool(pool):
            self._pools[name] = pool

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def __len__(self) -> int:
        return len(self._sources)

    def names(self) -> list[str]:
        """The pool names, in the order they were added."""
        return list(self._sources)

    def __getitem__(self, name: str) -> Any:
        try:
            return self._pools[name]
        except KeyError:
            if name in self._sources:
                raise PoolUsageError(
                    f"pool {name!r} is created when the group opens (in the app's lifespan); "
                    "it is not open yet"
                ) from None
            known = ", ".join(repr(n) for n in self._sources) or "none"
            raise KeyError(f"no pool named {name!r} (configured: {known})") from None

    def items(self) -> list[tuple[str, Any]]:
        """``(name, pool)`` for every pool created so far."""
        return [(name, self._pools[name]) for name in self._sources if name in self._pools]

    @property
    def is_open(self) -> bool:
        """``True`` between :meth:`open` and :meth:`close`."""
        return self._open

    async def open(self) -> None:
        """Create every pool from its factory and open them all, concurrently.

        If any fails, the others are closed and the first error is raised (a later one is
        logged). Opening an open group does nothing.
        """
        if self._open:
            return
        try:
            for name, source in self._sources.items():
                if name not in self._pools:
                    self._pools[name] = await _create(source)
            results = await asyncio.gather(
                *(_open_one(pool) for pool in self._pools.values()), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                for extra in errors[1:]:
                    logger.error("another pool failed to open: %s: %s", type(extra).__name__, extra)
                raise errors[0]
        except BaseException:
            await self._close_pools()
            self._forget_created()
            raise
        self._open = True
        self._monitors = {
            name: HealthMonitor(pool, self._thresholds) for name, pool in self.items()
        }
        for monitor in self._monitors.values():
            monitor.sample()  # the baseline: whatever happens from now on is in the window
        if self._sample_interval is not None:
            self._sampler = asyncio.get_running_loop().create_task(
                self._sample_forever(self._sample_interval), name="poolkit-health-sampler"
            )

    async def close(self) -> None:
        """Close every pool (concurrently); errors are logged, not raised. Idempotent."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            try:
                await sampler
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        if not self._open:
            return
        self._open = False
        await self._close_pools()
        self._forget_created()

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

    def monitor(self, name: str) -> HealthMonitor:
        """The health monitor of pool ``name`` (its sample history, its thresholds).

        Raises:
            KeyError: no pool of that name.
            PoolUsageError: the pool is made by a factory and the group is not open.
        """
        monitor = self._monitors.get(name)
        if monitor is None:
            monitor = self._monitors[name] = HealthMonitor(self[name], self._thresholds)
        return monitor

    def stats(self) -> dict[str, PoolStats]:
        """Name -> stats snapshot of every pool."""
        return {name: snapshot(pool) for name, pool in self.items()}

    def health(self) -> dict[str, HealthReport]:
        """Name -> health report of every pool (each takes a fresh sample)."""
        return {name: self.monitor(name).report() for name, _ in self.items()}

    def status(self) -> dict[str, Any]:
        """The JSON body of the ``/pools`` route: overall status, and per pool its health
        and stats. Targets and connection errors are left out (they name hosts)."""
        reports = self.health()
        order = {"ok": 0, "warning": 1, "critical": 2}
        worst = max((order[r.status] for r in reports.values()), default=0)
        pools: dict[str, Any] = {}
        for name, pool in self.items():
            stats = snapshot(pool).as_dict()
            stats.pop("target", None)
            stats.pop("last_connect_error", None)
            report = reports[name].as_dict()
            pools[name] = {
                "backend": backend_name(pool),
                "status": report["status"],
                "findings": report["findings"],
                "stats": stats,
            }
        return {"status": ("ok", "warning", "critical")[worst], "pools": pools}

    async def _sample_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            for name, monitor in self._monitors.items():
                try:
                    monitor.sample()
                except Exception:
                    logger.exception("health sample of pool %r failed", name)

    async def _close_pools(self) -> None:
        pools = list(self._pools.items())
        results = await asyncio.gather(*(pool.close() for _, pool in pools), return_exceptions=True)
        for (name, _), result in zip(pools, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("closing pool %r failed: %s: %s", name, type(result).__name__, result)

    def _forget_created(self) -> None:
        # Pools made by factories are made again at the next open(); given pools are kept.
        for name, source in self._sources.items():
            if not _is_pool(source):
                self._pools.pop(name, None)

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<PoolGroup {state} pools={self.names()!r}>"


def _is_pool(obj: object) -> bool:
    return hasattr(obj, "acquire") and hasattr(obj, "close") and hasattr(obj, "stats")


async def _create(source: PoolSource) -> Any:
    if _is_pool(source):
        return source
    if isinstance(source, PoolSettings):
        return source.create_pool()
    if not callable(source):
        raise TypeError(f"{source!r} is not a pool, a function returning a pool, or PoolSettings")
    made = source()
    if inspect.isawaitable(made):
        made = await made
    if not _is_pool(made):
        raise TypeError(f"the pool factory {source!r} returned {made!r}, not a pool")
    return made


async def _open_one(pool: Any) -> None:
    opener: Callable[[], Awaitable[None]] | None = getattr(pool, "open", None)
    if opener is not None:
        await opener()
