"""close(), terminate(), resize(), drain(), repr and stats."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from core.util import settle
from poolkit import Pool, PoolClosed, PoolEvent
from poolkit.testing import FakeConnector, assert_pool_consistent


async def test_close_is_idempotent_and_concurrent_calls_wait() -> None:
    """close() twice, or from two tasks at once, closes once and both calls return."""
    connector = FakeConnector(close="slow", delay=0.05)
    pool = Pool(connector, min_size=2, max_size=2)
    await pool.open()
    await asyncio.gather(pool.close(), pool.close())
    await pool.close()
    assert pool.closed
    assert connector.live == []


async def test_close_fails_waiters_with_pool_closed() -> None:
    """Tasks waiting for a connection get PoolClosed when the pool closes."""
    connector = FakeConnector()
    pool = Pool(connector, min_size=1, max_size=1)
    await pool.open()
    held = await pool.acquire()
    waiters = [asyncio.ensure_future(pool.acquire(timeout=10)) for _ in range(3)]
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(pool.close())
    for w in waiters:
        with pytest.raises(PoolClosed):
            await w
    await pool.release(held)
    await closing
    assert connector.live == []


async def test_close_waits_for_connections_in_use() -> None:
    """close() waits for lent connections to come back, then closes them."""
    connector = FakeConnector()
    pool = Pool(connector, min_size=1, max_size=1)
    await pool.open()
    conn = await pool.acquire()
    closing = asyncio.ensure_future(pool.close(timeout=5))
    await asyncio.sleep(0.05)
    assert not closing.done()
    assert conn.alive
    await pool.release(conn)
    await closing
    assert conn.closed


async def test_close_is_bounded_and_aborts_unreturned_connections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connections never returned are aborted when close(timeout) runs out."""
    connector = FakeConnector()
    pool = Pool(connector, min_size=1, max_size=1)
    await pool.open()
    conn = await pool.acquire()
    with caplog.at_level(logging.WARNING, logger="poolkit"):
        await pool.close(timeout=0.05)
    assert conn.aborted
    assert "still in use" in caplog.text
    await pool.release(conn)  # releasing after close is harmless


async def test_close_with_hanging_close_is_bounded_by_close_timeout() -> None:
    """A connection whose graceful close hangs is aborted after close_timeout."""
    connector = FakeConnector(close="never")
    pool = Pool(connector, min_size=2, max_size=2, close_timeout=0.05)
    await pool.open()
    await asyncio.wait_for(pool.close(), 2)
    assert all(c.aborted for c in connector.opened)


async def test_cancelled_close_terminates_the_pool() -> None:
    """Cancelling close() aborts every connection and propagates the cancellation."""
    connector = FakeConnector()
    pool = Pool(connector, min_size=1, max_size=1)
    await pool.open()
    conn = await pool.acquire()
    closing = asyncio.ensure_future(pool.close(timeout=10))
    await asyncio.sleep(0.02)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert conn.aborted
    assert pool.closed


async def test_terminate_aborts_everything_now() -> None:
    """terminate() aborts idle and lent connections and fails waiters, synchronously."""
    connector = FakeConnector()
    pool = Pool(connector, min_size=2, max_size=2)
    await pool.open()
    lent = await pool.acquire()
    await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire(timeout=10))
    await asyncio.sleep(0.01)
    pool.terminate()
    assert all(c.aborted for c in connector.opened)
    with pytest.raises(PoolClosed):
        await waiter
    await pool.release(lent)
    await pool.close()


def test_terminate_after_loop_closed_does_not_touch_the_loop() -> None:
    """A pool whose loop is gone can still be terminated: connections are aborted, no error."""
    connector = FakeConnector()
    pool = Pool(connector, min_size=2, max_size=2)

    async def use() -> None:
        await pool.open()
        await pool.acquire()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(use())
    loop.close()
    pool.terminate()
    assert all(c.aborted for c in connector.opened)


async def test_async_with_opens_and_closes() -> None:
    """``async with pool`` opens (warming min_size) and closes on exit."""
    connector = FakeConnector()
    async with Pool(connector, min_size=2, max_size=3) as pool:
        assert pool.stats().idle == 2
    assert pool.closed
    assert connector.live == []


async def test_resize_grows_for_waiters_and_shrinks_idle() -> None:
    """resize() raises max_size for waiters at once and closes surplus idle connections."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=1) as pool:
        held = await pool.acquire()
        waiter = asyncio.ensure_future(pool.acquire(timeout=5))
        await asyncio.sleep(0.01)
        pool.resize(max_size=2)
        second = await waiter
        assert second is not held
        await pool.release(held)
        await pool.release(second)
        assert pool.stats().idle == 2
        pool.resize(min_size=0, max_size=1)
        await settle(pool)
        stats = pool.stats()
        assert stats.size == 1
        assert stats.max_size == 1
        assert stats.closed["resized"] == 1
        assert_pool_consistent(pool)


async def test_resize_shrink_closes_lent_connections_at_release() -> None:
    """Shrinking below the number lent closes the surplus as it comes back."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=0, max_size=3) as pool:
        conns = [await pool.acquire() for _ in range(3)]
        pool.resize(max_size=1)
        for conn in conns:
            await pool.release(conn)
        await settle(pool)
        assert pool.stats().size == 1
        assert sum(c.closed for c in conns) == 2


