"""KeyedPool: one :class:`Pool` per key (origin, URI, ...) under a global connection cap.

Each key gets its own pool, with its own FIFO waiters, created on first use from
``connector_factory(key)``. ``max_total`` caps the connections of all keys together: a pool that
needs a connection while the cap is reached first evicts the least recently used idle connection
of another key; if there is none, its waiters wait until some key gives a slot back, and are then
served by the usual per-key rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterator
from dataclasses import replace
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._config import PoolConfig
from ._connector import Connector
from ._events import PoolEvent
from ._pool import AcquireContext, Hook, Pool
from ._stats import Histogram, PoolStats, sizing_hint
from .errors import ConfigError, PoolClosed, PoolUsageError

__all__ = ("KeyedPool",)

K = TypeVar("K", bound=Hashable)
C = TypeVar("C")


class _SharedBudget:
    """The global cap: pools ask it for room before opening connections."""

    def __init__(self, owner: KeyedPool[Any, Any], limit: int) -> None:
        self._owner = owner
        self.limit = limit
        self._refill_scheduled = False

    def total(self) -> int:
        return sum(p._size() for p in self._owner._pools.values())

    def room_for(self, pool: Pool[Any], wanted: int) -> int:
        room = self.limit - self.total()
        while room < wanted:
            victim = self._least_recently_used_idle(exclude=pool)
            if victim is None:
                break
            record = victim._idle.pop(0)
            victim._spawn_close(record, "evicted")
            room += 1
        return max(room, 0)

    def freed(self, pool: Pool[Any]) -> None:
        # A slot came back: let the pools of other keys that have waiters use it. Deferred to
        # the next loop iteration so that no pool is changed while another is mid-update.
        if self._refill_scheduled:
            return
        loop = pool._loop
        if loop is None or loop.is_closed():
            return
        self._refill_scheduled = True
        loop.call_soon(self._refill)

    def others_waiting(self, pool: Pool[Any]) -> bool:
        if self.total() + 1 < self.limit:
            return False
        return any(p is not pool and p._waiters for p in self._owner._pools.values())

    def _refill(self) -> None:
        self._refill_scheduled = False
        for other in list(self._owner._pools.values()):
            if other._waiters:
                other._fill()

    def _least_recently_used_idle(self, exclude: Pool[Any]) -> Pool[Any] | None:
        best: Pool[Any] | None = None
        best_since = float("inf")
        for candidate in self._owner._pools.values():
            if candidate is exclude or not candidate._idle:
                continue
            since = candidate._idle[0].idle_since
            if since < best_since:
                best, best_since = candidate, since
        return best


class KeyedPool(Generic[K, C]):
    """One :class:`Pool` per key, sharing a configuration and a global cap.

    Example::

        pools = KeyedPool(lambda origin: HTTPConnector(origin), max_size=4, max_total=32)
        async with pools.acquire("https://api.example.com") as conn:
            ...

    Args:
        connector_factory: makes the connector of a key, on first use of that key.
        config: the configuration of every key's pool (``max_size`` is the per-key cap);
            keyword arguments override its fields.
        max_total: cap on connections across all keys (``None``: only per-key caps).
        key_name: formats a key for pool names, reprs and logs (default ``str``); it must not
            reveal credentials.
        on_connect: hook given to every key's pool (see :class:`Pool`).
        on_acquire: hook given to every key's pool.
        on_release: hook given to every key's pool.
        on_close: hook given to every key's pool.
        on_event: event callback given to every key's pool.
        **config_fields: :class:`~poolkit.PoolConfig` fields.
    """

    def __init__(
        self,
        connector_factory: Callable[[K], Connector[C]],
        config: PoolConfig | None = None,
        *,
        max_total: int | None = None,
        key_name: Callable[[K], str] = str,
        on_connect: Hook[C] | None = None,
        on_acquire: Hook[C] | None = None,
        on_release: Hook[C] | None = None,
        on_close: Hook[C] | None = None,
        on_event: Callable[[PoolEvent], None] | None = None,
        **config_fields: Any,
    ) -> None:
        if config is None:
            config = PoolConfig.from_mapping({}, **config_fields)
        elif config_fields:
            config = config.replace(**config_fields)
        if max_total is not None:
            if isinstance(max_total, bool) or not isinstance(max_total, int) or max_total < 1:
                raise ConfigError("max_total", max_total, "must be an integer >= 1 or None")
            if max_total < config.max_size:
                config = config.replace(
                    max_size=max_total, min_size=min(config.min_size, max_total)
                )
        self._factory = connector_factory
        self._config = config
        self._key_name = key_name
        self._hooks: dict[str, Any] = {
            "on_connect": on_connect,
            "on_acquire": on_acquire,
            "on_release": on_release,
            "on_close": on_close,
            "on_event": on_event,
        }
        self._pools: dict[K, Pool[C]] = {}
        self._budget = _SharedBudget(self, max_total) if max_total is not None else None
        self._max_total = max_total
        self._closed = False
        self._name = config.name or "keyed"

    @property
    def config(self) -> PoolConfig:
        """The configuration every key's pool is created with."""
        return self._config

    @property
    def max_total(self) -> int | None:
        """The cap on connections across all keys."""
        return self._max_total

    @property
    def closed(self) -> bool:
        """``True`` once ``close()`` or ``terminate()`` has begun."""
        return self._closed

    def __repr__(self) -> str:
        size = sum(p._size() for p in self._pools.values())
        return (
            f"<KeyedPool {self._name!r} keys={len(self._pools)} size={size} "
            f"max_total={self._max_total} max_per_key={self._config.max_size}>"
        )

    def keys(self) -> list[K]:
        """The keys that have a pool."""
        return list(self._pools)

    def __iter__(self) -> Iterator[tuple[K, Pool[C]]]:
        return iter(list(self._pools.items()))

    def pool(self, key: K) -> Pool[C]:
        """The pool of ``key``, created on first use."""
        pool = self._pools.get(key)
        if pool is None:
            if self._closed:
                raise PoolClosed(f"keyed pool {self._name!r} is closed", pool=self._name)
            config = replace(self._config, name=f"{self._name}[{self._key_name(key)}]")
            pool = Pool(self._factory(key), config, **self._hooks)
            pool._budget = self._budget
            self._pools[key] = pool
        return pool

    def acquire(self, key: K, timeout: float | None = None) -> AcquireContext[C]:
        """Borrow a connection for ``key`` (see :meth:`Pool.acquire`)."""
        return self.pool(key).acquire(timeout)

    async def release(self, conn: C, *, discard: bool = False) -> None:
        """Give back a connection obtained with ``await keyed.acquire(key)``."""
        for pool in self._pools.values():
            if id(conn) in pool._in_use:
                await pool.release(conn, discard=discard)
                return
        raise PoolUsageError(
            f"cannot release {type(conn).__name__} object to keyed pool {self._name!r}: it is "
            "not in use in any of its pools (released twice, or from another pool)",
            pool=self._name,
        )

    def stats(self) -> dict[K, PoolStats]:
        """A snapshot of each key's pool."""
        return {key: pool.stats() for key, pool in self._pools.items()}

    def total_stats(self) -> PoolStats:
        """One snapshot adding up every key's pool (``max_size`` is ``max_total`` if set)."""
        pools = list(self._pools.values())
        snaps = [p.stats() for p in pools]
        closed: dict[str, int] = {}
        extra: dict[str, float] = {}
        for snap in snaps:
            for reason, n in snap.closed.items():
                closed[reason] = closed.get(reason, 0) + n
            for k, v in snap.extra.items():
                extra[k] = extra.get(k, 0) + v
        hist = {name: Histogram() for name in ("_wait_time", "_use_time", "_create_time")}
        for pool in pools:
            for attr, merged in hist.items():
                source: Histogram = getattr(pool, attr)
                merged._counts = [
                    a + b for a, b in zip(merged._counts, source._counts, strict=True)
                ]
                merged.count += source.count
                merged.sum += source.sum
                merged.max = max(merged.max, source.max)
        rate = sum(s.arrival_rate for s in snaps)
        use = hist["_use_time"]

        def total(field: str) -> int:
            return sum(getattr(s, field) for s in snaps)

        return PoolStats(
            name=self._name,
            target=f"{len(pools)} keys",
            size=total("size"),
            idle=total("idle"),
            in_use=total("in_use"),
            connecting=total("connecting"),
            checking=total("checking"),
            resetting=total("resetting"),
            closing=total("closing"),
            waiting=total("waiting"),
            min_size=total("min_size"),
            max_size=self._max_total
            if self._max_total is not None
            else self._config.max_size * max(len(pools), 1),
            acquires=total("acquires"),
            timeouts=total("timeouts"),
            overloads=total("overloads"),
            cancelled=total("cancelled"),
            created=total("created"),
            closed=closed,
            connect_errors=total("connect_errors"),
            check_failures=total("check_failures"),
            reset_failures=total("reset_failures"),
            leaks=total("leaks"),
            wait_time=hist["_wait_time"].summary(),
            use_time=use.summary(),
            create_time=hist["_create_time"].summary(),
            arrival_rate=rate,
            sizing_hint=sizing_hint(rate, use.sum / use.count if use.count else 0.0),
            last_connect_error=next(
                (s.last_connect_error for s in snaps if s.last_connect_error), None
            ),
            extra=extra,
        )

    async def close(self, timeout: float | None = None) -> None:
        """Close every key's pool (concurrently; see :meth:`Pool.close`)."""
        self._closed = True
        pools = list(self._pools.values())
        if pools:
            await asyncio.gather(*(p.close(timeout) for p in pools))

    def terminate(self) -> None:
        """Abort every key's pool now (see :meth:`Pool.terminate`)."""
        self._closed = True
        for pool in list(self._pools.values()):
            pool.terminate()

    async def __aenter__(self) -> KeyedPool[K, C]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
