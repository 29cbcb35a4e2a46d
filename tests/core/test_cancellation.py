"""The cancellation matrix: cancel at every point a task can be cancelled, under every fault.

After each case the pool must be consistent: ``size == idle + in_use + connecting + checking +
resetting <= max_size``, nobody waiting, no task left behind, no slot lost (the pool still
serves ``max_size`` borrowers), and after close no connection is left open.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest

from core.util import foreign_tasks, settle
from poolkit import CheckPolicy, Pool, PoolTimeout
from poolkit.testing import (
    Behavior,
    FakeConnection,
    FakeConnector,
    Step,
    assert_pool_consistent,
)

Phase = Literal["waiting", "handoff", "connecting", "checking", "inside_block", "resetting"]
PHASES: tuple[Phase, ...] = (
    "waiting",
    "handoff",
    "connecting",
    "checking",
    "inside_block",
    "resetting",
)
BEHAVIORS: tuple[Behavior, ...] = ("ok", "fail", "slow", "never")


async def _after(pool: Pool[FakeConnection], connector: FakeConnector) -> None:
    """Restore the connector, then prove no slot was lost and everything closes."""
    steps: tuple[Step, ...] = ("connect", "check", "reset", "close")
    for step in steps:
        connector.set(step, "ok")
    await settle(pool)
    assert_pool_consistent(pool)
    stats = pool.stats()
    assert stats.waiting == 0
    assert stats.in_use == 0
    # every slot is still usable: max_size concurrent borrowers get a connection
    conns = [await pool.acquire(timeout=2) for _ in range(pool.config.max_size)]
    assert len({id(c) for c in conns}) == pool.config.max_size
    for conn in conns:
        await pool.release(conn)
    await pool.close()
    assert connector.live == []
    assert foreign_tasks() == set()


@pytest.mark.parametrize("behavior", BEHAVIORS)
@pytest.mark.parametrize("phase", PHASES)
async def test_cancellation_leaves_pool_consistent(phase: Phase, behavior: Behavior) -> None:
    """Cancelling at {phase} while the connector is {behavior} loses nothing."""
    connector = FakeConnector(delay=0.02)
    check: CheckPolicy = "always" if phase == "checking" else "never"
    pool = Pool(
        connector,
        min_size=0,
        max_size=2,
        check_on_acquire=check,
        connect_timeout=0.2,
        check_timeout=0.2,
        reset_timeout=0.2,
        close_timeout=0.2,
        reconnect_initial_delay=0.01,
        reconnect_max_delay=0.02,
        health_check_interval=None,
    )
    await pool.open(wait=False)

    if phase == "waiting":
        held = [await pool.acquire() for _ in range(2)]
        connector.set("reset", behavior)
        connector.set("connect", behavior)
        task = asyncio.ensure_future(pool.acquire(timeout=5))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for conn in held:
            await pool.release(conn)

    elif phase == "handoff":
        held = [await pool.acquire() for _ in range(2)]
        connector.set("reset", behavior)
        task = asyncio.ensure_future(pool.acquire(timeout=5))
        await asyncio.sleep(0.01)
        await pool.release(held[0])  # may hand the connection over (after its reset) ...
        if behavior in ("ok", "fail"):
            await asyncio.sleep(0)  # ... and the reset task runs
            await asyncio.sleep(0)
        task.cancel()  # ... the waiter is cancelled at the instant of the handoff
        try:
            got = await task
        except (asyncio.CancelledError, PoolTimeout):
            pass
        else:
            await pool.release(got)
        await pool.release(held[1])

    elif phase == "connecting":
        connector.set("connect", behavior)
        task = asyncio.ensure_future(pool.acquire(timeout=5))
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            got = await task
        except asyncio.CancelledError:
            pass
        else:  # pragma: no cover - the connect completed before the cancellation
            await pool.release(got)

    elif phase == "checking":
        conn = await pool.acquire()
        await pool.release(conn)
        await settle(pool)
        connector.set("check", behavior)
        task = asyncio.ensure_future(pool.acquire(timeout=5))
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            got = await task
        except asyncio.CancelledError:
            pass
        else:
            await pool.release(got)

    elif phase == "inside_block":
        connector.set("reset", behavior)
        connector.set("close", behavior)

        async def borrower() -> None:
            async with pool.acquire() as conn:
                conn.dirty = True
                await asyncio.sleep(10)

        blocked = asyncio.ensure_future(borrower())
        await asyncio.sleep(0.01)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
        await settle(pool)
        # a dirty connection is never handed on: it was reset, or it was discarded
        assert all(not c.dirty for c in (r.conn for r in pool._idle))

    elif phase == "resetting":
        connector.set("reset", behavior)
        conns = [await pool.acquire() for _ in range(2)]
        for conn in conns:
            conn.dirty = True
            await pool.release(conn)
        task = asyncio.ensure_future(pool.acquire(timeout=5))
        await asyncio.sleep(0.005)
        task.cancel()
        try:
            got = await task
        except asyncio.CancelledError:
            pass
        else:
            assert not got.dirty
            await pool.release(got)

    await _after(pool, connector)


async def test_timeout_at_the_instant_of_handoff_loses_nothing() -> None:
    """A waiter whose timeout fires just as a connection is handed over gives it back."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=1, max_size=1) as pool:
        for delay in (0.0, 0.001, 0.002, 0.005):
            held = await pool.acquire()
            waiter = asyncio.ensure_future(pool.acquire(timeout=0.01))
            await asyncio.sleep(0.01 - delay)
            await pool.release(held)
            try:
                got = await waiter
            except PoolTimeout:
                pass
            else:
                await pool.release(got)
            await settle(pool)
            assert_pool_consistent(pool)
            assert pool.stats().idle == 1


async def test_wait_for_around_acquire_bounds_it() -> None:
    """asyncio.wait_for(pool.acquire(), t) cancels cleanly (psycopg #1401 does not apply)."""
    connector = FakeConnector(check="never")
    async with Pool(
        connector, min_size=1, max_size=1, check_on_acquire="always", check_timeout=0.2
    ) as pool:

        async def acquire() -> object:
            return await pool.acquire()

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(acquire(), 0.05)
        connector.set("check", "ok")
        await settle(pool)
        assert_pool_consistent(pool)
        async with pool.acquire(timeout=2):
            pass


async def test_caller_giving_up_during_check_keeps_a_healthy_connection() -> None:
    """A check outlived by its caller's deadline finishes in the background; a healthy
    connection goes back to the pool instead of being discarded."""
    connector = FakeConnector(check="slow", delay=0.1, needs_reset=False)
    async with Pool(
        connector, min_size=1, max_size=1, check_on_acquire="always", check_timeout=1
    ) as pool:
        first = connector.opened[0]
        with pytest.raises(PoolTimeout):
            await pool.acquire(timeout=0.02)
        await settle(pool)
        stats = pool.stats()
        assert stats.check_failures == 0
        assert stats.idle == 1
        assert first.alive
        connector.set("check", "ok")
        async with pool.acquire() as conn:
            assert conn is first
