"""Release: resets off the caller's path, retirement rules, hooks."""

from __future__ import annotations

import asyncio

import pytest

from core.util import settle
from poolkit import Pool
from poolkit.testing import FakeConnection, FakeConnector, assert_pool_consistent


async def test_release_returns_before_the_reset_finishes() -> None:
    """release() does not wait for the reset; the connection is lent again only once clean."""
    connector = FakeConnector(reset="slow", delay=0.2)
    async with Pool(connector, min_size=2, max_size=2) as pool:
        conn = await pool.acquire()
        conn.dirty = True
        loop = asyncio.get_running_loop()
        start = loop.time()
        await pool.release(conn)
        assert loop.time() - start < 0.1
        assert pool.stats().resetting == 1
        other = await pool.acquire()
        assert other is not conn
        await pool.release(other)
        await settle(pool)
        assert not conn.dirty
        assert conn.resets == 1
        assert_pool_consistent(pool)


async def test_waiter_gets_connection_only_after_reset() -> None:
    """A waiter is handed the released connection after its reset completed."""
    connector = FakeConnector(reset="slow", delay=0.05)
    async with Pool(connector, min_size=1, max_size=1) as pool:
        conn = await pool.acquire()
        conn.dirty = True
        waiter = asyncio.ensure_future(pool.acquire(timeout=5))
        await asyncio.sleep(0.01)
        await pool.release(conn)
        got = await waiter
        assert got is conn
        assert not got.dirty
        await pool.release(got)


async def test_failed_reset_discards_the_connection() -> None:
    """A reset that raises closes the connection and counts a reset failure."""
    connector = FakeConnector(reset="fail")
    async with Pool(connector, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            pass
        await settle(pool)
        stats = pool.stats()
        assert stats.reset_failures == 1
        assert stats.closed["reset_failed"] == 1
        assert not conn.alive
        assert stats.idle == 1  # refilled to min_size
        assert_pool_consistent(pool)


async def test_reset_that_hangs_is_bounded_by_reset_timeout() -> None:
    """A reset that never returns is cut off by reset_timeout and the connection aborted."""
    connector = FakeConnector(reset="never")
    async with Pool(connector, min_size=0, max_size=1, reset_timeout=0.05) as pool:
        async with pool.acquire() as conn:
            pass
        async with pool.acquire(timeout=2) as conn2:
            assert conn2 is not conn
        assert pool.stats().reset_failures >= 1
        assert conn.closed or conn.aborted
        connector.set("reset", "ok")


async def test_needs_reset_false_skips_the_reset() -> None:
    """When the connector says no reset is needed, release makes the connection idle at once."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            pass
        stats = pool.stats()
        assert stats.idle == 1
        assert stats.resetting == 0
        assert conn.resets == 0


async def test_needs_reset_true_for_dirty_connection() -> None:
    """needs_reset() is asked each release: a dirty connection is reset."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            conn.dirty = True
        await settle(pool)
        assert conn.resets == 1
        assert not conn.dirty


async def test_error_inside_block_forces_a_reset() -> None:
    """If the block raised, the connection is reset even when needs_reset() says no."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=1) as pool:
        with pytest.raises(RuntimeError):
            async with pool.acquire() as conn:
                raise RuntimeError("boom")
        await settle(pool)
        assert conn.resets == 1


async def test_user_exception_propagates_unchanged() -> None:
    """An exception raised in the block reaches the caller as is."""
    async with Pool(FakeConnector(), min_size=1, max_size=1) as pool:

        class Mine(Exception):
            pass

        with pytest.raises(Mine):
            async with pool.acquire():
                raise Mine


async def test_release_with_discard_closes_the_connection() -> None:
    """release(conn, discard=True) closes the connection instead of reusing it."""
    connector = FakeConnector()
    async with Pool(connector, min_size=0, max_size=1) as pool:
        conn = await pool.acquire()
        await pool.release(conn, discard=True)
        await settle(pool)
        assert conn.closed
        assert pool.stats().closed["discarded"] == 1


async def test_max_uses_retires_connection() -> None:
    """After max_uses acquires the connection is closed at release."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=0, max_size=1, max_uses=3) as pool:
        seen: list[FakeConnection] = []
        for _ in range(4):
            async with pool.acquire() as conn:
                seen.append(conn)
        await settle(pool)
        assert seen[0] is seen[1] is seen[2]
        assert seen[3] is not seen[0]
        assert seen[0].closed
        assert pool.stats().closed["max_uses"] == 1


async def test_connection_killed_while_in_use_is_not_reused() -> None:
    """A connection that died while lent is closed at release, not put back."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=0, max_size=1) as pool:
        async with pool.acquire() as conn:
            connector.kill(conn)
        async with pool.acquire() as conn2:
            assert conn2 is not conn
        assert pool.stats().closed["broken"] == 1


async def test_hooks_run_in_order() -> None:
    """on_connect, on_acquire, on_release and on_close each see the connection."""
    calls: list[tuple[str, int]] = []

    def on_connect(conn: FakeConnection) -> None:
        calls.append(("connect", conn.id))

    async def on_acquire(conn: FakeConnection) -> None:
        calls.append(("acquire", conn.id))

    async def on_release(conn: FakeConnection) -> None:
        calls.append(("release", conn.id))

    def on_close(conn: FakeConnection) -> None:
        calls.append(("close", conn.id))

    connector = FakeConnector()
    pool = Pool(
        connector,
        min_size=1,
        max_size=1,
        on_connect=on_connect,
        on_acquire=on_acquire,
        on_release=on_release,
        on_close=on_close,
    )
    async with pool:
        async with pool.acquire() as conn:
            pass
        await settle(pool)
    cid = conn.id
    assert calls == [("connect", cid), ("acquire", cid), ("release", cid), ("close", cid)]


async def test_failing_on_connect_counts_as_connect_error() -> None:
    """A failing on_connect hook discards the new connection and counts a connect error."""
    connector = FakeConnector()
    failures = 1

    def on_connect(conn: FakeConnection) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ValueError("cannot configure")

    pool = Pool(
        connector,
        min_size=0,
        max_size=1,
        on_connect=on_connect,
        reconnect_initial_delay=0.01,
    )
    async with pool.acquire(timeout=2) as conn:
        assert conn.alive
    assert pool.stats().connect_errors == 1
    assert connector.opened[0].closed
    await pool.close()


async def test_failing_on_acquire_discards_and_propagates() -> None:
    """A failing on_acquire hook propagates its error and discards the connection."""

    def on_acquire(conn: FakeConnection) -> None:
        raise LookupError("no")

    connector = FakeConnector()
    async with Pool(connector, min_size=1, max_size=1, on_acquire=on_acquire) as pool:
        with pytest.raises(LookupError):
            await pool.acquire()
        await settle(pool)
        assert connector.opened[0].closed
        assert pool.stats().in_use == 0
        assert_pool_consistent(pool)


async def test_failing_on_release_discards() -> None:
    """A failing on_release hook discards the connection (it may hold state)."""

    async def on_release(conn: FakeConnection) -> None:
        raise OSError("unsubscribe failed")

    connector = FakeConnector()
    async with Pool(connector, min_size=0, max_size=1, on_release=on_release) as pool:
        async with pool.acquire() as conn:
            pass
        await settle(pool)
        assert conn.closed
        assert pool.stats().reset_failures == 1
