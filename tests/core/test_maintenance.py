"""Background maintenance: reaping, lifetime, health checks, leaks, refill with backoff."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from core.util import FakeClock, settle
from poolkit import AuthenticationError, ConnectError, Pool, PoolTimeout
from poolkit.testing import FakeConnector, assert_pool_consistent

QUIET: dict[str, Any] = {
    "health_check_interval": None,
    "max_idle_time": None,
    "max_lifetime": None,
}


async def test_idle_connections_are_reaped_down_to_min_size() -> None:
    """Connections idle past max_idle_time are closed, but never below min_size."""
    clock = FakeClock()
    connector = FakeConnector(needs_reset=False)
    config: dict[str, Any] = QUIET | {"max_idle_time": 60.0}
    async with Pool(connector, min_size=2, max_size=5, clock=clock, **config) as pool:
        conns = [await pool.acquire() for _ in range(5)]
        for conn in conns:
            await pool.release(conn)
        assert pool.stats().idle == 5
        clock.advance(30)
        await pool.run_maintenance()
        assert pool.stats().idle == 5
        clock.advance(31)
        await pool.run_maintenance()
        await settle(pool)
        stats = pool.stats()
        assert stats.idle == 2
        assert stats.closed["idle"] == 3
        # the least recently used ones went first
        assert [c.closed for c in conns] == [True, True, True, False, False]


async def test_maintenance_refills_min_size_after_reaping_and_failures() -> None:
    """The pool keeps min_size connections: closed ones are replaced in the background."""
    connector = FakeConnector(needs_reset=False)
    async with Pool(connector, min_size=3, max_size=5, **QUIET) as pool:
        for conn in list(connector.live):
            connector.kill(conn)
        await pool.run_maintenance()
        await settle(pool)
        assert pool.stats().idle == 3
        assert len(connector.live) == 3


async def test_lifetime_has_jitter_within_bounds() -> None:
    """Each connection's expiry is max_lifetime minus up to lifetime_jitter of it."""
    clock = FakeClock()
    connector = FakeConnector()
    config: dict[str, Any] = QUIET | {"max_lifetime": 100.0, "lifetime_jitter": 0.2}
    async with Pool(connector, min_size=20, max_size=20, clock=clock, **config) as pool:
        expiries = [r.expires_at - r.created_at for r in pool._idle]
    assert all(80.0 <= e <= 100.0 for e in expiries)
    assert len({round(e, 6) for e in expiries}) > 10  # spread, not all equal


async def test_expired_idle_connection_retired_by_maintenance() -> None:
    """An idle connection past its lifetime is closed and replaced."""
    clock = FakeClock()
    connector = FakeConnector()
    config: dict[str, Any] = QUIET | {"max_lifetime": 100.0, "lifetime_jitter": 0.0}
    async with Pool(connector, min_size=1, max_size=1, clock=clock, **config) as pool:
        first = connector.opened[0]
        clock.advance(101)
        await pool.run_maintenance()
        await settle(pool)
        assert first.closed
        assert pool.stats().closed["lifetime"] == 1
        assert pool.stats().idle == 1


async def test_expired_connection_not_closed_while_in_use() -> None:
    """A connection past its lifetime is retired at release, never while lent."""
    clock = FakeClock()
    connector = FakeConnector(needs_reset=False)
    config: dict[str, Any] = QUIET | {"max_lifetime": 100.0, "lifetime_jitter": 0.0}
    async with Pool(connector, min_size=0, max_size=1, clock=clock, **config) as pool:
        conn = await pool.acquire()
        clock.advance(200)
        await pool.run_maintenance()
        assert conn.alive
        await pool.release(conn)
        await settle(pool)
        assert conn.closed
        assert pool.stats().closed["lifetime"] == 1


async def test_expired_idle_connection_not_handed_out() -> None:
    """acquire() skips an idle connection past its lifetime."""
    clock = FakeClock()
    connector = FakeConnector(needs_reset=False)
    config: dict[str, Any] = QUIET | {"max_lifetime": 10.0, "lifetime_jitter": 0.0}
    async with Pool(connector, min_size=1, max_size=1, clock=clock, **config) as pool:
        old = connector.opened[0]
        clock.advance(11)
        async with pool.acquire() as conn:
            assert conn is not old


async def test_background_health_check_replaces_dead_idle_connections() -> None:
    """Idle connections are checked every health_check_interval; failures are replaced."""
    clock = FakeClock()
    connector = FakeConnector()
    config: dict[str, Any] = QUIET | {"health_check_interval": 30.0}
    async with Pool(connector, min_size=2, max_size=2, clock=clock, **config) as pool:
        a, b = connector.opened
        clock.advance(10)
        await pool.run_maintenance()
        await settle(pool)
        assert a.checks == b.checks == 0
        clock.advance(25)
        connector.fail_next("check")
        await pool.run_maintenance()
        await settle(pool)
        assert a.checks + b.checks == 2
        stats = pool.stats()
        assert stats.check_failures == 1
        assert stats.closed["check_failed"] == 1
        assert stats.idle == 2
        assert_pool_consistent(pool)


