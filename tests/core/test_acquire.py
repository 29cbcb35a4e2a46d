"""Acquire and release: fast path, sizes, timeouts, FIFO handoff, misuse."""

from __future__ import annotations

import asyncio
import time

import pytest

from core.util import settle
from poolkit import (
    ConnectError,
    Pool,
    PoolClosed,
    PoolOverloaded,
    PoolTimeout,
    PoolUsageError,
)
from poolkit.testing import FakeConnection, FakeConnector, assert_pool_consistent


async def test_fast_path_does_not_suspend() -> None:
    """With an idle connection and nobody waiting, acquire completes without yielding."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=2) as pool:
        coro = pool.acquire().__aenter__()
        with pytest.raises(StopIteration) as done:
            coro.send(None)
        conn = done.value.value
        assert isinstance(conn, FakeConnection)
        await pool.release(conn)


async def test_context_manager_and_await_forms() -> None:
    """acquire() works as an async context manager and as an awaitable with release()."""
    connector = FakeConnector()
    async with Pool(connector, min_size=0, max_size=2) as pool:
        async with pool.acquire() as conn:
            assert pool.stats().in_use == 1
            assert conn.alive
        conn2 = await pool.acquire()
        assert pool.stats().in_use == 1
        await pool.release(conn2)
        await settle(pool)
        assert pool.stats().in_use == 0
        assert_pool_consistent(pool)


async def test_idle_connections_are_reused_lifo() -> None:
    """The most recently released connection is handed out first."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=3, max_size=3) as pool:
        a = await pool.acquire()
        b = await pool.acquire()
        await pool.release(a)
        await pool.release(b)
        assert await pool.acquire() is b
        assert await pool.acquire() is a
        await pool.release(a)
        await pool.release(b)


async def test_open_warms_min_size() -> None:
    """open() opens min_size connections before returning."""
    connector = FakeConnector()
    async with Pool(connector, min_size=3, max_size=5) as pool:
        stats = pool.stats()
        assert stats.idle == 3
        assert stats.created == 3
        assert len(connector.live) == 3


async def test_open_fails_fast_on_dead_server_and_can_be_retried() -> None:
    """open(wait=True) raises ConnectError on the first failure; the pool can open later."""
    connector = FakeConnector(connect="fail")
    pool = Pool(connector, min_size=2, max_size=4)
    with pytest.raises(ConnectError) as info:
        await pool.open()
    assert "fake://test" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert connector.live == []
    connector.set("connect", "ok")
    await pool.open()
    assert pool.stats().idle == 2
    await pool.close()
    assert connector.live == []


async def test_open_times_out_with_phase_open() -> None:
    """A warm-up that hangs ends in PoolTimeout(phase='open')."""
    connector = FakeConnector(connect="never")
    pool = Pool(connector, min_size=1, max_size=1, connect_timeout=5)
    with pytest.raises(PoolTimeout) as info:
        await pool.open(timeout=0.05)
    assert info.value.phase == "open"
    await pool.close()


async def test_acquire_opens_implicitly() -> None:
    """A pool that was never opened opens (binds the loop) on first acquire."""
    connector = FakeConnector()
    pool = Pool(connector, min_size=0, max_size=1)
    async with pool.acquire() as conn:
        assert conn.alive
    assert pool.loop is asyncio.get_running_loop()
    await pool.close()
    assert connector.live == []


async def test_never_more_than_max_size_connections() -> None:
    """Under heavy concurrency the pool never holds more than max_size connections."""
    connector = FakeConnector(connect="slow", delay=0.001)
    peak = 0
    async with Pool(connector, min_size=0, max_size=4) as pool:

        async def worker() -> None:
            nonlocal peak
            async with pool.acquire():
                peak = max(peak, len(connector.live), pool.stats().size)
                await asyncio.sleep(0)

        await asyncio.gather(*(worker() for _ in range(200)))
        assert peak <= 4
        assert len(connector.opened) <= 4
        await settle(pool)
        assert_pool_consistent(pool)


