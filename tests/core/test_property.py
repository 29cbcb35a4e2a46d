"""A property test: random acquire/release/cancel/timeout/fault sequences keep the invariants."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.util import settle
from poolkit import Pool, PoolClosed, PoolError
from poolkit.testing import FakeConnection, FakeConnector, Step, assert_pool_consistent

STEPS: tuple[Step, ...] = ("connect", "check", "reset", "close")

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.integers(0, 3)),
        st.tuples(st.just("release"), st.integers(0, 7)),
        st.tuples(st.just("release_dirty"), st.integers(0, 7)),
        st.tuples(st.just("cancel"), st.integers(0, 7)),
        st.tuples(st.just("short_acquire"), st.just(0)),
        st.tuples(
            st.sampled_from(["connect", "check", "reset", "close"]),
            st.sampled_from(["ok", "fail", "slow", "never"]),
        ),
        st.tuples(st.just("kill"), st.integers(0, 7)),
        st.tuples(st.just("maintain"), st.just(0)),
        st.tuples(st.just("resize"), st.integers(1, 4)),
        st.tuples(st.just("tick"), st.integers(0, 3)),
    ),
    max_size=40,
)


async def _scenario(ops: list[tuple[str, Any]]) -> None:
    connector = FakeConnector(delay=0.002, needs_reset=False)
    pool = Pool(
        connector,
        min_size=1,
        max_size=3,
        check_on_acquire=0.0,
        connect_timeout=0.05,
        check_timeout=0.05,
        reset_timeout=0.05,
        close_timeout=0.05,
        reconnect_initial_delay=0.002,
        reconnect_max_delay=0.01,
        health_check_interval=0.01,
        max_idle_time=0.05,
    )
    await pool.open(wait=False)
    held: list[FakeConnection] = []
    pending: list[asyncio.Future[FakeConnection]] = []

    async def harvest() -> None:
        for fut in list(pending):
            if fut.done():
                pending.remove(fut)
                if not fut.cancelled() and fut.exception() is None:
                    held.append(fut.result())

    for op, arg in ops:
        await harvest()
        if op == "acquire":
            pending.append(asyncio.ensure_future(pool.acquire(timeout=0.3)))
            for _ in range(arg):
                await asyncio.sleep(0)
        elif op == "short_acquire":
            pending.append(asyncio.ensure_future(pool.acquire(timeout=0.001)))
        elif op in ("release", "release_dirty") and held:
            conn = held.pop(arg % len(held))
            conn.dirty = op == "release_dirty"
            await pool.release(conn)
        elif op == "cancel" and pending:
            pending[arg % len(pending)].cancel()
        elif op in STEPS:
            connector.set(op, arg)
        elif op == "kill" and connector.opened:
            connector.kill(connector.opened[arg % len(connector.opened)])
        elif op == "maintain":
            await pool.run_maintenance()
        elif op == "resize":
            pool.resize(min_size=min(pool.config.min_size, arg), max_size=arg)
        elif op == "tick":
            await asyncio.sleep(0.001 * arg)
        assert_pool_consistent(pool)

    for step in STEPS:
        connector.set(step, "ok")
    results = await asyncio.gather(*pending, return_exceptions=True)
    for result in results:
        if isinstance(result, FakeConnection):
            held.append(result)
        else:
            assert isinstance(result, PoolError | asyncio.CancelledError), repr(result)
    for conn in held:
        await pool.release(conn)
    await settle(pool)
    assert_pool_consistent(pool)
    stats = pool.stats()
    assert stats.waiting == 0
    assert stats.in_use == 0
    await pool.close()
    assert connector.live == []
    try:
        await pool.acquire()
    except PoolClosed:
        pass


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=OPS)
def test_random_operation_sequences_keep_invariants(ops: list[tuple[str, Any]]) -> None:
    """Any sequence of pool operations and connector faults keeps the pool consistent."""
    asyncio.run(_scenario(ops), debug=True)