async def test_resize_rejects_invalid_sizes() -> None:
    """resize() validates like the config: min_size above max_size is refused by name."""
    async with Pool(FakeConnector(), min_size=1, max_size=2) as pool:
        with pytest.raises(ValueError, match="min_size=5"):
            pool.resize(min_size=5)
        assert pool.config.min_size == 1


async def test_drain_replaces_every_connection() -> None:
    """drain() closes idle connections now, lent ones at release, and refills min_size."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=2, max_size=3) as pool:
        lent = await pool.acquire()
        old_idle = [r.conn for r in pool._idle]
        await pool.drain()
        await settle(pool)
        assert all(c.closed for c in old_idle)
        assert lent.alive
        await pool.release(lent)
        await settle(pool)
        assert lent.closed
        assert pool.stats().closed["drained"] == 1 + len(old_idle)
        assert all(c.alive for c in (r.conn for r in pool._idle))
        assert pool.stats().idle >= 2


async def test_repr_is_a_one_line_state_dump() -> None:
    """repr(pool) shows name, state and every count on one line."""
    connector = FakeConnector()
    async with Pool(connector, min_size=2, max_size=5, name="orders") as pool, pool.acquire():
        text = repr(pool)
    assert text == (
        "<Pool 'orders' open [size=2 idle=1 in_use=1 connecting=0 resetting=0 waiting=0 max=5]>"
    )
    assert "\n" not in text


async def test_stats_snapshot_counts_and_distributions() -> None:
    """stats() counts acquires, creations and closes and summarises wait/use/create times."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=2, name="s") as pool:
        for _ in range(5):
            async with pool.acquire():
                await asyncio.sleep(0.002)
        stats = pool.stats()
        assert stats.acquires == 5
        assert stats.created == 1
        assert stats.use_time.count == 5
        assert stats.use_time.p50 >= 0.002
        assert stats.use_time.max >= stats.use_time.p99 >= stats.use_time.p50
        assert stats.wait_time.count == 5
        assert stats.create_time.count == 1
        assert stats.sizing_hint >= 1
        assert stats.arrival_rate > 0
        assert stats.utilization == 0
        json.dumps(stats.as_dict())
    final = pool.stats()
    assert final.closed == {"pool_closed": 1}
    assert final.closed_total == 1


async def test_events_reach_callback_and_logger(caplog: pytest.LogCaptureFixture) -> None:
    """Each event goes to on_event and to the 'poolkit' logger at DEBUG, without secrets."""
    events: list[PoolEvent] = []
    connector = FakeConnector(target="fake://app@db")
    with caplog.at_level(logging.DEBUG, logger="poolkit"):
        async with Pool(
            connector, min_size=1, max_size=1, on_event=events.append, name="ev"
        ) as pool:
            async with pool.acquire():
                pass
            await settle(pool)
    names = [e.name for e in events]
    for expected in ("pool.open", "connect", "acquire", "release", "pool.close", "close"):
        assert expected in names
    assert "pool 'ev': acquire" in caplog.text
    assert all(e.pool == "ev" for e in events)


async def test_close_during_open_stops_the_open() -> None:
    """close() while open() waits for connections ends the open() with PoolClosed, promptly."""
    connector = FakeConnector(connect="slow", delay=0.2)
    pool = Pool(connector, min_size=2, max_size=2, connect_timeout=5)
    await pool.open(wait=False)
    opening = asyncio.ensure_future(pool.open(timeout=5))
    await asyncio.sleep(0.02)
    await pool.close()
    with pytest.raises(PoolClosed):
        await asyncio.wait_for(opening, 2)
    assert connector.live == []


def test_unclosed_pool_warns_and_is_terminated_when_collected() -> None:
    """An unclosed pool that is garbage-collected warns (ResourceWarning) and aborts its
    connections instead of leaking them."""
    import gc

    connector = FakeConnector()

    async def leak() -> None:
        pool = Pool(connector, min_size=2, max_size=2)
        await pool.open()

    loop = asyncio.new_event_loop()
    try:
        with pytest.warns(ResourceWarning, match="unclosed pool"):
            loop.run_until_complete(leak())  # the pool dies with the coroutine's frame
            gc.collect()
        assert len(connector.opened) == 2
        assert all(c.aborted for c in connector.opened)
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