async def test_timeout_message_names_pool_limits_and_state() -> None:
    """PoolTimeout names the pool, the timeout, max_size, in_use and waiting."""
    connector = FakeConnector()
    async with Pool(connector, min_size=1, max_size=1, name="orders") as pool, pool.acquire():
        with pytest.raises(PoolTimeout) as info:
            await pool.acquire(timeout=0.02)
    err = info.value
    assert isinstance(err, TimeoutError)
    assert err.phase == "wait"
    assert err.timeout == 0.02
    assert err.max_size == 1
    assert err.in_use == 1
    message = str(err)
    for part in ("'orders'", "0.02 s", "max_size=1", "in_use=1", "waiting=0"):
        assert part in message
    assert pool.stats().timeouts == 1


async def test_timeout_is_accurate() -> None:
    """acquire(timeout=t) gives up after t seconds, not much later."""
    connector = FakeConnector()
    async with Pool(connector, min_size=1, max_size=1) as pool, pool.acquire():
        start = time.monotonic()
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.2)
        elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 0.6


async def test_timeout_chains_last_connect_error() -> None:
    """When connections cannot be opened, the timeout carries the real cause."""
    connector = FakeConnector(connect="fail")
    pool = Pool(connector, min_size=0, max_size=2, reconnect_initial_delay=0.01)
    with pytest.raises(PoolTimeout) as info:
        await pool.acquire(timeout=0.1)
    assert isinstance(info.value.__cause__, ConnectError)
    assert "last connect error" in str(info.value)
    assert "fake connect failure" in str(info.value)
    assert pool.stats().connect_errors >= 1
    assert pool.stats().last_connect_error is not None
    await pool.close()


