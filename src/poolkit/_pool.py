"""Pool: the generic, asyncio-native connection pool.

Design notes
------------
* **State changes are synchronous.** Every method that moves a record between the idle stack,
  the in-use map and the pool-owned tasks runs without an ``await`` (httpcore #880), so the event
  loop makes it atomic and no lock is needed on the acquire path. I/O runs afterwards, on
  records that are already out of every shared structure.
* **Every connection is owned by exactly one place**: the idle stack, the in-use map, a waiter's
  future (between handoff and wake-up), or one pool-owned task (connecting, checking, resetting,
  closing). Each ``await`` that holds a record is wrapped in ``try/except BaseException`` that
  routes the record to close, frees its slot and re-raises: a cancellation is never mistaken for
  a failed check (psycopg #1401) and never loses a slot (asyncpg #467, httpcore #830).
* **Waiters are strict FIFO with direct handoff** (see ``_waiters.py``).
* **The caller never waits for a reset or a connect it did not need.** Connections are opened by
  pool-owned tasks and handed to the oldest waiter; a release schedules the reset in a pool task
  and returns at once, so a cancelled caller can never leave a half-reset connection behind.
* **Everything is bounded**: waiting by ``acquire_timeout``, each connector call by its phase
  timeout (connect/check/reset/close), close by its own timeout, then connections are aborted.
  The bounds paid per acquire or release (waiting, checking, resetting) each share one timer
  per pool instead of a timer each (``_waiters.py``, ``_deadlines.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import math
import os
import random
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Generator
from functools import partial
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar, cast

from ._config import PoolConfig
from ._connector import Connector
from ._deadlines import TaskDeadlines
from ._events import EventName, PoolEvent, logger
from ._record import ConnectionRecord, State, capture_stack, format_stack
from ._stats import Histogram, PoolStats, sizing_hint
from ._waiters import Waiters
from .errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    PoolClosed,
    PoolError,
    PoolOverloaded,
    PoolTimeout,
    PoolUsageError,
    TLSError,
)

__all__ = ("AcquireContext", "Hook", "Pool")

C = TypeVar("C")

#: A hook receives the connection; it may be a plain function or a coroutine function.
Hook = Callable[[C], Awaitable[None] | None]

_DEBUG = logging.DEBUG
_pool_numbers = itertools.count(1)
_DEFAULT_CLOSE_TIMEOUT = 10.0

# Pools alive in this process, so that a fork can make the child forget its parent's sockets.
_ALL_POOLS: weakref.WeakSet[Pool[Any]] = weakref.WeakSet()


class _ForkState:
    generation = 0


# Parent objects kept referenced in a forked child (see Pool._forget_after_fork).
_FORK_ORPHANS: list[object] = []


def _after_fork_in_child() -> None:
    _ForkState.generation += 1
    for pool in list(_ALL_POOLS):
        pool._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Lifecycle:
    NEW = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


_OPEN = _Lifecycle.OPEN
_get_running_loop = asyncio.get_running_loop
_debug_enabled = logger.isEnabledFor
_IN_USE = State.IN_USE
_IDLE = State.IDLE


class Pool(Generic[C]):
    """A pool of connections made by a :class:`~poolkit.Connector`.

    Example::

        pool = Pool(MyConnector(...), min_size=2, max_size=10)
        async with pool:                                   # open (warm min_size) ... close
            async with pool.acquire(timeout=5) as conn:    # strict FIFO, bounded wait
                ...                                        # released (and reset) on exit

    Args:
        connector: opens, checks, resets and closes connections (the backend).
        config: a :class:`~poolkit.PoolConfig`; keyword arguments override its fields.
        on_connect: called with each new connection before first use (within
            ``connect_timeout``); raising discards the connection and counts a connect error.
        on_acquire: called with the connection before ``acquire()`` returns it; raising discards
            the connection and propagates.
        on_release: called with the connection in the pool-owned release task, before the
            connector's ``reset``; raising discards it.
        on_close: called with the connection before it is closed.
        on_event: a synchronous callback receiving every :class:`~poolkit.PoolEvent`.
        clock: a monotonic clock in seconds (tests inject a fake one).
        **config_fields: :class:`~poolkit.PoolConfig` fields.

    Raises:
        ConfigError: a configuration value is invalid.
        TypeError: ``connector`` does not implement the connector protocol.
    """

    def __init__(
        self,
        connector: Connector[C],
        config: PoolConfig | None = None,
        *,
        on_connect: Hook[C] | None = None,
        on_acquire: Hook[C] | None = None,
        on_release: Hook[C] | None = None,
        on_close: Hook[C] | None = None,
        on_event: Callable[[PoolEvent], None] | None = None,
        clock: Callable[[], float] | None = None,
        **config_fields: Any,
    ) -> None:
        if config is None:
            config = PoolConfig.from_mapping({}, **config_fields)
        elif not isinstance(config, PoolConfig):
            raise ConfigError("config", config, "must be a PoolConfig")
        elif config_fields:
            config = config.replace(**config_fields)
        for method in ("connect", "check", "reset", "close"):
            if not callable(getattr(connector, method, None)):
                raise TypeError(
                    f"connector {type(connector).__name__} does not implement the Connector "
                    f"protocol: missing {method}()"
                )
        self._connector = connector
        self._config = config
        self._clock = clock or time.monotonic
        self._is_closed_cap: Callable[[C], bool] | None = _capability(connector, "is_closed")
        self._needs_reset_cap: Callable[[C], bool] | None = _capability(connector, "needs_reset")
        self._abort_cap: Callable[[C], None] | None = _capability(connector, "abort")
        describe = _capability(connector, "describe")
        self._target: str = str(describe()) if describe else type(connector).__name__
        self._name: str = config.name or f"{self._target}#{next(_pool_numbers)}"
        self._on_connect = on_connect
        self._on_acquire = on_acquire
        self._on_release = on_release
        self._on_close = on_close
        self._on_event = on_event
        self._apply_config_cache(config)
        # Set by KeyedPool: a connection budget shared with the pools of other keys.
        self._budget: _Budget | None = None
        self._shrinking = False  # set by a resize() below the current size

        self._lifecycle = _Lifecycle.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fork_generation = _ForkState.generation
        self._pid = os.getpid()
        self._idle: list[ConnectionRecord[C]] = []
        self._in_use: dict[int, ConnectionRecord[C]] = {}
        self._records: dict[int, ConnectionRecord[C]] = {}
        self._waiters: Waiters[ConnectionRecord[C]] = Waiters()
        self._reset_deadlines = TaskDeadlines()
        self._check_deadlines = TaskDeadlines()
        self._connecting = 0
        self._checking = 0
        self._resetting = 0
        self._closing_count = 0
        self._generation = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._maintenance: asyncio.Task[None] | None = None
        self._maintenance_wakeup: asyncio.Event | None = None
        self._probe: asyncio.Task[None] | None = None
        self._progress: asyncio.Future[None] | None = None  # open() waiting for growers
        self._refill_paused = False  # after an AuthenticationError, until the next acquire
        self._growers: set[asyncio.Task[None]] = set()
        self._growers_counted: set[asyncio.Task[None]] = set()
        self._consecutive_failures = 0
        self._last_connect_error: BaseException | None = None
        self._all_returned: asyncio.Future[None] | None = None
        self._closed_future: asyncio.Future[None] | None = None
        self._opened_at = self._clock()

        self._acquires = 0
        self._timeouts = 0
        self._overloads = 0
        self._cancelled = 0
        self._created = 0
        self._closed_by_reason: dict[str, int] = {}
        self._connect_errors = 0
        self._check_failures = 0
        self._reset_failures = 0
        self._leaks = 0
        self._wait_time = Histogram()
        self._use_time = Histogram()
        self._create_time = Histogram()
        _ALL_POOLS.add(self)

    def _apply_config_cache(self, config: PoolConfig) -> None:
        """Keep the values the hot paths read as plain attributes."""
        policy = config.check_on_acquire
        # Idle seconds after which acquire checks: inf = never, -1 = always.
        self._check_after: float = (
            math.inf if policy == "never" else -1.0 if policy == "always" else float(policy)
        )
        self._leak_threshold = config.leak_threshold
        self._max_uses: float = math.inf if config.max_uses is None else config.max_uses

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """The pool's name (from the config, else derived from the connector's target)."""
        return self._name

    @property
    def config(self) -> PoolConfig:
        """The current configuration (``resize()`` replaces it)."""
        return self._config

    @property
    def connector(self) -> Connector[C]:
        """The backend connector."""
        return self._connector

    @property
    def target(self) -> str:
        """The redacted target the pool connects to."""
        return self._target

    @property
    def closed(self) -> bool:
        """``True`` once ``close()`` or ``terminate()`` has begun."""
        return self._lifecycle >= _Lifecycle.CLOSING

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the pool is bound to (``None`` until first opened or used)."""
        return self._loop

    def __repr__(self) -> str:
        state = ("new", "open", "closing", "closed")[self._lifecycle]
        return (
            f"<Pool {self._name!r} {state} [size={self._size()} idle={len(self._idle)} "
            f"in_use={len(self._in_use)} connecting={self._connecting} "
            f"resetting={self._resetting} waiting={len(self._waiters)} "
            f"max={self._config.max_size}]>"
        )

    # ------------------------------------------------------------------ open / close

    async def open(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Bind the pool to the running event loop and open ``min_size`` connections.

        Args:
            wait: open the first ``min_size`` connections now (at least one, to prove the
                server is reachable) and raise on the first failure: fail fast on a dead
                server or bad credentials. With ``False`` they are opened in the background,
                with retries.
            timeout: bound on the whole warm-up (default: ``connect_timeout``).

        Raises:
            ConnectError: a connection could not be opened (``wait=True``).
            PoolTimeout: the warm-up took longer than ``timeout`` (phase ``"open"``).
            PoolClosed: the pool was closed.
        """
        if self._lifecycle >= _Lifecycle.CLOSING:
            raise PoolClosed(f"pool {self._name!r} is closed", pool=self._name)
        self._bind_loop()
        first_open = self._lifecycle == _Lifecycle.NEW
        if first_open:
            self._lifecycle = _Lifecycle.OPEN
            self._emit("pool.open")
            self._start_maintenance()
        if not wait:
            self._fill()
            return
        target = max(self._config.min_size, 1)
        limit = self._config.connect_timeout if timeout is None else timeout
        errors_before = self._connect_errors
        try:
            async with asyncio.timeout(limit):
                while self._established() < target:
                    if self._lifecycle != _OPEN:
                        raise PoolClosed(f"pool {self._name!r} was closed", pool=self._name)
                    missing = min(
                        target - self._established() - self._connecting,
                        self._config.max_size - self._size(),
                    )
                    if missing > 0:
                        await self._open_now(missing)
                        continue
                    # Connections are already being opened in the background: wait for them,
                    # but fail fast if one of them fails.
                    if self._connect_errors > errors_before and self._last_connect_error:
                        raise _copy_error(self._last_connect_error)
                    loop = cast(asyncio.AbstractEventLoop, self._loop)
                    self._progress = loop.create_future()
                    await self._progress
        except BaseException as exc:
            if first_open and isinstance(exc, Exception) and self._lifecycle == _OPEN:
                # Leave the pool as if it had never been opened, so open() can be retried.
                await self._stop_background()
                for record in list(self._idle):
                    self._spawn_close(record, "pool_closed", from_idle=True)
                self._lifecycle = _Lifecycle.NEW
            if isinstance(exc, TimeoutError) and not isinstance(exc, PoolError):
                raise PoolTimeout(
                    f"pool {self._name!r}: opening {target} connection(s) to {self._target} "
                    f"took longer than {limit} s",
                    pool=self._name,
                    phase="open",
                    timeout=limit,
                    max_size=self._config.max_size,
                ) from self._last_connect_error
            raise
        self._fill()

    def _established(self) -> int:
        return len(self._idle) + len(self._in_use) + self._checking + self._resetting

    async def _open_now(self, count: int) -> None:
        """Open ``count`` connections concurrently; on any failure close the others and raise."""
        self._connecting += count
        attempts = [asyncio.ensure_future(self._connect_attempt()) for _ in range(count)]
        try:
            records = await asyncio.gather(*attempts)
        except BaseException:
            for attempt in attempts:
                attempt.cancel()
            results = await asyncio.gather(*attempts, return_exceptions=True)
            self._connecting -= count
            for result in results:
                if isinstance(result, ConnectionRecord):
                    self._records[id(result.conn)] = result
                    self._spawn_close(result, "pool_closed")
            raise
        self._connecting -= count
        for record in records:
            self._records[id(record.conn)] = record
            self._make_available(record, self._clock())

    async def __aenter__(self) -> Self:
        await self.open(wait=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, timeout: float | None = None) -> None:
        """Close the pool gracefully.

        Waiting tasks fail with :class:`~poolkit.PoolClosed`; idle connections are closed; the
        call then waits, at most ``timeout`` seconds (default 10), for connections in use to be
        released, and aborts those still out. Calling it again waits for the first call. If
        this call is cancelled, the pool is terminated and the cancellation propagates.
        """
        if self._lifecycle == _Lifecycle.CLOSED and self._closed_future is None:
            return
        if self._lifecycle == _Lifecycle.NEW:
            self._lifecycle = _Lifecycle.CLOSED
            self._emit("pool.close")
            return
        self._check_loop()
        if self._closed_future is not None:
            await asyncio.shield(self._closed_future)
            return
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        self._closed_future = loop.create_future()
        self._lifecycle = _Lifecycle.CLOSING
        self._emit("pool.close")
        self._signal_progress()  # an open() waiting for connections stops waiting
        try:
            self._fail_waiters()
            await self._stop_background()
            for record in self._idle:
                self._spawn_close(record, "pool_closed", from_idle=False)
            self._idle.clear()
            limit = _DEFAULT_CLOSE_TIMEOUT if timeout is None else timeout
            if self._in_use or self._resetting or self._checking:
                self._all_returned = loop.create_future()
                try:
                    async with asyncio.timeout(limit):
                        await self._all_returned
                except TimeoutError:
                    logger.warning(
                        "pool %r: %d connection(s) still in use after %s s; aborting them",
                        self._name,
                        len(self._in_use),
                        limit,
                    )
            for record in list(self._records.values()):
                if record.state in (State.IN_USE, State.IDLE):
                    self._in_use.pop(id(record.conn), None)
                    self._abort_record(record, "pool_closed")
            await self._wait_tasks(self._config.close_timeout + 1.0)
        except BaseException:
            self.terminate()
            raise
        finally:
            self._lifecycle = _Lifecycle.CLOSED
            self._reset_deadlines.cancel_timer()
            self._check_deadlines.cancel_timer()
            finished: asyncio.Future[None] | None = self._closed_future
            self._closed_future = None
            if finished is not None and not finished.done():
                finished.set_result(None)

    def terminate(self) -> None:
        """Close the pool now: fail waiters, cancel pool tasks and abort every connection.

        Synchronous and safe to call from any state, including after the pool's event loop has
        stopped or closed (connections are then aborted without touching the loop).
        """
        if self._lifecycle == _Lifecycle.CLOSED and not self._records:
            return
        was_open = self._lifecycle != _Lifecycle.NEW
        self._lifecycle = _Lifecycle.CLOSED
        loop_alive = self._loop is not None and not self._loop.is_closed()
        if loop_alive:
            self._fail_waiters()
            self._signal_progress()
            self._reset_deadlines.cancel_timer()
            self._check_deadlines.cancel_timer()
        tasks = list(self._tasks)
        if self._maintenance is not None:
            tasks.append(self._maintenance)
        for task in tasks:
            if loop_alive:
                task.cancel()
            else:
                # The loop is gone: the task can never run again. Say nothing when it is
                # collected ("Task was destroyed but it is pending" is noise here).
                task._log_destroy_pending = False  # type: ignore[attr-defined]
                coro = task.get_coro()
                if inspect.iscoroutine(coro) and (
                    inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
                ):
                    coro.close()  # never started: no "coroutine was never awaited" warning
        self._tasks.clear()
        self._maintenance = None
        for record in list(self._records.values()):
            self._abort_record(record, "terminated")
        self._idle.clear()
        self._in_use.clear()
        if was_open:
            self._emit("pool.close", reason="terminated")
        closed_future, self._closed_future = self._closed_future, None
        if closed_future is not None and not closed_future.done() and loop_alive:
            closed_future.set_result(None)

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        records = getattr(self, "_records", None)
        if records:
            try:
                _warn(
                    f"unclosed pool {self._name!r} with {len(records)} connection(s); "
                    "use 'async with pool' or await pool.close()",
                    ResourceWarning,
                    source=self,
                    stacklevel=2,
                )
            finally:
                loop = self._loop
                if (
                    loop is None
                    or loop.is_closed()
                    or not loop.is_running()
                    or asyncio._get_running_loop() is loop
                ):
                    self.terminate()
                else:
                    # Collected in another thread: the loop's objects are not thread-safe.
                    loop.call_soon_threadsafe(self.terminate)

    # ------------------------------------------------------------------ acquire / release

    def acquire(self, timeout: float | None = None) -> AcquireContext[C]:
        """Borrow a connection: ``async with pool.acquire() as conn`` or ``await pool.acquire()``.

        The fast path (an idle connection, nobody waiting, no check due) does not suspend.
        Otherwise the task queues behind earlier waiters (strict FIFO) while the pool opens a
        connection if it is below ``max_size``.

        Args:
            timeout: bound on the wait in seconds (default: ``acquire_timeout``).

        Raises:
            PoolTimeout: no connection within ``timeout`` (the last connect error is chained).
            PoolOverloaded: ``max_waiting`` tasks are already waiting.
            PoolClosed: the pool is closing or closed.
            AuthenticationError: the server refused the credentials (fail fast).
            PoolUsageError: called from an event loop other than the pool's, or after a fork.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0
        ):
            raise ConfigError("timeout", timeout, "must be a non-negative number of seconds")
        return AcquireContext(self, timeout)

    async def release(self, conn: C, *, discard: bool = False) -> None:
        """Give back a connection obtained with ``await pool.acquire()``.

        Returns at once: the reset (if any) runs in a pool-owned task, bounded by
        ``reset_timeout``; the connection becomes available again when it is clean.

        Args:
            conn: the connection.
            discard: close it instead of reusing it (e.g. it is known to be broken).

        Raises:
            PoolUsageError: ``conn`` was already released, or comes from another pool.
        """
        record = self._in_use.get(id(conn))
        if record is None or record.conn is not conn:
            if self._lifecycle == _Lifecycle.CLOSED:
                return  # the pool is closed: its connections were already closed or aborted
            raise self._foreign_release_error(conn)
        self._release_record(record, record.lease, discard=discard, failed=False)

    def _take_fast(self) -> ConnectionRecord[C] | None:
        """The fast path, synchronous: lend the top idle connection if nothing stands in the way.

        Returns ``None`` (changing nothing) whenever the slow path must decide: nothing idle,
        tasks waiting, a check due, a retirement due, a hook to run, another loop or process.
        """
        idle = self._idle
        if (
            not idle
            or self._waiters._live
            or self._lifecycle != _OPEN
            or self._on_acquire is not None
            or _get_running_loop() is not self._loop
            or self._fork_generation != _ForkState.generation
        ):
            return None
        record = idle[-1]
        now = self._clock()
        if (
            now >= record.expires_at
            or now - record.idle_since > self._check_after
            or record.generation != self._generation
            or (self._is_closed_cap is not None and self._is_closed_cap(record.conn))
        ):
            return None
        idle.pop()
        record.state = _IN_USE
        record.acquired_at = now
        record.lease += 1
        record.uses += 1
        self._in_use[id(record.conn)] = record
        self._acquires += 1
        wait_time = self._wait_time
        wait_time._counts[0] += 1  # a zero wait (Histogram.record_zero, inlined: hot path)
        wait_time.count += 1
        if self._leak_threshold is not None:
            record.leak_reported = False
            record.stack = capture_stack(3)
        if self._on_event is not None or _debug_enabled(_DEBUG):
            self._emit("acquire", record, duration=0.0)
        return record

    async def _acquire_record(self, timeout: float | None) -> ConnectionRecord[C]:
        """The slow path (callers tried :meth:`_take_fast` first)."""
        if self._lifecycle != _OPEN:
            self._open_implicitly()
        if _get_running_loop() is not self._loop or (
            self._fork_generation != _ForkState.generation
        ):
            self._check_loop()
        if timeout is None:
            timeout = self._config.acquire_timeout
        start = self._clock()
        deadline = start + timeout
        while True:
            if self._lifecycle != _Lifecycle.OPEN:
                raise PoolClosed(f"pool {self._name!r} is closed", pool=self._name)
            record = self._take_idle() if not self._waiters else None
            if record is not None:
                now = self._clock()
                if self._needs_check(record, now):
                    if not await self._check_for_acquire(record, deadline, timeout):
                        continue
                    now = self._clock()
                    if self._lifecycle != _Lifecycle.OPEN:
                        self._spawn_close(record, "pool_closed")
                        raise PoolClosed(f"pool {self._name!r} is closed", pool=self._name)
                self._lend(record, now)
            else:
                fut, timer = self._enqueue(deadline)
                try:
                    handed = await fut
                except BaseException:
                    self._abandon(fut, timer)
                    raise
                if timer is not None:
                    timer.cancel()
                if handed is None:
                    self._waiters.discard()
                    raise self._timeout_error(timeout)
                record = handed
                now = self._clock()
            self._acquires += 1
            self._wait_time.record(now - start)
            if self._leak_threshold is not None:
                record.stack = capture_stack(3)
                record.leak_reported = False
            if self._on_acquire is not None:
                await self._run_on_acquire(record)
            if self._on_event is not None or _debug_enabled(_DEBUG):
                self._emit("acquire", record, duration=now - start)
            return record

    def _enqueue(
        self, deadline: float
    ) -> tuple[asyncio.Future[ConnectionRecord[C] | None], asyncio.TimerHandle | None]:
        """Queue a waiter (FIFO) expiring at ``deadline``; start connecting if there is room.

        Returns its future and, when it has one of its own, its timer (see ``_waiters.py``).
        """
        max_waiting = self._config.max_waiting
        if max_waiting is not None and len(self._waiters) >= max_waiting:
            self._overloads += 1
            self._emit("acquire.overloaded")
            raise PoolOverloaded(
                f"pool {self._name!r} is overloaded: {len(self._waiters)} tasks already waiting "
                f"(max_waiting={max_waiting}, max_size={self._config.max_size}, "
                f"in_use={len(self._in_use)})",
                pool=self._name,
                max_waiting=max_waiting,
            )
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        fut: asyncio.Future[ConnectionRecord[C] | None] = loop.create_future()
        timer = self._waiters.push(fut, loop.time() + max(deadline - self._clock(), 0.0), loop)
        self._refill_paused = False
        if self._size() < self._config.max_size:
            self._fill()
        return fut, timer

    def _abandon(
        self, fut: asyncio.Future[ConnectionRecord[C] | None], timer: asyncio.TimerHandle | None
    ) -> None:
        """The waiter of ``fut`` was cancelled: account for it, give back what it was handed."""
        if timer is not None:
            timer.cancel()
        if fut.cancelled():
            self._waiters.discard()
            self._cancelled += 1
        elif fut.exception() is None:
            # Cancelled after the handoff (or at the instant of the timeout): give the
            # untouched connection to the next waiter.
            handed = fut.result()
            if handed is None:
                self._waiters.discard()
            else:
                self._unlend(handed)
            self._cancelled += 1

    def _timeout_error(self, timeout: float) -> PoolTimeout:
        self._timeouts += 1
        self._emit("acquire.timeout")
        cause = self._last_connect_error if self._consecutive_failures else None
        message = (
            f"pool {self._name!r}: no connection available within {timeout:g} s "
            f"(max_size={self._config.max_size}, in_use={len(self._in_use)}, "
            f"waiting={len(self._waiters)}, connecting={self._connecting})"
        )
        if cause is not None:
            message += f"; last connect error: {_describe_error(cause)}"
        error = PoolTimeout(
            message,
            pool=self._name,
            phase="wait",
            timeout=timeout,
            max_size=self._config.max_size,
            in_use=len(self._in_use),
            waiting=len(self._waiters),
        )
        error.__cause__ = cause
        return error

    def _lend(self, record: ConnectionRecord[C], now: float) -> None:
        record.state = State.IN_USE
        record.acquired_at = now
        record.lease += 1
        record.uses += 1
        record.leak_reported = False
        self._in_use[id(record.conn)] = record

    def _hand_to_waiter(self, record: ConnectionRecord[C], now: float) -> bool:
        """Lend ``record`` to the oldest live waiter; ``False`` (record not lent) if none is
        left (the live count still includes waiters cancelled but not yet run)."""
        self._lend(record, now)
        if self._waiters.hand_over(record):
            return True
        del self._in_use[id(record.conn)]
        record.lease += 1
        record.uses -= 1
        return False

    def _unlend(self, record: ConnectionRecord[C]) -> None:
        """Take back a connection lent but never used (its borrower was cancelled)."""
        if self._in_use.pop(id(record.conn), None) is None:
            return
        record.lease += 1
        record.uses -= 1
        record.stack = None
        self._make_available(record, self._clock(), keep_idle_since=True)

    async def _run_on_acquire(self, record: ConnectionRecord[C]) -> None:
        hook = cast("Hook[C]", self._on_acquire)
        try:
            result = hook(record.conn)
            if result is not None:
                await result
        except BaseException:
            self._in_use.pop(id(record.conn), None)
            self._acquires -= 1
            self._spawn_close(record, "broken")
            self._fill()
            raise

    def _release_record(
        self, record: ConnectionRecord[C], lease: int, discard: bool, failed: bool
    ) -> None:
        if record.lease != lease or record.state is not _IN_USE:
            if record.state is State.CLOSED and self._lifecycle != _Lifecycle.OPEN:
                return  # aborted by close() or terminate() while in use
            raise PoolUsageError(
                f"connection #{record.id} was already released to pool {self._name!r} "
                "(released twice, or used after release)",
                pool=self._name,
            )
        conn = record.conn
        del self._in_use[id(conn)]
        now = self._clock()
        held = now - record.acquired_at
        self._use_time.record(held)
        record.stack = None
        if record.leak_reported:
            logger.info(
                "pool %r: connection #%d reported as leaked was returned after %.1f s",
                self._name,
                record.id,
                held,
            )
        if self._on_event is not None or _debug_enabled(_DEBUG):
            self._emit("release", record, duration=held)
        if self._lifecycle != _OPEN:
            if self._lifecycle == _Lifecycle.CLOSING:
                self._spawn_close(record, "pool_closed")
                self._note_returned()
            else:
                self._abort_record(record, "pool_closed")
            return
        needs_reset = self._needs_reset_cap
        if (
            not discard
            and not failed
            and needs_reset is not None
            and self._on_release is None
            and not self._shrinking
            and now < record.expires_at
            and record.generation == self._generation
            and record.uses < self._max_uses
            and not needs_reset(conn)
            and (self._is_closed_cap is None or not self._is_closed_cap(conn))
        ):
            # Clean and still good: no reset task, no I/O.
            if self._budget is None:
                # (_make_available, minus the tests this branch has just made.)
                if self._waiters._live and self._hand_to_waiter(record, now):
                    return
                record.state = _IDLE
                record.idle_since = now
                self._idle.append(record)
            else:
                self._make_available(record, now)
            return
        reason: str | None = None
        if discard:
            reason = "discarded"
        elif record.generation != self._generation:
            reason = "drained"
        elif now >= record.expires_at:
            reason = "lifetime"
        elif self._config.max_uses is not None and record.uses >= self._config.max_uses:
            reason = "max_uses"
        elif (
            self._on_release is None
            and self._is_closed_cap is not None
            and self._is_closed_cap(conn)
        ):
            # (With an on_release hook the test waits until the hook ran: the hook may be what
            # makes the connection reusable; _make_available checks again after the reset.)
            reason = "broken"
        elif self._shrinking:
            if self._size() >= self._config.max_size:
                reason = "resized"
            else:
                self._shrinking = False
        if reason is not None:
            self._spawn_close(record, reason)
            self._fill()
            return
        if (
            failed
            or self._on_release is not None
            or self._needs_reset_cap is None
            or self._needs_reset_cap(conn)
        ):
            record.state = State.RESETTING
            self._resetting += 1
            self._spawn(self._reset(record))
            return
        self._make_available(record, now)

    def _foreign_release_error(self, conn: object) -> PoolUsageError:
        for record in self._records.values():
            if record.conn is conn:
                return PoolUsageError(
                    f"connection #{record.id} was already released to pool {self._name!r} "
                    f"(it is {record.state.value}): released twice, or used after release",
                    pool=self._name,
                )
        for other in list(_ALL_POOLS):
            if other is not self and id(conn) in other._records:
                return PoolUsageError(
                    f"cannot release a connection of pool {other.name!r} to pool "
                    f"{self._name!r}: release it to the pool it came from",
                    pool=self._name,
                )
        return PoolUsageError(
            f"cannot release {type(conn).__name__} object to pool {self._name!r}: it was not "
            "acquired from this pool",
            pool=self._name,
        )

    # ------------------------------------------------------------------ state changes (sync)

    def _size(self) -> int:
        return (
            len(self._idle)
            + len(self._in_use)
            + self._connecting
            + self._checking
            + self._resetting
        )

    def _needs_check(self, record: ConnectionRecord[C], now: float) -> bool:
        return now - record.idle_since > self._check_after

    def _take_idle(self) -> ConnectionRecord[C] | None:
        """Pop the most recently used idle connection that is still usable."""
        idle = self._idle
        now = self._clock()
        while idle:
            record = idle.pop()
            reason = self._retire_reason(record, now)
            if reason is None:
                return record
            self._spawn_close(record, reason, from_idle=False)
        return None

    def _retire_reason(self, record: ConnectionRecord[C], now: float) -> str | None:
        if record.generation != self._generation:
            return "drained"
        if now >= record.expires_at:
            return "lifetime"
        if self._is_closed_cap is not None and self._is_closed_cap(record.conn):
            return "broken"
        return None

    def _make_available(
        self, record: ConnectionRecord[C], now: float, *, keep_idle_since: bool = False
    ) -> None:
        """Hand a clean connection to the oldest waiter, else push it on the idle stack."""
        if self._lifecycle != _Lifecycle.OPEN:
            self._spawn_close(record, "pool_closed")
            self._note_returned()
            return
        reason = self._retire_reason(record, now)
        if reason is None and self._size() >= self._config.max_size:
            reason = "resized"
        if reason is not None:
            self._spawn_close(record, reason)
            self._fill()
            return
        if self._waiters and self._hand_to_waiter(record, now):
            return
        if self._budget is not None and self._budget.others_waiting(self):
            # At the global cap another key needs this slot more than our idle stack does.
            self._spawn_close(record, "evicted")
            return
        record.state = State.IDLE
        if not keep_idle_since:
            record.idle_since = now
        self._idle.append(record)

    def _spawn_close(
        self, record: ConnectionRecord[C], reason: str, *, from_idle: bool = False
    ) -> None:
        if from_idle:
            with contextlib.suppress(ValueError):
                self._idle.remove(record)
        record.state = State.CLOSING
        self._closing_count += 1
        self._closed_by_reason[reason] = self._closed_by_reason.get(reason, 0) + 1
        self._emit("close", record, reason=reason)
        if self._budget is not None:
            self._budget.freed(self)
        if self._loop is None or self._loop.is_closed():
            self._closing_count -= 1
            self._abort_conn(record)
            return
        self._spawn(self._close(record))

    def _abort_record(self, record: ConnectionRecord[C], reason: str) -> None:
        if record.state is State.CLOSED:
            return
        if record.state is not State.CLOSING:
            self._closed_by_reason[reason] = self._closed_by_reason.get(reason, 0) + 1
        self._abort_conn(record)

    def _abort_conn(self, record: ConnectionRecord[C]) -> None:
        if record.state is State.CLOSED:
            return
        record.state = State.CLOSED
        self._records.pop(id(record.conn), None)
        if self._abort_cap is not None:
            try:
                self._abort_cap(record.conn)
            except Exception:  # pragma: no cover - abort() must not raise
                logger.exception("pool %r: abort() of connection #%d raised", self._name, record.id)

    def _note_returned(self) -> None:
        if (
            self._all_returned is not None
            and not self._in_use
            and not self._resetting
            and not self._checking
            and not self._all_returned.done()
        ):
            self._all_returned.set_result(None)

    def _fill(self) -> None:
        """Start connection attempts for waiters and for ``min_size`` (sync; no I/O here)."""
        if (
            self._lifecycle != _OPEN
            or self._loop is None
            or self._loop.is_closed()
            or self._fork_generation != _ForkState.generation
        ):
            return
        size = self._size()
        room = self._config.max_size - size
        # Connections being reset are not counted as supply: the point of resetting off the
        # caller's path is that the caller does not wait for it. A waiter gets whichever comes
        # first, the reset one or a new one (bounded by max_size; extras are reaped when idle).
        wanted = max(len(self._waiters) - self._connecting, self._config.min_size - size)
        if wanted <= 0 or room <= 0 or (self._refill_paused and not self._waiters):
            return
        if self._probe is not None:
            # The server is failing: one probe retries with backoff, the others stand by.
            return
        if self._budget is not None:
            room = self._budget.room_for(self, min(wanted, room))
        for _ in range(min(wanted, room)):
            self._connecting += 1
            task = self._spawn(self._grow())
            self._growers.add(task)
            self._growers_counted.add(task)
            task.add_done_callback(self._grower_done)

    def _fail_waiters(self) -> None:
        name = self._name
        self._waiters.fail_all(lambda: PoolClosed(f"pool {name!r} was closed", pool=name))

    def _bind_loop(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            raise PoolUsageError(
                f"pool {self._name!r} must be used from a running event loop (inside 'async def')",
                pool=self._name,
            ) from None
        if self._loop is None:
            self._loop = running
            self._pid = os.getpid()
            self._fork_generation = _ForkState.generation
            return
        self._check_loop()

    def _check_loop(self) -> None:
        if self._fork_generation != _ForkState.generation:
            raise PoolUsageError(
                f"pool {self._name!r} was created in process {self._pid} and cannot be used in "
                f"process {os.getpid()} after os.fork(): its connections belong to the parent. "
                "Create pools after forking, or get them from a poolkit.Registry, which gives "
                "each process its own.",
                pool=self._name,
            )
        running = asyncio.get_running_loop()
        if self._loop is not None and running is not self._loop:
            raise PoolUsageError(
                f"pool {self._name!r} is bound to event loop {_loop_name(self._loop)} but was "
                f"used from event loop {_loop_name(running)}: a pool's connections belong to "
                "the loop that opened them. Use poolkit.Registry (registry.get(key, factory)) "
                "to get one pool per event loop.",
                pool=self._name,
            )

    def _open_implicitly(self) -> None:
        if self._lifecycle >= _Lifecycle.CLOSING:
            raise PoolClosed(f"pool {self._name!r} is closed", pool=self._name)
        self._bind_loop()
        self._lifecycle = _Lifecycle.OPEN
        self._emit("pool.open")
        self._start_maintenance()
        self._fill()

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's connections without closing them.

        The parent's objects stay referenced for the child's whole life: collecting them would
        run driver finalizers that close (or unregister from a shared epoll) sockets the parent
        still uses.
        """
        _FORK_ORPHANS.append(
            (dict(self._records), list(self._tasks), self._maintenance, self._loop, self._idle)
        )
        self._idle = []
        self._records.clear()
        self._in_use = {}
        self._tasks = set()
        self._maintenance = None
        self._waiters = Waiters()
        self._reset_deadlines = TaskDeadlines()
        self._check_deadlines = TaskDeadlines()
        self._connecting = self._checking = self._resetting = self._closing_count = 0
        self._probe = None
        self._growers = set()
        self._growers_counted = set()

    # ------------------------------------------------------------------ pool-owned tasks

    def _spawn(self, coro: Generator[Any, None, Any] | Any) -> asyncio.Task[Any]:
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _connect_attempt(self) -> ConnectionRecord[C]:
        """Open one connection (connect + on_connect), bounded by ``connect_timeout``.

        The caller accounts for the slot (``_connecting``); this only does the I/O.
        """
        start = self._clock()
        try:
            async with asyncio.timeout(self._config.connect_timeout):
                conn = await self._connector.connect()
                try:
                    if self._on_connect is not None:
                        result = self._on_connect(conn)
                        if result is not None:
                            await result
                except BaseException:
                    await self._discard_unregistered(conn)
                    raise
        except TimeoutError as exc:
            if isinstance(exc, PoolError):
                self._note_connect_failure(exc)
                raise
            timed_out = PoolTimeout(
                f"pool {self._name!r}: connecting to {self._target} timed out after "
                f"{self._config.connect_timeout} s",
                pool=self._name,
                phase="connect",
                timeout=self._config.connect_timeout,
                max_size=self._config.max_size,
            )
            self._note_connect_failure(timed_out)
            raise timed_out from None
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, PoolError)
                else ConnectError(
                    f"pool {self._name!r}: cannot connect to {self._target}: "
                    f"{_describe_error(exc)}",
                    pool=self._name,
                    target=self._target,
                )
            )
            if error is not exc:
                error.__cause__ = exc
            self._note_connect_failure(error)
            raise error from (exc if error is not exc else exc.__cause__)
        now = self._clock()
        self._create_time.record(now - start)
        self._created += 1
        self._consecutive_failures = 0
        self._last_connect_error = None
        record = ConnectionRecord(
            conn,
            now=now,
            generation=self._generation,
            max_lifetime=self._config.max_lifetime,
            jitter=self._config.lifetime_jitter,
        )
        self._emit("connect", record, duration=now - start)
        return record

    async def _discard_unregistered(self, conn: C) -> None:
        try:
            async with asyncio.timeout(self._config.close_timeout):
                await self._connector.close(conn)
        except BaseException:
            if self._abort_cap is not None:
                self._abort_cap(conn)
            raise

    def _signal_progress(self) -> None:
        if self._progress is not None and not self._progress.done():
            self._progress.set_result(None)

    def _note_connect_failure(self, error: BaseException) -> None:
        self._signal_progress()
        self._connect_errors += 1
        self._consecutive_failures += 1
        self._last_connect_error = error
        self._emit("connect.failed", error=error)
        if isinstance(error, AuthenticationError | TLSError):
            # Not transient: waiting out the timeout would only hide the real cause.
            self._waiters.fail_all(lambda: _copy_error(error))

    async def _grow(self) -> None:
        """Open one connection for the pool, retrying with backoff while it is still wanted.

        The slot was counted in ``_connecting`` by ``_fill``; it is given back here on success
        and by ``_grower_done`` otherwise (also when the task is cancelled before it ran).
        """
        task = cast("asyncio.Task[None]", asyncio.current_task())
        attempt = 0
        while True:
            try:
                record = await self._connect_attempt()
            except Exception as exc:
                attempt += 1
                if self._lifecycle != _Lifecycle.OPEN:
                    return
                if isinstance(exc, AuthenticationError) and not self._waiters:
                    # Retrying bad credentials in the background only hammers the server (and
                    # may lock the account): refill waits for the next acquire to try again.
                    self._refill_paused = True
                    return
                if self._probe is not None and self._probe is not task:
                    return  # another task is already probing the server
                if not self._still_wanted():
                    return
                self._probe = task
                await asyncio.sleep(self._backoff(attempt))
                if self._lifecycle != _Lifecycle.OPEN or not self._still_wanted():
                    return
                continue
            break
        self._growers_counted.discard(task)
        self._connecting -= 1
        self._refill_paused = False
        if self._probe is task:
            self._probe = None
        self._records[id(record.conn)] = record
        if self._lifecycle != _Lifecycle.OPEN:
            self._spawn_close(record, "pool_closed")
            return
        self._make_available(record, self._clock())
        self._signal_progress()
        self._fill()

    def _grower_done(self, task: asyncio.Task[None]) -> None:
        self._signal_progress()
        self._growers.discard(task)
        if task in self._growers_counted:
            self._growers_counted.discard(task)
            self._connecting -= 1
        if self._probe is task:
            self._probe = None
        if not task.cancelled():
            self._fill()

    def _still_wanted(self) -> bool:
        return bool(self._waiters) or self._size() <= self._config.min_size

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter in [delay/2, delay]."""
        base = self._config.reconnect_initial_delay * (2.0 ** min(attempt - 1, 30))
        delay = min(self._config.reconnect_max_delay, base)
        return delay * (0.5 + random.random() / 2)

    async def _check_for_acquire(
        self, record: ConnectionRecord[C], deadline: float, timeout: float
    ) -> bool:
        """Check ``record`` before lending it; ``False`` if it failed (and was closed).

        The check runs in a pool-owned task. If the caller gives up first (its acquire timeout
        runs out, or it is cancelled), the check goes on without it and a healthy connection
        returns to the pool: giving up never costs a good connection.
        """
        record.state = State.CHECKING
        self._checking += 1
        checker = self._spawn(self._check(record))
        try:
            await asyncio.wait((checker,), timeout=max(deadline - self._clock(), 0.0))
        except BaseException:
            checker.add_done_callback(partial(self._adopt_checked, record))
            raise
        if not checker.done():
            checker.add_done_callback(partial(self._adopt_checked, record))
            raise self._timeout_error(timeout)
        if not checker.result():
            return False
        self._checking -= 1
        record.last_checked = self._clock()
        return True

    async def _check(self, record: ConnectionRecord[C]) -> bool:
        """Run one bounded check; on failure close the connection and return ``False``.

        On success the record stays in state CHECKING for whoever started the check.
        """
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        try:
            # Bounded by check_timeout through the pool's shared timer (_deadlines.py).
            with self._check_deadlines.watch(loop, self._config.check_timeout, "check"):
                await self._connector.check(record.conn)
        except Exception as exc:
            self._checking -= 1
            self._check_failures += 1
            self._emit("check.failed", record, error=exc)
            self._spawn_close(record, "check_failed")
            self._note_returned()
            self._fill()
            return False
        except BaseException:
            self._checking -= 1
            self._abort_record(record, "pool_closed")
            self._note_returned()
            raise
        return True

    def _adopt_checked(self, record: ConnectionRecord[C], task: asyncio.Task[bool]) -> None:
        """A check nobody waits for anymore finished: put a healthy connection back."""
        if task.cancelled() or task.exception() is not None or not task.result():
            return
        self._checking -= 1
        record.last_checked = self._clock()
        self._make_available(record, record.last_checked, keep_idle_since=True)
        if record.state is State.IDLE and self._idle and self._idle[-1] is record:
            # Keep the LIFO order by recency of *use*: a checked connection goes to the bottom.
            self._idle.pop()
            self._idle.insert(0, record)
        self._note_returned()

    async def _reset(self, record: ConnectionRecord[C]) -> None:
        conn = record.conn
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        try:
            # Bounded by reset_timeout through the pool's shared timer (_deadlines.py), not
            # asyncio.timeout(): that alone would cost more than the rest of a release.
            with self._reset_deadlines.watch(loop, self._config.reset_timeout, "reset"):
                if self._on_release is not None:
                    result = self._on_release(conn)
                    if result is not None:
                        await result
                await self._connector.reset(conn)
        except Exception as exc:
            self._resetting -= 1
            self._reset_failures += 1
            self._emit("reset.failed", record, error=exc)
            self._spawn_close(record, "reset_failed")
            self._note_returned()
            self._fill()
            return
        except BaseException:
            self._resetting -= 1
            self._abort_record(record, "pool_closed")
            self._note_returned()
            raise
        self._resetting -= 1
        self._make_available(record, self._clock())
        self._note_returned()

    async def _close(self, record: ConnectionRecord[C]) -> None:
        conn = record.conn
        try:
            async with asyncio.timeout(self._config.close_timeout):
                if self._on_close is not None:
                    result = self._on_close(conn)
                    if result is not None:
                        await result
                await self._connector.close(conn)
        except BaseException as exc:
            self._abort_conn(record)
            if not isinstance(exc, Exception):
                raise
            logger.debug("pool %r: closing connection #%d failed: %r", self._name, record.id, exc)
        else:
            record.state = State.CLOSED
            self._records.pop(id(conn), None)
        finally:
            self._closing_count -= 1

    async def _wait_tasks(self, limit: float) -> None:
        pending = [t for t in self._tasks if not t.done()]
        if not pending:
            return
        _done, still = await asyncio.wait(pending, timeout=limit)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still, timeout=1.0)

    async def _stop_background(self) -> None:
        """Stop the maintenance task and every connection attempt (not resets or checks,
        which are bounded by their own timeouts and route their connection to close)."""
        tasks: list[asyncio.Task[Any]] = list(self._growers)
        if self._maintenance is not None:
            tasks.append(self._maintenance)
            self._maintenance = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self._config.close_timeout + 1.0)

    # ------------------------------------------------------------------ maintenance

    def _start_maintenance(self) -> None:
        loop = cast(asyncio.AbstractEventLoop, self._loop)
        self._maintenance_wakeup = asyncio.Event()
        self._maintenance = loop.create_task(
            _maintain(weakref.ref(self), self._maintenance_wakeup),
            name=f"poolkit maintenance {self._name}",
        )

    async def run_maintenance(self, now: float | None = None) -> float:
        """Run one maintenance pass now and return the seconds until the next one is due.

        The pool's background task calls this; tests call it directly (with a fake clock) to
        make time pass deterministically. A pass: retires idle connections that are dead,
        drained, past ``max_lifetime`` or idle past ``max_idle_time`` (down to ``min_size``),
        starts background health checks of connections idle past ``health_check_interval``,
        reports connections held past ``leak_threshold`` and refills to ``min_size``.
        """
        if self._lifecycle != _OPEN or self._fork_generation != _ForkState.generation:
            return 60.0
        now = self._clock() if now is None else now
        cfg = self._config
        # Wake at least as often as the shortest periodic duty: a connection that goes idle
        # (or is lent) after this pass must still be checked, reaped or reported on time.
        periods = (cfg.health_check_interval, cfg.max_idle_time, cfg.leak_threshold)
        horizon = now + min([60.0, *(t for t in periods if t is not None)])
        keep: list[ConnectionRecord[C]] = []
        to_check: list[ConnectionRecord[C]] = []
        size = self._size()
        closed = 0
        for record in self._idle:
            reason = self._retire_reason(record, now)
            if (
                reason is None
                and cfg.max_idle_time is not None
                and now - record.idle_since >= cfg.max_idle_time
                and size - closed > cfg.min_size
            ):
                reason = "idle"
            if reason is not None:
                self._spawn_close(record, reason)
                closed += 1
                continue
            horizon = min(horizon, record.expires_at)
            if cfg.max_idle_time is not None:
                horizon = min(horizon, record.idle_since + cfg.max_idle_time)
            if cfg.health_check_interval is not None:
                due = max(record.last_checked, record.idle_since) + cfg.health_check_interval
                if now >= due:
                    to_check.append(record)
                    continue
                horizon = min(horizon, due)
            keep.append(record)
        self._idle[:] = keep
        for record in to_check:
            record.state = State.CHECKING
            self._checking += 1
            checker = self._spawn(self._check(record))
            checker.add_done_callback(partial(self._adopt_checked, record))
        if cfg.leak_threshold is not None:
            for record in list(self._in_use.values()):
                held = now - record.acquired_at
                if held >= cfg.leak_threshold:
                    if not record.leak_reported:
                        self._report_leak(record, held)
                else:
                    horizon = min(horizon, record.acquired_at + cfg.leak_threshold)
        self._fill()
        return max(horizon - now, 0.001)

    def _report_leak(self, record: ConnectionRecord[C], held: float) -> None:
        record.leak_reported = True
        self._leaks += 1
        stack = format_stack(record.stack) if record.stack else "  (stack not captured)\n"
        logger.warning(
            "pool %r: connection #%d has been held for %.1f s (leak_threshold=%s s); "
            "it was acquired at:\n%s",
            self._name,
            record.id,
            held,
            self._config.leak_threshold,
            stack.rstrip("\n"),
        )
        if self._on_event is not None:
            self._emit("leak", record, duration=held)

    # ------------------------------------------------------------------ runtime changes

    def resize(self, min_size: int | None = None, max_size: int | None = None) -> None:
        """Change ``min_size`` and/or ``max_size`` at runtime.

        Growing starts connections for waiters and the new floor at once; shrinking closes
        surplus idle connections now and surplus in-use connections as they are released.

        Raises:
            ConfigError: the new sizes are invalid.
        """
        changes: dict[str, int] = {}
        if min_size is not None:
            changes["min_size"] = min_size
        if max_size is not None:
            changes["max_size"] = max_size
        self._config = self._config.replace(**changes)
        self._apply_config_cache(self._config)
        self._emit("pool.resize", reason=f"min={self._config.min_size} max={self._config.max_size}")
        if self._maintenance_wakeup is not None:
            self._maintenance_wakeup.set()
        self._shrinking = self._size() > self._config.max_size
        excess = self._size() - self._config.max_size
        while excess > 0 and self._idle:
            record = self._idle.pop(0)
            self._spawn_close(record, "resized")
            excess -= 1
        self._fill()

    async def drain(self) -> None:
        """Replace every connection (e.g. after a failover).

        Idle connections are closed now and replaced up to ``min_size``; connections in use are
        closed when released. Returns once the old idle connections are closed.
        """
        self._check_loop()
        self._generation += 1
        self._emit("pool.drain")
        old = list(self._idle)
        self._idle.clear()
        for record in old:
            self._spawn_close(record, "drained")
        self._fill()
        closing = [
            t
            for t in self._tasks
            if getattr(t.get_coro(), "__qualname__", "").endswith("_close") and not t.done()
        ]
        if closing:
            await asyncio.wait(closing, timeout=self._config.close_timeout + 1.0)

    # ------------------------------------------------------------------ stats

    def stats(self) -> PoolStats:
        """Return a frozen snapshot of the pool's state and counters (see :class:`PoolStats`)."""
        elapsed = max(self._clock() - self._opened_at, 1e-9)
        rate = self._acquires / elapsed
        use = self._use_time
        mean_hold = use.sum / use.count if use.count else 0.0
        return PoolStats(
            name=self._name,
            target=self._target,
            size=self._size(),
            idle=len(self._idle),
            in_use=len(self._in_use),
            connecting=self._connecting,
            checking=self._checking,
            resetting=self._resetting,
            closing=self._closing_count,
            waiting=len(self._waiters),
            min_size=self._config.min_size,
            max_size=self._config.max_size,
            acquires=self._acquires,
            timeouts=self._timeouts,
            overloads=self._overloads,
            cancelled=self._cancelled,
            created=self._created,
            closed=dict(self._closed_by_reason),
            connect_errors=self._connect_errors,
            check_failures=self._check_failures,
            reset_failures=self._reset_failures,
            leaks=self._leaks,
            wait_time=self._wait_time.summary(),
            use_time=use.summary(),
            create_time=self._create_time.summary(),
            arrival_rate=rate,
            sizing_hint=sizing_hint(rate, mean_hold),
            last_connect_error=(
                _describe_error(self._last_connect_error)
                if self._last_connect_error is not None and self._consecutive_failures
                else None
            ),
            extra=self._extra_stats(),
        )

    def _extra_stats(self) -> dict[str, float]:
        extra = _capability(self._connector, "stats")
        if extra is None:
            return {}
        try:
            return dict(extra())
        except Exception:  # pragma: no cover - a backend bug must not break stats()
            logger.exception("pool %r: connector stats() raised", self._name)
            return {}

    # ------------------------------------------------------------------ events

    def _emit(
        self,
        name: EventName,
        record: ConnectionRecord[C] | None = None,
        *,
        duration: float | None = None,
        reason: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        level = logging.WARNING if name == "leak" else _DEBUG
        if self._on_event is None and not logger.isEnabledFor(level):
            return
        event = PoolEvent(
            name=name,
            pool=self._name,
            connection_id=record.id if record is not None else 0,
            duration=duration,
            reason=reason,
            error=error,
        )
        if name != "leak":
            logger.log(level, "%s", event.describe())
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                logger.exception("pool %r: on_event callback raised", self._name)


class _Budget(Protocol):
    """A connection budget shared by several pools (see ``KeyedPool``)."""

    def room_for(self, pool: Pool[Any], wanted: int) -> int:
        """How many of ``wanted`` new connections ``pool`` may open now (may evict idle ones)."""
        ...

    def freed(self, pool: Pool[Any]) -> None:
        """``pool`` gave up a connection slot."""
        ...

    def others_waiting(self, pool: Pool[Any]) -> bool:
        """Whether the cap is reached while the pool of another key has tasks waiting."""
        ...


class AcquireContext(Generic[C]):
    """What ``pool.acquire()`` returns: an async context manager, and awaitable.

    ``async with pool.acquire() as conn`` releases on exit (also on error or cancellation);
    ``conn = await pool.acquire()`` leaves the release to you (``await pool.release(conn)``).
    """

    __slots__ = ("_lease", "_pool", "_record", "_timeout")

    def __init__(self, pool: Pool[C], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._record: ConnectionRecord[C] | None = None
        self._lease = 0

    def __await__(self) -> Generator[Any, None, C]:
        record = self._pool._take_fast()
        if record is None:
            record = yield from self._pool._acquire_record(self._timeout).__await__()
        return record.conn

    async def __aenter__(self) -> C:
        if self._record is not None:
            raise PoolUsageError(
                "this acquire() context is already in use; call pool.acquire() again",
                pool=self._pool.name,
            )
        record = self._pool._take_fast()
        if record is None:
            record = await self._pool._acquire_record(self._timeout)
        self._record = record
        self._lease = record.lease
        return record.conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        record = self._record
        if record is None:
            return
        self._record = None
        self._pool._release_record(record, self._lease, False, exc is not None)


async def _maintain(ref: weakref.ref[Pool[Any]], wakeup: asyncio.Event) -> None:
    """The pool's one background task; holds only a weak reference to the pool."""
    while True:
        pool = ref()
        if pool is None or pool._lifecycle != _Lifecycle.OPEN:
            return
        try:
            delay = await pool.run_maintenance()
        except Exception:  # pragma: no cover - a maintenance bug must not kill the task
            logger.exception("pool %r: maintenance pass failed", pool.name)
            delay = 1.0
        del pool
        wakeup.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wakeup.wait()


def _capability(obj: object, name: str) -> Any:
    attr = getattr(obj, name, None)
    return attr if callable(attr) else None


def _loop_name(loop: asyncio.AbstractEventLoop) -> str:
    state = "closed" if loop.is_closed() else ("running" if loop.is_running() else "stopped")
    return f"<{type(loop).__name__} {state} at {id(loop):#x}>"


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _copy_error(error: BaseException) -> BaseException:
    """A fresh instance of a connect error for each waiter (tracebacks are per raise)."""
    if isinstance(error, ConnectError):
        clone: BaseException = type(error)(str(error), pool=error.pool, target=error.target)
    else:
        clone = ConnectError(str(error))
    clone.__cause__ = error
    return clone
