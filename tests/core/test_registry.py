"""Registry: one pool per (key, event loop); pools end with their loop.

These tests run real event loops (``asyncio.run``, ``asyncio.Runner``, loops closed by hand) and
real threads, with :class:`~poolkit.testing.FakeConnector` pools: they pin what the registry does
with pools. ``test_registry_postgres.py`` runs the same scenarios with real connections,
``test_registry_uvloop.py`` with uvloop, ``test_registry_fork.py`` across ``os.fork()``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from core.registry_support import run_threads
from core.util import settle
from fix_servers import FdTracker
from poolkit import (
    ConfigError,
    KeyedPool,
    ManagedPool,
    Pool,
    PoolUsageError,
    Registry,
    registry,
)
from poolkit.testing import FakeConnection, FakeConnector

FakePool = Pool[FakeConnection]


def pool_factory(
    connector: FakeConnector, made: list[FakePool] | None = None, **config: Any
) -> Callable[[], FakePool]:
    """A sync factory of pools on ``connector``; records each pool it makes in ``made``."""
    config.setdefault("min_size", 1)
    config.setdefault("max_size", 4)

    def factory() -> FakePool:
        pool = Pool(connector, **config)
        if made is not None:
            made.append(pool)
        return pool

    return factory


def is_open(pool: FakePool) -> bool:
    """Not ``pool.closed`` (a call, so that type checkers do not narrow the property)."""
    return not pool.closed


async def use(pool: FakePool) -> FakeConnection:
    """Borrow a connection and give it back; return it."""
    async with pool.acquire(timeout=5) as conn:
        assert conn.alive
    return conn


# ---------------------------------------------------------------------------- the basics


async def test_get_returns_one_pool_per_key_bound_to_the_running_loop() -> None:
    """The same key gives the same pool in one loop; different keys give different pools."""
    reg = Registry("basics")
    connector = FakeConnector()
    async with reg:
        a = await reg.get("a", pool_factory(connector))
        assert await reg.get("a", pool_factory(connector)) is a
        b = await reg.get("b", pool_factory(connector))
        assert b is not a
        await use(a)
        assert a.loop is asyncio.get_running_loop()
        assert reg.pools() == {"a": a, "b": b}
        assert sorted(str(k) for k, _ in reg.all_pools()) == ["a", "b"]
    assert a.closed and b.closed
    assert reg.pools() == {}


async def test_async_factory_is_awaited_under_the_running_loop() -> None:
    """An async factory is awaited in the loop that will use the pool."""
    reg = Registry("async-factory")
    connector = FakeConnector()
    seen: list[asyncio.AbstractEventLoop] = []

    async def factory() -> FakePool:
        seen.append(asyncio.get_running_loop())
        pool = Pool(connector, min_size=1, max_size=2)
        await pool.open()
        return pool

    async with reg:
        pool = await reg.get("db", factory)
        assert seen == [asyncio.get_running_loop()]
        assert pool.stats().idle == 1
        assert await reg.get("db", factory) is pool
        assert len(seen) == 1


async def test_get_of_an_existing_pool_does_not_suspend() -> None:
    """Once a loop's pool exists, get() completes without yielding to the loop."""
    reg = Registry("fast-path")
    async with reg:
        pool = await reg.get("db", pool_factory(FakeConnector()))
        coro = reg.get("db", pool_factory(FakeConnector()))
        with pytest.raises(StopIteration) as done:
            coro.send(None)
        assert done.value.value is pool


async def test_concurrent_first_gets_share_one_creation() -> None:
    """Tasks asking for a new key at once wait for one factory call and get the same pool."""
    reg = Registry("concurrent")
    connector = FakeConnector()
    calls = 0

    async def factory() -> FakePool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return Pool(connector, min_size=0, max_size=2)

    async with reg:
        pools = await asyncio.gather(*(reg.get("db", factory) for _ in range(10)))
    assert calls == 1
    assert all(p is pools[0] for p in pools)


async def test_failed_creation_reaches_every_waiter_and_the_next_get_retries() -> None:
    """When the factory raises, the tasks waiting on that creation get the error; the next
    get() calls the factory again."""
    reg = Registry("failing")
    connector = FakeConnector()
    attempts = 0

    async def factory() -> FakePool:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise OSError("database is starting up")
        return Pool(connector, min_size=0, max_size=2)

    async with reg:
        results = await asyncio.gather(
            *(reg.get("db", factory) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, OSError) for r in results), results
        assert attempts == 1
        pool = await reg.get("db", factory)
        assert attempts == 2
        await use(pool)