async def test_max_waiting_refuses_at_once() -> None:
    """With max_waiting tasks waiting, one more acquire raises PoolOverloaded immediately."""
    connector = FakeConnector()
    async with Pool(connector, min_size=1, max_size=1, max_waiting=2) as pool:
        held = await pool.acquire()
        waiters = [asyncio.ensure_future(pool.acquire(timeout=5)) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert pool.stats().waiting == 2
        with pytest.raises(PoolOverloaded) as info:
            await pool.acquire(timeout=5)
        assert "max_waiting=2" in str(info.value)
        assert pool.stats().overloads == 1
        await pool.release(held)
        for w in waiters:
            await pool.release(await w)
        await settle(pool)
        assert_pool_consistent(pool)


async def test_release_hands_connection_to_oldest_waiter_no_barging() -> None:
    """A released connection goes to the oldest waiter, even if the releaser asks again at once."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=1) as pool:
        held = await pool.acquire()
        order: list[str] = []

        async def waiter(name: str) -> None:
            async with pool.acquire(timeout=5):
                order.append(name)

        first = asyncio.ensure_future(waiter("first"))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(waiter("second"))
        await asyncio.sleep(0.01)
        await pool.release(held)
        # The releasing task asks again without yielding: it must queue behind both waiters.
        again = asyncio.ensure_future(waiter("releaser"))
        await asyncio.gather(first, second, again)
        assert order == ["first", "second", "releaser"]


async def test_ten_thousand_waiters_served_in_fifo_order() -> None:
    """10,000 tasks on max_size 10 are served strictly in arrival order; the queue drains."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=10, max_size=10, acquire_timeout=60) as pool:
        held = [await pool.acquire() for _ in range(10)]
        served: list[int] = []

        async def client(i: int) -> None:
            conn = await pool.acquire()
            served.append(i)
            await pool.release(conn)

        tasks = [asyncio.ensure_future(client(i)) for i in range(10_000)]
        await asyncio.sleep(0)
        while pool.stats().waiting < 10_000:
            await asyncio.sleep(0.01)
        for conn in held:
            await pool.release(conn)
        await asyncio.gather(*tasks)
        assert served == list(range(10_000))
        stats = pool.stats()
        assert stats.waiting == 0
        assert stats.size == 10
        assert stats.timeouts == 0
        assert_pool_consistent(pool)


async def test_acquire_on_closed_pool_raises_pool_closed() -> None:
    """Acquiring from a closed pool raises PoolClosed naming the pool."""
    pool = Pool(FakeConnector(), min_size=0, max_size=1, name="gone")
    await pool.open()
    await pool.close()
    with pytest.raises(PoolClosed, match="'gone'"):
        await pool.acquire()


async def test_release_twice_raises_usage_error() -> None:
    """Releasing the same connection twice raises PoolUsageError."""
    async with Pool(FakeConnector(), min_size=1, max_size=1) as pool:
        conn = await pool.acquire()
        await pool.release(conn)
        with pytest.raises(PoolUsageError, match="released twice"):
            await pool.release(conn)
        assert_pool_consistent(pool)


async def test_context_exit_after_manual_release_raises() -> None:
    """Releasing inside ``async with`` and again at exit is reported as a double release."""
    async with Pool(FakeConnector(), min_size=1, max_size=1) as pool:
        ctx = pool.acquire()
        conn = await ctx.__aenter__()
        await pool.release(conn)
        with pytest.raises(PoolUsageError, match="already released"):
            await ctx.__aexit__(None, None, None)


async def test_release_to_wrong_pool_names_the_owner() -> None:
    """Releasing a connection to another pool raises PoolUsageError naming both pools."""
    async with (
        Pool(FakeConnector(), min_size=1, max_size=1, name="a") as a,
        Pool(FakeConnector(), min_size=1, max_size=1, name="b") as b,
    ):
        conn = await a.acquire()
        with pytest.raises(PoolUsageError) as info:
            await b.release(conn)
        assert "'a'" in str(info.value)
        assert "'b'" in str(info.value)
        await a.release(conn)


async def test_release_of_unknown_object_raises() -> None:
    """Releasing something that never came from the pool raises PoolUsageError."""
    async with Pool(FakeConnector(), min_size=0, max_size=1) as pool:
        with pytest.raises(PoolUsageError, match="not acquired from this pool"):
            await pool.release(FakeConnection())


def test_use_from_another_event_loop_raises_usage_error() -> None:
    """A pool bound to one loop refuses another, naming both loops and the registry."""
    pool = Pool(FakeConnector(), min_size=1, max_size=1)

    async def first() -> None:
        await pool.open()

    async def second() -> None:
        await pool.acquire()

    asyncio.run(first())
    with pytest.raises(PoolUsageError) as info:
        asyncio.run(second())
    message = str(info.value)
    assert message.count("event loop") >= 2
    assert "Registry" in message
    pool.terminate()


def test_acquire_context_outside_loop_raises() -> None:
    """Opening a pool without a running loop raises PoolUsageError, not a driver error."""
    pool = Pool(FakeConnector(), min_size=0, max_size=1)
    coro = pool.open()
    with pytest.raises(PoolUsageError, match="running event loop"):
        coro.send(None)
    coro.close()


async def test_check_on_acquire_always_checks_every_time() -> None:
    """check_on_acquire='always' checks the connection before every handout."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=1, check_on_acquire="always") as pool:
        for _ in range(3):
            async with pool.acquire() as conn:
                pass
        assert conn.checks == 3


async def test_check_on_acquire_never_skips_checks() -> None:
    """check_on_acquire='never' never checks on acquire."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=1, check_on_acquire="never") as pool:
        async with pool.acquire() as conn:
            pass
        assert conn.checks == 0


async def test_failed_check_on_acquire_replaces_connection_silently() -> None:
    """A connection failing its pre-use check is discarded and another one is handed out."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=1, check_on_acquire="always") as pool:
        first = connector.opened[0]
        connector.fail_next("check")
        async with pool.acquire() as conn:
            assert conn is not first
            assert first.checks == 1
        stats = pool.stats()
        assert stats.check_failures == 1
        assert stats.closed.get("check_failed") == 1
        assert len(connector.opened) == 2


async def test_dead_idle_connection_is_never_handed_out() -> None:
    """An idle connection the connector reports closed is dropped, not lent."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=1, check_on_acquire="never") as pool:
        first = connector.opened[0]
        connector.kill(first)
        async with pool.acquire() as conn:
            assert conn is not first
            assert conn.alive
        assert pool.stats().closed.get("broken") == 1


async def test_bad_timeout_argument_names_value() -> None:
    """acquire(timeout=-1) raises ConfigError naming the value."""
    async with Pool(FakeConnector(), min_size=0, max_size=1) as pool:
        with pytest.raises(ValueError, match="timeout=-1"):
            pool.acquire(timeout=-1)


async def test_connector_must_implement_protocol() -> None:
    """A connector missing a method is refused with a TypeError naming it."""
    with pytest.raises(TypeError, match=r"missing connect\(\)"):
        Pool(object(), min_size=0)  # type: ignore[arg-type]
