"""Reset and check deadlines: one shared timer bounds every reset, one every check
(``_deadlines.py``), and the pool tells its own timeout from anyone else's cancellation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from core.util import settle
from poolkit import Pool, PoolEvent
from poolkit._deadlines import TaskDeadlines
from poolkit.testing import FakeConnector, assert_pool_consistent


async def test_tasks_past_their_deadline_are_cancelled_and_marked() -> None:
    """A watched task that outlives its deadline is cancelled with ``expired`` set; the others
    finish untouched; finished watches leave the queue."""
    loop = asyncio.get_running_loop()
    deadlines = TaskDeadlines()
    outcomes: dict[str, str] = {}

    async def work(name: str, seconds: float, timeout: float) -> None:
        watch = deadlines.watch(loop, timeout)
        try:
            await asyncio.sleep(seconds)
            outcomes[name] = "done"
        except asyncio.CancelledError:
            outcomes[name] = "expired" if watch.expired else "cancelled"
        finally:
            deadlines.finish(watch)

    started = time.monotonic()
    await asyncio.gather(
        work("quick", 0.01, 0.2),
        work("hangs", 10, 0.2),
        work("also quick", 0.02, 0.2),
        work("shorter timeout, hangs", 10, 0.05),  # its own timer
    )
    elapsed = time.monotonic() - started
    assert outcomes == {
        "quick": "done",
        "hangs": "expired",
        "also quick": "done",
        "shorter timeout, hangs": "expired",
    }
    assert 0.19 <= elapsed < 1.0
    assert len(deadlines) == 0
    deadlines.cancel_timer()


async def test_someone_elses_cancellation_is_not_an_expiry() -> None:
    """Cancelling a watched task before its deadline leaves ``expired`` false."""
    loop = asyncio.get_running_loop()
    deadlines = TaskDeadlines()
    seen: list[bool] = []

    async def work() -> None:
        watch = deadlines.watch(loop, 30)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append(watch.expired)
            raise
        finally:
            deadlines.finish(watch)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [False]
    deadlines.cancel_timer()


async def test_hanging_resets_of_several_connections_are_all_cut_off() -> None:
    """Three connections whose resets hang are each closed after reset_timeout, reported as
    reset failures with a TimeoutError, and replaced."""
    events: list[PoolEvent] = []
    connector = FakeConnector(reset="never")
    async with Pool(
        connector, min_size=0, max_size=3, reset_timeout=0.1, on_event=events.append
    ) as pool:
        conns = [await pool.acquire() for _ in range(3)]
        started = time.monotonic()
        for conn in conns:
            await pool.release(conn)
        assert pool.stats().resetting == 3
        await settle(pool)
        assert time.monotonic() - started < 1.0
        stats = pool.stats()
        assert stats.reset_failures == 3
        assert stats.closed["reset_failed"] == 3
        failures = [e for e in events if e.name == "reset.failed"]
        assert len(failures) == 3
        assert all(isinstance(e.error, TimeoutError) for e in failures)
        assert all(not c.alive for c in conns)
        connector.set("reset", "ok")
        async with pool.acquire(timeout=2) as fresh:
            assert fresh not in conns
        assert_pool_consistent(pool)


async def test_terminate_during_a_hanging_reset_aborts_without_a_reset_failure() -> None:
    """terminate() cancels the reset task: the connection is aborted, not counted as a failed
    reset, and nothing stays scheduled."""
    connector = FakeConnector(reset="never")
    pool: Pool[Any] = Pool(connector, min_size=0, max_size=1, reset_timeout=30)
    await pool.open()
    conn = await pool.acquire()
    await pool.release(conn)
    await asyncio.sleep(0.01)
    assert pool.stats().resetting == 1
    pool.terminate()
    await asyncio.sleep(0.01)
    assert conn.aborted or conn.closed
    assert pool.stats().reset_failures == 0
    assert len(pool._reset_deadlines) == 0
    assert not pool._reset_deadlines.timer_armed


async def test_hanging_check_is_cut_off_at_check_timeout() -> None:
    """A check before use that never returns is cut off at check_timeout (a TimeoutError check
    failure, the connection closed); the acquire goes on with a fresh connection."""
    events: list[PoolEvent] = []
    connector = FakeConnector(check="never", needs_reset=False)
    async with Pool(
        connector,
        min_size=1,
        max_size=2,
        check_on_acquire="always",
        check_timeout=0.1,
        on_event=events.append,
    ) as pool:
        first = connector.opened[0]
        started = time.monotonic()
        acquiring = asyncio.create_task(pool.acquire(timeout=5).__aenter__())
        await asyncio.sleep(0.05)
        connector.set("check", "ok")  # the fresh connection's check passes
        conn = await acquiring
        assert time.monotonic() - started < 2.0
        assert conn is not first
        assert not first.alive
        failures = [e for e in events if e.name == "check.failed"]
        assert len(failures) == 1
        assert isinstance(failures[0].error, TimeoutError)
        assert pool.stats().check_failures == 1
        await pool.release(conn)
        await settle(pool)
        assert_pool_consistent(pool)
        assert len(pool._check_deadlines) == 0
