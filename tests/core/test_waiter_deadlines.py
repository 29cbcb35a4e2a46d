"""Waiter deadlines: one shared timer for waiters queued in deadline order, exact timeouts for
every mix of per-call timeouts, nothing left scheduled (see ``_waiters.py``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from poolkit import Pool, PoolTimeout
from poolkit.testing import FakeConnector, assert_pool_consistent


class _TimerCount:
    """Records the waiter timers the pool asks the running event loop for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        loop = asyncio.get_running_loop()
        self.handles: list[asyncio.TimerHandle] = []
        real_call_at = loop.call_at

        def call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            handle = real_call_at(when, callback, *args, **kwargs)
            if getattr(callback, "__module__", "") in ("poolkit._waiters", "poolkit._deadlines"):
                self.handles.append(handle)
            return handle

        monkeypatch.setattr(loop, "call_at", call_at)

    @property
    def scheduled(self) -> int:
        return len(self.handles)

    @property
    def cancelled(self) -> int:
        return sum(handle.cancelled() for handle in self.handles)


async def _waiting(pool: Pool[Any], count: int) -> None:
    """Wait until ``count`` tasks are queued on ``pool``."""
    async with asyncio.timeout(5):
        while pool.stats().waiting != count:
            await asyncio.sleep(0.001)


async def _timed_acquire(pool: Pool[Any], timeout: float) -> float:
    start = time.monotonic()
    with pytest.raises(PoolTimeout):
        await pool.acquire(timeout=timeout)
    return time.monotonic() - start


async def test_many_waiters_with_one_timeout_share_one_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """200 waiters with the default timeout schedule one timer, not 200."""
    async with Pool(FakeConnector(needs_reset=False), min_size=1, max_size=1) as pool:
        counter = _TimerCount(monkeypatch)
        holder = await pool.acquire()
        served: list[int] = []

        async def waiter(index: int) -> None:
            async with pool.acquire():
                served.append(index)

        tasks = [asyncio.create_task(waiter(i)) for i in range(200)]
        await _waiting(pool, 200)
        await pool.release(holder)
        await asyncio.gather(*tasks)
        assert served == list(range(200))
        assert counter.scheduled == 1
        assert_pool_consistent(pool)


async def test_mixed_timeouts_each_expire_on_time() -> None:
    """Shorter timeouts queued behind longer ones still expire at their own deadlines."""
    async with Pool(FakeConnector(), min_size=1, max_size=1) as pool, pool.acquire():
        elapsed = await asyncio.gather(
            _timed_acquire(pool, 0.6),
            _timed_acquire(pool, 0.15),
            _timed_acquire(pool, 0.35),
            _timed_acquire(pool, 0.15),
        )
        for got, want in zip(elapsed, (0.6, 0.15, 0.35, 0.15), strict=True):
            assert want - 0.01 <= got < want + 0.3, (got, want)
        assert pool.stats().timeouts == 4
        assert pool.stats().waiting == 0
        assert_pool_consistent(pool)


async def test_short_timeout_after_a_served_long_one_is_not_delayed() -> None:
    """The shared timer, armed for a long deadline, re-arms for a shorter one queued later."""
    async with Pool(FakeConnector(needs_reset=False), min_size=1, max_size=1) as pool:
        holder = await pool.acquire()
        long_wait = asyncio.create_task(pool.acquire(timeout=30).__aenter__())
        await _waiting(pool, 1)
        await pool.release(holder)
        conn = await long_wait  # served: its 30 s deadline may still be what the timer is for
        elapsed = await _timed_acquire(pool, 0.1)
        assert 0.09 <= elapsed < 0.4
        await pool.release(conn)
        assert_pool_consistent(pool)


async def test_own_timers_are_cancelled_when_served_or_cancelled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A waiter with its own timer (shorter than one queued earlier) leaves nothing scheduled."""
    async with Pool(FakeConnector(needs_reset=False), min_size=1, max_size=1) as pool:
        holder = await pool.acquire()
        counter = _TimerCount(monkeypatch)
        first = asyncio.create_task(pool.acquire(timeout=30).__aenter__())
        served = asyncio.create_task(pool.acquire(timeout=20).__aenter__())
        cancelled = asyncio.create_task(pool.acquire(timeout=10).__aenter__())
        await _waiting(pool, 3)
        assert counter.scheduled == 3  # the shared one, then two of their own
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await pool.release(holder)
        await pool.release(await first)
        await pool.release(await served)
        assert counter.cancelled == 2
        assert pool.stats().waiting == 0
        assert_pool_consistent(pool)


async def test_close_cancels_the_shared_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing a pool with waiters fails them and leaves no timer scheduled."""
    pool = Pool(FakeConnector(needs_reset=False), min_size=1, max_size=1)
    await pool.open()
    holder = await pool.acquire()
    counter = _TimerCount(monkeypatch)
    waiter = asyncio.create_task(pool.acquire(timeout=30).__aenter__())
    await _waiting(pool, 1)
    closing = asyncio.create_task(pool.close())
    await _waiting(pool, 0)
    await asyncio.sleep(0)
    assert waiter.done()
    await pool.release(holder)
    await closing
    await asyncio.gather(waiter, return_exceptions=True)
    assert counter.scheduled == 1
    assert counter.cancelled == 1


def test_deadlines_under_uvloop() -> None:
    """Under uvloop (millisecond timers): mixed acquire timeouts each expire on time, a hanging
    reset is cut off at reset_timeout, and the loop reports no error."""
    uvloop = pytest.importorskip("uvloop")
    from core.registry_support import LoopErrors, describe_errors, recording_loop_factory

    errors: LoopErrors = []

    async def scenario() -> None:
        connector = FakeConnector(reset="never")
        async with Pool(connector, min_size=1, max_size=1, reset_timeout=0.1) as pool:
            async with pool.acquire():
                elapsed = await asyncio.gather(_timed_acquire(pool, 0.3), _timed_acquire(pool, 0.1))
            for got, want in zip(elapsed, (0.3, 0.1), strict=True):
                assert want - 0.01 <= got < want + 0.3, (got, want)
            # The release above started a reset that never returns: cut off at 0.1 s.
            async with asyncio.timeout(5):
                while pool.stats().reset_failures == 0:
                    await asyncio.sleep(0.01)
            connector.set("reset", "ok")
            async with pool.acquire(timeout=2):
                pass
            assert_pool_consistent(pool)

    with asyncio.Runner(loop_factory=recording_loop_factory(uvloop.new_event_loop, errors)) as r:
        r.run(scenario())
    assert not errors, describe_errors(errors)
