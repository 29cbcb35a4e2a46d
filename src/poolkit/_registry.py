"""Registry: one pool per (key, event loop), cleaned up when the loop ends.

A pool's connections belong to the event loop that opened them (their transports are
registered with that loop's selector). Code that runs several loops — ``asyncio.run()`` called
repeatedly, a loop per thread, pytest-asyncio's loop per test — therefore needs one pool per loop.
:class:`Registry` keeps them: ``await registry.get(key, factory)`` returns the pool for ``key``
and the *running* loop, calling ``factory()`` under that loop the first time.

Design notes
------------
* **Held weakly by loop** (the idea of anyio's ``RunVar``): the registry maps ``id(loop)`` to a
  per-loop state through a ``WeakValueDictionary``; the state is owned *by the loop* through a
  long timer handle (an "anchor" in ``loop._scheduled``) and by the registry's async generator
  (below). Nothing in the registry keeps a loop, or the pools of a loop, alive.
* **Graceful shutdown**: the first ``get()`` in a loop starts an async generator and parks it
  at its ``yield``. ``asyncio.run()``, ``asyncio.Runner``, ``uvloop.run()`` and pytest-asyncio
  call ``loop.shutdown_asyncgens()`` before closing the loop; that ``aclose()``s the generator
  while the loop still runs, and its ``finally`` closes the loop's pools (bounded by
  ``close_timeout``; connections still out after that are aborted).
* **Abrupt close**: ``loop.close()`` without ``shutdown_asyncgens()`` drops the loop's timer
  handles; dropping the anchor terminates the loop's pools synchronously, without touching the
  closed loop (connections are aborted through the connector's ``abort()``). A loop that kept
  its timers after closing is caught by a sweep when any loop first uses the registry.
* **Fork**: in a child process the registry forgets every state of the parent (without
  closing anything: the sockets are shared with the parent) and hands out fresh pools.
* **Threads**: a ``threading.RLock`` guards the loop map; it is never held across an
  ``await``. Per-loop data is only touched from the loop's own thread.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from types import TracebackType
from typing import Any, Protocol, TypeVar, overload, runtime_checkable

from ._events import logger
from ._pool import Pool
from .errors import ConfigError, PoolUsageError

__all__ = ("ManagedPool", "Registry", "registry")

#: Seconds between re-arms of the per-loop anchor timer (it only has to exist, not to fire).
_ANCHOR_INTERVAL = 6 * 3600.0
_DEFAULT_CLOSE_TIMEOUT = 5.0


@runtime_checkable
class ManagedPool(Protocol):
    """What a :class:`Registry` can manage: anything with ``async close()`` and ``terminate()``.

    :class:`~poolkit.Pool` and :class:`~poolkit.KeyedPool` qualify, as does any pool-like object
    of your own. An optional ``closed`` attribute lets the registry replace a pool that was closed
    behind its back; an optional ``loop`` attribute lets it refuse a pool bound to another loop.
    """

    async def close(self) -> None:
        """Close gracefully (awaited when the pool's event loop shuts down)."""
        ...

    def terminate(self) -> None:
        """Close at once, without awaiting; must work after the event loop has closed."""
        ...


P = TypeVar("P", bound=ManagedPool)


class _Fork:
    """Process-wide fork bookkeeping (reset in the child by ``_after_fork_in_child``)."""

    generation = 0
    # Parent objects kept referenced in a child process, so that no destructor there touches a
    # socket (or an epoll registration) the parent still uses. Filled by _before_fork.
    orphans: list[object] = []
    stash: list[object] | None = None


_REGISTRIES: weakref.WeakSet[Registry] = weakref.WeakSet()
# Pools currently managed by some registry, to catch a factory that returns a shared pool.
_CLAIMED: weakref.WeakSet[Any] = weakref.WeakSet()
# Loops whose async generators were shut down: a new generator there would never be closed.
_PAST_SHUTDOWN: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_GLOBAL_LOCK = threading.RLock()


class _LoopState:
    """A registry's pools for one event loop, and the machinery that ends them with the loop."""

    __slots__ = (
        "__weakref__",
        "agen",
        "creating",
        "finished",
        "generation",
        "loop_id",
        "loop_ref",
        "pools",
        "registry_ref",
    )

    def __init__(self, registry: Registry, loop: asyncio.AbstractEventLoop) -> None:
        self.registry_ref: weakref.ref[Registry] = weakref.ref(registry)
        self.loop_ref: weakref.ref[asyncio.AbstractEventLoop] = weakref.ref(loop)
        self.loop_id = id(loop)
        self.pools: dict[Hashable, ManagedPool] = {}
        self.creating: dict[Hashable, asyncio.Future[ManagedPool]] = {}
        self.generation = _Fork.generation
        self.finished = False
        self.agen: AsyncGenerator[None, None] | None = None

    def valid_for(self, loop: asyncio.AbstractEventLoop) -> bool:
        return (
            not self.finished
            and self.loop_ref() is loop
            and self.generation == _Fork.generation
            and not loop.is_closed()
        )

    # -- start: anchor timer and shutdown watcher --------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tie this state's lifetime to ``loop`` (called in the loop's thread, loop running)."""
        loop.call_later(_ANCHOR_INTERVAL, _Anchor(self).rearm)
        if loop in _PAST_SHUTDOWN or getattr(loop, "_asyncgens_shutdown_called", False):
            return  # shutdown_asyncgens() already ran: the anchor alone will do
        agen = _watch_shutdown(self)
        try:
            step = agen.asend(None)  # runs the loop's firstiter hook: registers the generator
        except Exception:  # e.g. a ResourceWarning turned error: the loop is shutting down
            logger.debug("registry: cannot watch %s for shutdown", _loop_name(loop))
            _PAST_SHUTDOWN.add(loop)
            return
        try:
            step.send(None)
        except StopIteration:
            pass
        else:  # pragma: no cover - the generator yields at once
            step.close()
        self.agen = agen

    # -- the end of the loop ------------------------------------------------------------------

    def _detach(self) -> list[ManagedPool]:
        """Mark finished, leave the registry, and return the pools to close (or none, if the
        state belongs to the parent of a forked process)."""
        self.finished = True
        registry = self.registry_ref()
        if registry is not None:
            registry._forget(self)
        pools = list(self.pools.values())
        self.pools.clear()
        self.creating.clear()
        for pool in pools:
            _CLAIMED.discard(pool)
        if self.generation != _Fork.generation:
            return []  # inherited from the parent process: its connections are not ours
        return pools

    async def shutdown(self, timeout: float) -> None:
        """Close the pools gracefully: the loop is shutting down but still runs."""
        if self.finished:
            return
        self.agen = None  # being closed by the loop right now
        loop = self.loop_ref()
        if loop is not None:
            _PAST_SHUTDOWN.add(loop)
        pools = self._detach()
        if pools:
            await asyncio.gather(*(_close_bounded(pool, timeout) for pool in pools))

    def loop_gone(self) -> None:
        """The loop closed (or is being collected): abort the pools without touching it."""
        if self.finished:
            self._close_watcher()
            return
        pools = self._detach()
        for pool in pools:
            _terminate_quietly(pool)
        self._close_watcher()

    def _close_watcher(self) -> None:
        # Finish the parked generator now, so the loop's async generator finalizer never runs
        # for it (its frame is completed; ``finished`` is set, so its finally does nothing).
        agen, self.agen = self.agen, None
        if agen is None:
            return
        closer = agen.aclose()
        try:
            closer.send(None)
        except StopIteration:
            pass
        except BaseException:  # pragma: no cover - the finally block awaits nothing here
            logger.debug("registry: closing the shutdown watcher failed", exc_info=True)
        else:  # pragma: no cover
            closer.close()


class _Anchor:
    """Held only by the loop (a timer handle): dropped when the loop closes or is collected."""

    __slots__ = ("state",)

    def __init__(self, state: _LoopState) -> None:
        self.state: _LoopState | None = state

    def rearm(self) -> None:
        state = self.state
        loop = state.loop_ref() if state is not None else None
        if state is None or loop is None or state.finished or loop.is_closed():
            return
        loop.call_later(_ANCHOR_INTERVAL, self.rearm)

    def __del__(self) -> None:
        state, self.state = self.state, None
        if state is None:
            return
        try:
            state.loop_gone()
        except BaseException:  # pragma: no cover - a destructor must not raise
            try:
                logger.exception("registry: cleaning up after a closed event loop failed")
            except BaseException:
                pass


async def _watch_shutdown(state: _LoopState) -> AsyncGenerator[None, None]:
    """Parked at ``yield`` until ``loop.shutdown_asyncgens()`` closes it."""
    try:
        yield
    finally:
        if not state.finished:
            # Other async generators are being closed at the same time; let their cleanup
            # code take its connections first (close() then waits for them to come back).
            await asyncio.sleep(0)
        if not state.finished:
            registry = state.registry_ref()
            timeout = registry.close_timeout if registry is not None else _DEFAULT_CLOSE_TIMEOUT
            await state.shutdown(timeout)


async def _close_bounded(pool: ManagedPool, timeout: float) -> None:
    """Close ``pool`` gracefully within ``timeout`` seconds, else terminate it. Never raises
    (except cancellation, after terminating)."""
    try:
        async with asyncio.timeout(timeout):
            await pool.close()
    except TimeoutError:
        logger.warning(
            "registry: pool %r did not close within %s s when its event loop shut down "
            "(connections still in use?); aborting its connections",
            _pool_name(pool),
            timeout,
        )
        _terminate_quietly(pool)
    except Exception:
        logger.exception("registry: closing pool %r at loop shutdown failed", _pool_name(pool))
        _terminate_quietly(pool)
    except BaseException:
        _terminate_quietly(pool)
        raise


def _terminate_quietly(pool: ManagedPool) -> None:
    try:
        pool.terminate()
    except Exception:
        logger.exception("registry: terminating pool %r failed", _pool_name(pool))


class Registry:
    """Pools per event loop: ``await registry.get(key, factory)`` returns the pool for ``key``
    under the *running* loop, creating it with ``factory()`` on first use in that loop.

    Example::

        import poolkit
        from poolkit.postgres import create_pool

        async def handler() -> None:
            pool = await poolkit.registry.get("main-db", lambda: create_pool(DSN))
            async with pool.acquire() as conn:
                ...

        asyncio.run(handler())   # each asyncio.run() gets its own pool; the pool is closed
        asyncio.run(handler())   # when that loop shuts down

    The pools of a loop are closed gracefully when the loop shuts down through
    ``asyncio.run()``/``asyncio.Runner``/``uvloop.run()``/pytest-asyncio (all call
    ``loop.shutdown_asyncgens()``), aborted without touching the loop when it is closed some
    other way, and forgotten — never closed — in a child process after ``os.fork()``. Use
    ``async with registry:`` (or :meth:`close_all`) to close them yourself at a point of your
    choosing.

    Args:
        name: shown in the repr and in log messages.
        close_timeout: at loop shutdown, seconds each pool gets to close gracefully (to get its
            connections in use back) before the rest are aborted.

    Raises:
        ConfigError: ``close_timeout`` is not a non-negative number.
    """

    def __init__(
        self, name: str = "registry", *, close_timeout: float = _DEFAULT_CLOSE_TIMEOUT
    ) -> None:
        if (
            isinstance(close_timeout, bool)
            or not isinstance(close_timeout, int | float)
            or not close_timeout >= 0
        ):
            raise ConfigError("close_timeout", close_timeout, "must be a non-negative number")
        if not isinstance(name, str):
            raise ConfigError("name", name, "must be a string")
        self._name = name
        self._close_timeout = float(close_timeout)
        self._lock = threading.RLock()
        self._states: weakref.WeakValueDictionary[int, _LoopState] = weakref.WeakValueDictionary()
        with _GLOBAL_LOCK:
            _REGISTRIES.add(self)

    @property
    def name(self) -> str:
        """The registry's name."""
        return self._name

    @property
    def close_timeout(self) -> float:
        """Seconds each pool gets to close gracefully when its loop shuts down."""
        return self._close_timeout

    def __repr__(self) -> str:
        states = self._live_states()
        pools = sum(len(s.pools) for s in states)
        return f"<Registry {self._name!r} loops={len(states)} pools={pools}>"

    # ------------------------------------------------------------------ get

    @overload
    async def get(self, key: Hashable, factory: Callable[[], Awaitable[P]]) -> P: ...

    @overload
    async def get(self, key: Hashable, factory: Callable[[], P]) -> P: ...

    async def get(self, key: Hashable, factory: Callable[[], Any]) -> Any:
        """Return the pool for ``key`` under the running event loop, creating it if needed.

        The first call for ``key`` in a loop calls ``factory()`` (a plain function returning a
        pool, or an async function) in that loop; concurrent first calls share one creation.
        If the creation fails, the callers waiting on it get the same exception and the next
        call tries again. A pool that was closed (``pool.closed``) is replaced by a new one.

        Args:
            key: any hashable naming the pool (e.g. ``"main-db"``). Prefer a short name to a
                DSN: error messages show the key (a URL password in a string key is redacted).
            factory: makes a new pool; called with no arguments. It must return a new object
                on every call — not a pool shared with another loop.

        Returns:
            The pool (whatever ``factory`` returns, e.g. :class:`~poolkit.Pool`).

        Raises:
            PoolUsageError: no event loop is running, or ``factory`` returned a pool that is
                bound to another event loop or already managed by a registry.
            TypeError: ``factory`` returned something that is not a pool (no async ``close()``
                and ``terminate()``).
            Exception: whatever ``factory`` raised.
        """
        loop = _running_loop("get")
        state = self._states.get(id(loop))
        if state is None or not state.valid_for(loop):
            state = self._state_for(loop)
        pool = state.pools.get(key)
        if pool is not None and not _is_closed(pool):
            return pool
        return await self._create(state, key, factory, loop)

    async def _create(
        self,
        state: _LoopState,
        key: Hashable,
        factory: Callable[[], Any],
        loop: asyncio.AbstractEventLoop,
    ) -> ManagedPool:
        while True:
            pool = state.pools.get(key)
            if pool is not None and not _is_closed(pool):
                return pool
            pending = state.creating.get(key)
            if pending is None:
                break
            await asyncio.wait((pending,))
            if pending.cancelled():  # the creating task was cancelled: try again ourselves
                if not state.valid_for(loop):
                    state = self._state_for(loop)
                continue
            return pending.result()  # raises what the factory raised
        closed = state.pools.pop(key, None)  # closed behind our back: replace it
        if closed is not None:
            _CLAIMED.discard(closed)
        future: asyncio.Future[ManagedPool] = loop.create_future()
        state.creating[key] = future
        created: ManagedPool | None = None
        try:
            result = factory()
            if inspect.isawaitable(result):
                result = await result
            created = self._validate(result, key, loop)
            if isinstance(created, Pool) and created.loop is None:
                # Bind it to this loop now (connections open in the background), so that it
                # cannot be bound to another loop by mistake.
                await created.open(wait=False)
        except BaseException as exc:
            if created is not None:
                _CLAIMED.discard(created)
            if state.creating.get(key) is future:
                del state.creating[key]
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: no "exception was never retrieved" log
            else:
                future.cancel()
            raise
        if state.creating.get(key) is future:
            del state.creating[key]
        if not state.valid_for(loop):  # e.g. shut down or forked while the factory ran
            state = self._state_for(loop)
        state.pools[key] = created
        future.set_result(created)
        return created

    def _validate(self, result: object, key: Hashable, loop: asyncio.AbstractEventLoop) -> Any:
        if not (
            callable(getattr(result, "close", None))
            and callable(getattr(result, "terminate", None))
        ):
            raise TypeError(
                f"registry {self._name!r}: the factory for key {_show_key(key)} returned "
                f"{type(result).__name__}, which is not a pool: a pool needs an async close() "
                "and a terminate() method"
            )
        bound = getattr(result, "loop", None)
        if isinstance(bound, asyncio.AbstractEventLoop) and bound is not loop:
            raise PoolUsageError(
                f"registry {self._name!r}: the factory for key {_show_key(key)} returned pool "
                f"{_pool_name(result)!r}, which is bound to event loop {_loop_name(bound)}, "
                f"not to the running event loop {_loop_name(loop)}: the factory must create a "
                "new pool on each call"
            )
        try:
            with _GLOBAL_LOCK:
                if result in _CLAIMED:
                    raise PoolUsageError(
                        f"registry {self._name!r}: the factory for key {_show_key(key)} "
                        f"returned pool {_pool_name(result)!r}, which a registry already "
                        "manages for another key or event loop: the factory must create a "
                        "new pool on each call"
                    )
                _CLAIMED.add(result)
        except TypeError:  # not weak-referenceable: cannot track it
            pass
        return result

    # ------------------------------------------------------------------ closing

    async def close(self, key: Hashable) -> None:
        """Close the running loop's pool for ``key``, if any; the next :meth:`get` makes a new one.

        Raises:
            PoolUsageError: no event loop is running.
        """
        loop = _running_loop("close")
        state = self._states.get(id(loop))
        if state is None or not state.valid_for(loop):
            return
        pool = state.pools.pop(key, None)
        if pool is not None:
            _CLAIMED.discard(pool)
            await pool.close()

    async def close_all(self) -> None:
        """Close every pool of the running loop (concurrently); later :meth:`get` calls create
        new ones. Pools of other loops are not touched.

        Raises:
            PoolUsageError: no event loop is running.
            Exception: the first exception a pool's ``close()`` raised (all are closed first).
        """
        loop = _running_loop("close_all")
        state = self._states.get(id(loop))
        if state is None or not state.valid_for(loop):
            return
        pools = list(state.pools.values())
        state.pools.clear()
        for pool in pools:
            _CLAIMED.discard(pool)
        if not pools:
            return
        results = await asyncio.gather(*(p.close() for p in pools), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def __aenter__(self) -> Registry:
        """Start owning the shutdown of the running loop's pools (closed on exit)."""
        loop = _running_loop("async with")
        state = self._states.get(id(loop))
        if state is None or not state.valid_for(loop):
            self._state_for(loop)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the running loop's pools (see :meth:`close_all`)."""
        await self.close_all()

    # ------------------------------------------------------------------ introspection

    def pools(self, loop: asyncio.AbstractEventLoop | None = None) -> dict[Hashable, Any]:
        """Return a snapshot ``{key: pool}`` of the pools of ``loop`` (default: the running one).

        Raises:
            PoolUsageError: ``loop`` is omitted and no event loop is running.
        """
        if loop is None:
            loop = _running_loop("pools")
        state = self._states.get(id(loop))
        if state is None or not state.valid_for(loop):
            return {}
        return dict(state.pools)

    def all_pools(self) -> list[tuple[Hashable, Any]]:
        """Return ``(key, pool)`` for every pool of every live loop in this process (e.g. for a
        metrics exporter); a key appears once per loop that uses it."""
        return [
            (key, pool) for state in self._live_states() for key, pool in list(state.pools.items())
        ]

    # ------------------------------------------------------------------ internals

    def _live_states(self) -> list[_LoopState]:
        with self._lock:
            states = list(self._states.values())
        live = []
        for state in states:
            loop = state.loop_ref()
            if loop is not None and state.valid_for(loop):
                live.append(state)
        return live

    def _state_for(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        """The valid state for ``loop`` (running, in this thread), created if needed."""
        stale: list[_LoopState] = []
        with self._lock:
            state = self._states.get(id(loop))
            if state is not None and state.valid_for(loop):
                return state
            state = _LoopState(self, loop)
            self._states[id(loop)] = state
            # A loop closed without our anchor being dropped (an event loop implementation
            # that keeps timer handles after close): clean it up now.
            for other in list(self._states.values()):
                other_loop = other.loop_ref()
                if other is not state and (other_loop is None or other_loop.is_closed()):
                    stale.append(other)
        for other in stale:
            other.loop_gone()
        state.watch(loop)
        return state

    def _forget(self, state: _LoopState) -> None:
        with self._lock:
            if self._states.get(state.loop_id) is state:
                del self._states[state.loop_id]

    def _reset_after_fork(self) -> None:
        self._lock = threading.RLock()
        for state in list(self._states.values()):
            state.finished = True
        self._states = weakref.WeakValueDictionary()


#: The process-wide default registry: ``await poolkit.registry.get(key, factory)``.
registry = Registry("default")


# ---------------------------------------------------------------------- fork


def _before_fork() -> None:
    """In the parent, just before ``fork()``: collect what the child must keep referenced."""
    stash: list[object] = []
    try:
        for reg in list(_REGISTRIES):
            for state in list(reg._states.values()):
                stash.append(state)
                for pool in list(state.pools.values()):
                    stash.append(pool)
                    stash.append(_pool_internals(pool))
    except Exception:  # pragma: no cover - never block a fork
        pass
    _Fork.stash = stash


def _after_fork_in_parent() -> None:
    _Fork.stash = None


def _after_fork_in_child() -> None:
    global _GLOBAL_LOCK, _CLAIMED, _PAST_SHUTDOWN
    _Fork.generation += 1
    if _Fork.stash:
        _Fork.orphans.append(_Fork.stash)
    _Fork.stash = None
    _GLOBAL_LOCK = threading.RLock()
    _CLAIMED = weakref.WeakSet()
    _PAST_SHUTDOWN = weakref.WeakSet()
    for reg in list(_REGISTRIES):
        reg._reset_after_fork()


def _pool_internals(pool: object) -> list[object]:
    """The parent's connection records and tasks of ``pool`` (a workaround until
    ``Pool._forget_after_fork`` keeps them referenced itself)."""
    found: list[object] = []
    inner = getattr(pool, "_pools", None)
    if isinstance(inner, dict):
        for sub in list(inner.values()):
            found.append(sub)
            found.extend(_pool_internals(sub))
        return found
    for attr in ("_records", "_tasks", "_maintenance", "_growers", "_waiters", "_idle"):
        value = getattr(pool, attr, None)
        if isinstance(value, dict):
            found.append(dict(value))
        elif isinstance(value, list | set):
            found.append(list(value))
        elif value is not None:
            found.append(value)
    return found


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


# ---------------------------------------------------------------------- helpers


def _running_loop(operation: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise PoolUsageError(
            f"registry.{operation}() must be called from a running event loop (inside "
            "'async def'): the registry keeps one pool per running loop"
        ) from None


def _is_closed(pool: object) -> bool:
    return getattr(pool, "closed", False) is True


def _pool_name(pool: object) -> str:
    name = getattr(pool, "name", None)
    return name if isinstance(name, str) else type(pool).__name__


def _loop_name(loop: asyncio.AbstractEventLoop) -> str:
    state = "closed" if loop.is_closed() else ("running" if loop.is_running() else "stopped")
    return f"<{type(loop).__name__} {state} at {id(loop):#x}>"


_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*:)[^@\s]*@")
_KV_SECRET = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|secret|token|api[_-]?key)\s*[=:]\s*)[^\s&;,]+",
    re.IGNORECASE,
)


def _show_key(key: object) -> str:
    """``repr(key)`` with URL passwords and ``password=...`` values redacted."""
    if isinstance(key, str):
        text = _URL_PASSWORD.sub(r"\g<head>***@", key)
        return repr(_KV_SECRET.sub(r"\g<head>***", text))
    if isinstance(key, tuple):
        inner = ", ".join(_show_key(k) for k in key)
        return f"({inner},)" if len(key) == 1 else f"({inner})"
    if isinstance(key, int | float | bool | bytes) or key is None:
        return repr(key)
    return f"<{type(key).__name__} key>"