async def test_cancelled_creator_lets_a_waiting_task_create_the_pool() -> None:
    """If the task running the factory is cancelled, a task that was waiting for it runs the
    factory itself instead of failing."""
    reg = Registry("cancelled")
    connector = FakeConnector()
    started = asyncio.Event()
    calls = 0

    async def factory() -> FakePool:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await asyncio.Event().wait()  # until cancelled
        return Pool(connector, min_size=0, max_size=2)

    async with reg:
        creator = asyncio.create_task(reg.get("db", factory))
        await started.wait()
        waiter = asyncio.create_task(reg.get("db", factory))
        await asyncio.sleep(0)
        creator.cancel()
        with pytest.raises(asyncio.CancelledError):
            await creator
        pool = await asyncio.wait_for(waiter, 5)
        assert calls == 2
        assert await reg.get("db", factory) is pool


async def test_a_pool_closed_by_hand_is_replaced_on_the_next_get() -> None:
    """get() never returns a closed pool: it makes a new one."""
    reg = Registry("replace")
    connector = FakeConnector()
    async with reg:
        first = await reg.get("db", pool_factory(connector))
        await first.close()
        second = await reg.get("db", pool_factory(connector))
        assert second is not first
        assert not second.closed
        await use(second)


async def test_keyed_pools_and_other_pool_like_objects_can_be_registered() -> None:
    """Anything with async close() and terminate() can be managed, e.g. a KeyedPool."""
    reg = Registry("keyed")
    connectors: list[FakeConnector] = []

    def connector_for(key: str) -> FakeConnector:
        connectors.append(FakeConnector(target=f"fake://{key}"))
        return connectors[-1]

    async with reg:
        keyed = await reg.get("origins", lambda: KeyedPool(connector_for, min_size=0, max_size=2))
        async with keyed.acquire("a") as conn:
            assert conn.alive
        managed: ManagedPool = keyed
        assert managed is keyed
    assert keyed.closed
    assert all(not c.live for c in connectors)


async def test_close_key_closes_only_that_pool() -> None:
    """registry.close(key) closes that key's pool; the next get() makes a new one."""
    reg = Registry("close-key")
    connector = FakeConnector()
    async with reg:
        a = await reg.get("a", pool_factory(connector))
        b = await reg.get("b", pool_factory(connector))
        await reg.close("a")
        assert a.closed and not b.closed
        assert await reg.get("a", pool_factory(connector)) is not a
        await reg.close("missing")  # nothing to do


# ---------------------------------------------------------------------------- misuse


async def test_factory_result_without_close_and_terminate_is_a_type_error() -> None:
    """A factory must return a pool; the error names what it returned."""
    reg = Registry("bad-factory")
    with pytest.raises(TypeError, match=r"returned dict, which is not a pool"):
        await reg.get("db", lambda: {})  # type: ignore[arg-type,return-value]
    # The failed creation left nothing behind: a good factory works afterwards.
    async with reg:
        await use(await reg.get("db", pool_factory(FakeConnector())))


async def test_factory_returning_a_pool_shared_between_keys_is_refused() -> None:
    """The factory must make a new pool per call: handing back one the registry already manages
    (for another key or loop) is a PoolUsageError."""
    reg = Registry("shared")
    shared = Pool(FakeConnector(), min_size=0, max_size=2)
    async with reg:
        assert await reg.get("a", lambda: shared) is shared
        with pytest.raises(PoolUsageError, match="already manages"):
            await reg.get("b", lambda: shared)


def test_factory_returning_a_pool_bound_to_another_loop_is_refused() -> None:
    """A pool already bound to another event loop is refused, naming both loops."""
    reg = Registry("other-loop")
    pool = Pool(FakeConnector(), min_size=1, max_size=2)
    with asyncio.Runner(debug=True) as first:
        first.run(pool.open())

        async def register() -> None:
            await reg.get("db", lambda: pool)

        with asyncio.Runner(debug=True) as second, pytest.raises(PoolUsageError) as info:
            second.run(register())
        message = str(info.value)
        assert f"{id(first.get_loop()):#x}" in message
        assert "bound to event loop" in message and "running event loop" in message
        first.run(pool.close())