async def test_health_check_does_not_reset_idle_age() -> None:
    """A checked connection still counts as idle since its last use (so it can be reaped)."""
    clock = FakeClock()
    connector = FakeConnector()
    config: dict[str, Any] = QUIET | {"health_check_interval": 10.0, "max_idle_time": 25.0}
    async with Pool(connector, min_size=0, max_size=1, clock=clock, **config) as pool:
        async with pool.acquire():
            pass
        await settle(pool)
        for _ in range(3):
            clock.advance(10)
            await pool.run_maintenance()
            await settle(pool)
        assert pool.stats().closed.get("idle") == 1


async def test_leak_is_reported_once_with_the_acquiring_stack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connection held past leak_threshold logs one warning showing where it was acquired."""
    clock = FakeClock()
    connector = FakeConnector()
    async with Pool(
        connector, min_size=1, max_size=1, clock=clock, leak_threshold=5.0, **QUIET
    ) as pool:
        with caplog.at_level(logging.WARNING, logger="poolkit"):
            conn = await pool.acquire()
            clock.advance(6)
            await pool.run_maintenance()
            await pool.run_maintenance()
        leaks = [r for r in caplog.records if "leak_threshold" in r.getMessage()]
        assert len(leaks) == 1
        message = leaks[0].getMessage()
        assert "test_leak_is_reported_once_with_the_acquiring_stack" in message
        assert "conn = await pool.acquire()" in message
        assert pool.stats().leaks == 1
        await pool.release(conn)


async def test_refill_after_outage_with_backoff_and_healing() -> None:
    """While the server is down waiters wait; when it is back the pool heals by itself."""
    connector = FakeConnector(connect="fail")
    pool = Pool(
        connector,
        min_size=2,
        max_size=4,
        reconnect_initial_delay=0.01,
        reconnect_max_delay=0.05,
        **QUIET,
    )
    await pool.open(wait=False)
    await asyncio.sleep(0.1)
    attempts_while_down = connector.calls["connect"]
    assert attempts_while_down >= 2
    # one probe retries: attempts grow slowly, not by min_size per round
    await asyncio.sleep(0.2)
    assert connector.calls["connect"] - attempts_while_down <= 12
    waiter = asyncio.ensure_future(pool.acquire(timeout=5))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    connector.set("connect", "ok")
    conn = await waiter
    await pool.release(conn)
    await settle(pool)
    stats = pool.stats()
    assert stats.idle >= 2
    assert stats.last_connect_error is None
    assert_pool_consistent(pool)
    await pool.close()
    assert connector.live == []


async def test_backoff_grows_exponentially_with_jitter() -> None:
    """Retry delays double per attempt, are capped, and are jittered in [d/2, d]."""
    pool = Pool(FakeConnector(), min_size=0, reconnect_initial_delay=0.1, reconnect_max_delay=1.0)
    for attempt, nominal in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)):
        delays = [pool._backoff(attempt) for _ in range(50)]
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert len(set(delays)) > 1


async def test_authentication_error_fails_waiters_at_once() -> None:
    """A non-transient connect error (bad credentials) reaches waiters without the timeout."""

    class AuthConnector(FakeConnector):
        async def connect(self):  # type: ignore[no-untyped-def]
            raise AuthenticationError("password authentication failed for user app")

    pool = Pool(AuthConnector(), min_size=0, max_size=2, reconnect_initial_delay=0.01)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(AuthenticationError, match="password authentication failed"):
        await pool.acquire(timeout=10)
    assert loop.time() - start < 2
    await pool.close()


async def test_connect_timeout_bounds_a_hanging_connect() -> None:
    """A connect that never returns is cut off by connect_timeout (phase 'connect')."""
    connector = FakeConnector(connect="never")
    pool = Pool(connector, min_size=0, max_size=1, connect_timeout=0.05)
    with pytest.raises(PoolTimeout) as info:
        await pool.acquire(timeout=0.3)
    cause = info.value.__cause__
    assert isinstance(cause, PoolTimeout)
    assert cause.phase == "connect"
    await pool.close()


async def test_wrapped_connect_error_names_target() -> None:
    """A raw driver error from connect() is wrapped in ConnectError naming the target."""
    connector = FakeConnector(connect="fail", target="fake://db.internal:5432/app")
    pool = Pool(connector, min_size=1, max_size=1)
    with pytest.raises(ConnectError, match="fake://db.internal:5432/app"):
        await pool.open()
    await pool.close()


async def test_bad_credentials_pause_background_refill_until_next_acquire() -> None:
    """After an AuthenticationError with nobody waiting, the pool stops retrying in the
    background (no account lock-out); the next acquire tries again and fails fast."""

    class AuthConnector(FakeConnector):
        async def connect(self):  # type: ignore[no-untyped-def]
            self.calls["connect"] += 1
            raise AuthenticationError("password authentication failed for user app")

    connector = AuthConnector()
    pool = Pool(
        connector,
        min_size=2,
        max_size=2,
        reconnect_initial_delay=0.01,
        reconnect_max_delay=0.01,
        **QUIET,
    )
    await pool.open(wait=False)
    await asyncio.sleep(0.05)
    attempts = connector.calls["connect"]
    await pool.run_maintenance()
    await asyncio.sleep(0.1)
    assert connector.calls["connect"] == attempts  # paused: no retry storm
    with pytest.raises(AuthenticationError):
        await pool.acquire(timeout=5)
    assert connector.calls["connect"] > attempts
    await pool.close()