def test_pool_used_from_another_loop_raises_usage_error_pointing_to_the_registry() -> None:
    """Using a loop's pool from another loop fails fast with PoolUsageError naming both loops
    and the registry (never a hang or a driver error)."""
    reg = Registry("wrong-loop")
    connector = FakeConnector()
    with asyncio.Runner(debug=True) as first, asyncio.Runner(debug=True) as second:
        pool = first.run(reg.get("db", pool_factory(connector)))
        first.run(use(pool))

        async def misuse() -> None:
            async with pool.acquire(timeout=1):
                pass

        with pytest.raises(PoolUsageError) as info:
            second.run(misuse())
        message = str(info.value)
        assert f"{id(first.get_loop()):#x}" in message
        assert f"{id(second.get_loop()):#x}" in message
        assert "Registry" in message
        # Through the registry, the second loop gets its own pool.
        own = second.run(reg.get("db", pool_factory(connector)))
        assert own is not pool
        second.run(use(own))
    assert pool.closed and own.closed
    assert connector.live == []


def test_get_without_a_running_loop_is_a_usage_error() -> None:
    """get(), close(), close_all() and pools() need a running event loop."""
    reg = Registry("no-loop")
    coro = reg.get("db", pool_factory(FakeConnector()))
    with pytest.raises(PoolUsageError, match="running event loop"):
        coro.send(None)
    with pytest.raises(PoolUsageError, match="running event loop"):
        reg.close("db").send(None)
    with pytest.raises(PoolUsageError, match="running event loop"):
        reg.close_all().send(None)
    with pytest.raises(PoolUsageError, match="running event loop"):
        reg.pools()


@pytest.mark.parametrize("bad", [-1, "5", True, float("nan")])
def test_invalid_close_timeout_is_a_config_error(bad: object) -> None:
    """close_timeout must be a non-negative number; the error names the value."""
    with pytest.raises(ConfigError, match="close_timeout") as info:
        Registry("bad", close_timeout=bad)  # type: ignore[arg-type]
    assert repr(bad) in str(info.value)


async def test_keys_with_credentials_are_redacted_in_errors_and_repr() -> None:
    """A DSN used as a key never shows its password in an error message or the repr."""
    reg = Registry("secret")
    canary = "s3cr3t-canary-pw"
    for key in (
        f"postgresql://app:{canary}@db.internal:5432/main",
        ("mysql", f"host=db password={canary}"),
    ):
        with pytest.raises(TypeError) as info:
            await reg.get(key, lambda: object())  # type: ignore[arg-type,return-value]
        assert canary not in str(info.value)
        assert "***" in str(info.value)
    async with reg:
        await reg.get(f"postgresql://app:{canary}@db/main", pool_factory(FakeConnector()))
        assert canary not in repr(reg)
        assert repr(reg) == "<Registry 'secret' loops=1 pools=1>"


def test_default_registry_is_a_registry() -> None:
    """poolkit.registry is a ready-made Registry for the common case."""
    assert isinstance(registry, Registry)
    assert registry.name == "default"


# ---------------------------------------------------------------------------- loop lifetimes


def test_each_asyncio_run_gets_its_own_working_pool() -> None:
    """100 consecutive asyncio.run() calls with one key: each gets a new working pool bound
    to its loop; each pool is closed gracefully when its loop shuts down; no warning, no loop
    error, no fd growth, and the registry keeps neither loops nor pools alive."""
    reg = Registry("runs")
    connector = FakeConnector()
    made: list[FakePool] = []
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    fds = FdTracker()

    async def main(run: int) -> None:
        pool = await reg.get("db", pool_factory(connector, made))
        assert pool.loop is asyncio.get_running_loop()
        assert len(made) == run + 1
        if run:
            assert made[run - 1].closed  # the previous loop's pool ended with its loop
        await use(pool)
        loops.append(weakref.ref(asyncio.get_running_loop()))

    for run in range(100):
        asyncio.run(main(run), debug=True)

    assert len({id(p) for p in made}) == 100
    assert all(p.closed for p in made)
    assert connector.live == []
    assert all(c.closed and not c.aborted for c in connector.opened)  # graceful, not aborted
    assert repr(reg) == "<Registry 'runs' loops=0 pools=0>"
    pool_refs = [weakref.ref(p) for p in made]
    made.clear()
    gc.collect()
    assert all(r() is None for r in loops), "the registry kept a closed loop alive"
    assert all(r() is None for r in pool_refs), "the registry kept a closed loop's pool alive"
    fds.check_sync()


def test_loop_shutdown_aborts_connections_still_in_use_after_close_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At loop shutdown, a pool whose connections are still out is given close_timeout
    seconds, then its connections are aborted, with one warning log naming the pool."""
    reg = Registry("in-use", close_timeout=0.05)
    connector = FakeConnector()
    made: list[FakePool] = []
    held: list[FakeConnection] = []

    async def main() -> None:
        pool = await reg.get("db", pool_factory(connector, made, min_size=2, name="held"))
        await settle(pool)  # the registry opened it: wait for min_size
        held.append(await pool.acquire())  # never released

    with caplog.at_level(logging.WARNING, logger="poolkit"):
        asyncio.run(main(), debug=True)
    (pool,) = made
    assert pool.closed
    assert connector.live == []
    assert held[0].aborted
    assert [r for r in caplog.records if "'held'" in r.getMessage()], caplog.text


def test_cleanup_in_other_async_generators_can_still_use_the_pool_at_shutdown() -> None:
    """At loop shutdown, async generators closed along with the registry's (their cleanup code
    runs then) can still borrow from the loop's pool; it is closed after they are done."""
    reg = Registry("cleanup")
    connector = FakeConnector()
    made: list[FakePool] = []
    cleaned: list[FakeConnection] = []

    async def stream() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:  # runs in loop.shutdown_asyncgens(): the generator was left unfinished
            pool = await reg.get("db", pool_factory(connector, made))
            async with pool.acquire(timeout=1) as conn:
                await asyncio.sleep(0.01)
                cleaned.append(conn)

    unfinished = [stream() for _ in range(3)]  # kept alive until the loop shuts down

    async def main() -> None:
        await use(await reg.get("db", pool_factory(connector, made)))
        for agen in unfinished:
            async for _ in agen:
                break  # leave each generator suspended

    asyncio.run(main(), debug=True)
    assert len(cleaned) == 3
    assert len(made) == 1 and made[0].closed
    assert connector.live == []


def test_pools_end_with_their_loop_even_if_the_registry_is_dropped() -> None:
    """A registry that goes away while its loop runs does not orphan the loop's pools: they are
    still closed when the loop shuts down."""
    connector = FakeConnector()
    made: list[FakePool] = []

    async def main() -> None:
        reg = Registry("dropped")
        await use(await reg.get("db", pool_factory(connector, made)))
        reg_ref = weakref.ref(reg)
        del reg
        gc.collect()
        assert reg_ref() is None

    asyncio.run(main(), debug=True)
    assert made[0].closed
    assert connector.live == []


def test_loop_closed_by_hand_aborts_idle_and_in_use_connections() -> None:
    """A loop closed without shutting down its async generators (loop.close()): its pools are
    terminated at once, without touching the closed loop: idle and in-use connections are
    aborted, with no exception, no warning and no fd left."""
    reg = Registry("abrupt")
    connector = FakeConnector()
    made: list[FakePool] = []
    fds = FdTracker()

    async def main() -> FakeConnection:
        pool = await reg.get("db", pool_factory(connector, made, min_size=3))
        await settle(pool)  # the registry opened it: wait for min_size
        conn = await pool.acquire()  # in use when the loop closes
        async with pool.acquire():
            pass
        return conn

    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    in_use = loop.run_until_complete(main())
    (pool,) = made
    assert pool.stats().in_use == 1 and pool.stats().idle >= 1
    loop.close()
    assert pool.closed
    assert connector.live == []
    assert in_use.aborted
    assert all(c.aborted for c in connector.opened)
    assert reg.all_pools() == []
    loop_ref = weakref.ref(loop)
    del loop, pool
    made.clear()
    gc.collect()
    assert loop_ref() is None
    fds.check_sync()


def test_stopped_loop_keeps_its_pools_until_it_closes() -> None:
    """A loop that is only stopped (run_until_complete returned) keeps its pool and
    connections for the next run; closing it ends them."""
    reg = Registry("stopped")
    connector = FakeConnector()
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    try:
        first = loop.run_until_complete(reg.get("db", pool_factory(connector)))
        loop.run_until_complete(use(first))
        again = loop.run_until_complete(reg.get("db", pool_factory(connector)))
        assert again is first and is_open(first)
        assert reg.pools(loop) == {"db": first}
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert not is_open(first)
    assert connector.live == []


def test_close_all_touches_only_the_running_loop() -> None:
    """close_all() closes the running loop's pools and leaves other loops' pools open."""
    reg = Registry("close-all")
    connector = FakeConnector()
    with asyncio.Runner(debug=True) as one, asyncio.Runner(debug=True) as two:
        pool_one = one.run(reg.get("db", pool_factory(connector)))
        pool_two = two.run(reg.get("db", pool_factory(connector)))
        two.run(reg.close_all())
        assert pool_two.closed and is_open(pool_one)
        one.run(use(pool_one))
        assert reg.pools(one.get_loop()) == {"db": pool_one}
        assert reg.pools(two.get_loop()) == {}
    assert not is_open(pool_one)
    assert connector.live == []


async def test_async_with_owns_shutdown_for_the_current_loop() -> None:
    """`async with registry:` closes the loop's pools on exit; the registry stays usable."""
    reg = Registry("owned")
    connector = FakeConnector()
    async with reg:
        pool = await reg.get("db", pool_factory(connector))
        await use(pool)
    assert pool.closed
    assert connector.live == []
    async with reg:
        second = await reg.get("db", pool_factory(connector))
        assert second is not pool
        await use(second)
    assert second.closed


def test_loops_in_eight_threads_at_once_each_get_their_own_pool() -> None:
    """8 threads, each running its own loop, use one key at the same time: each loop gets
    its own pool, creation is thread-safe, and every pool ends with its loop."""
    reg = Registry("threads")
    made: dict[int, FakePool] = {}
    connectors: dict[int, FakeConnector] = {}
    all_in = threading.Barrier(8)
    all_used = threading.Barrier(8)
    all_counted = threading.Barrier(8)
    lock = threading.Lock()
    fds = FdTracker()

    async def main(index: int) -> None:
        await asyncio.to_thread(all_in.wait, 10)  # every loop exists before any pool is made
        connector = FakeConnector()
        pool = await reg.get("db", pool_factory(connector, max_size=2))
        with lock:
            made[index], connectors[index] = pool, connector
        assert pool.loop is asyncio.get_running_loop()
        await asyncio.gather(*(use(pool) for _ in range(20)))
        assert await reg.get("db", pool_factory(connector)) is pool
        await asyncio.to_thread(all_used.wait, 10)  # all 8 pools are alive from here...
        assert len(reg.all_pools()) == 8
        await asyncio.to_thread(all_counted.wait, 10)  # ...to here

    run_threads(8, lambda i: asyncio.run(main(i), debug=True))
    assert len({id(p) for p in made.values()}) == 8
    assert all(p.closed for p in made.values())
    assert all(not c.live for c in connectors.values())
    assert reg.all_pools() == []
    fds.check_sync()


def test_threads_running_loops_repeatedly_never_share_a_pool() -> None:
    """4 threads each call asyncio.run() 25 times with one key: 100 distinct pools, all closed."""
    reg = Registry("thread-runs")
    connector_lock = threading.Lock()
    made: list[FakePool] = []
    connectors: list[FakeConnector] = []

    async def main() -> None:
        connector = FakeConnector()
        pool = await reg.get("db", pool_factory(connector, min_size=0))
        with connector_lock:
            made.append(pool)
            connectors.append(connector)
        assert pool.loop is asyncio.get_running_loop()
        await use(pool)

    def thread(_: int) -> None:
        for _ in range(25):
            asyncio.run(main(), debug=True)

    run_threads(4, thread)
    assert len({id(p) for p in made}) == 100
    assert all(p.closed for p in made)
    assert all(not c.live for c in connectors)


# ---------------------------------------------------------------------------- pytest-asyncio


@pytest.fixture(scope="module")
def shared_registry() -> Iterator[tuple[Registry, list[FakePool], FakeConnector]]:
    """A registry shared by several tests, each running in its own pytest-asyncio loop."""
    connector = FakeConnector()
    yield Registry("pytest-asyncio"), [], connector
    assert connector.live == []


@pytest.mark.parametrize("round_", range(3))
async def test_pytest_asyncio_per_test_loops_get_their_own_pools(
    round_: int, shared_registry: tuple[Registry, list[FakePool], FakeConnector]
) -> None:
    """A registry shared across tests with per-test loops gives each test a pool bound to its
    own loop; the pools of earlier tests were closed when their loops ended."""
    reg, seen, connector = shared_registry
    pool = await reg.get("db", pool_factory(connector))
    assert pool.loop is asyncio.get_running_loop()
    assert pool not in seen
    assert all(p.closed for p in seen)
    await use(pool)
    seen.append(pool)
