"""The contract every backend's pool keeps, as a reusable test suite.

A backend's test module subclasses :class:`BackendContract` (or the optional extensions its
backend can support, which include it) in a class named ``Test...``, defines the ``make_pool``
fixture and a few hooks, and inherits the tests::

    from backends.contract import KillContract, ResetContract, ServerCountContract, pool_factory

    class TestPostgresContract(
        ResetContract[Conn], KillContract[Conn], ServerCountContract[Conn]
    ):
        @pytest.fixture
        async def make_pool(self, pg_dsn: str) -> AsyncIterator[PoolFactory]:
            self.dsn = pg_dsn                      # hooks read what the fixture stores on self
            async with pool_factory(lambda **cfg: create_pool(pg_dsn, **cfg)) as make:
                yield make

        async def connection_identity(self, conn): return conn.get_server_pid()
        async def roundtrip(self, conn): assert await conn.fetchval("SELECT 1") == 1

pytest makes a new instance of the class for every test, so a fixture may keep per-test state
on ``self`` for the hooks. Optional capabilities are subclasses rather than skips, so that a
backend runs exactly the tests that apply to it:

* :class:`ResetContract`: ``dirty(conn)`` / ``is_clean(conn)`` (session state does not leak).
* :class:`KillContract`: ``kill(conn)`` breaks a connection from outside (server side).
* :class:`ServerCountContract`: ``server_connection_count()`` counts this test's connections as
  the server sees them.

``make_pool(**config)`` must return a pool that is *not opened yet*, built with the given
:class:`~poolkit.PoolConfig` fields; the fixture closes whatever it made at teardown
(:func:`pool_factory` does that).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic

import pytest

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:  # a dependency of pytest-asyncio before 3.13
    from typing_extensions import TypeVar

from fix_servers import FdTracker
from poolkit import Pool, PoolClosed, PoolTimeout

__all__ = [
    "BackendContract",
    "KillContract",
    "PoolFactory",
    "ResetContract",
    "ServerCountContract",
    "pool_factory",
    "wait_until",
]

#: The connection type (``Any`` when a subclass leaves it out).
C = TypeVar("C", default=Any)

#: ``make_pool(**config) -> Pool`` (not opened).
PoolFactory = Callable[..., Pool[Any]]

#: Settings that keep the contract tests deterministic: no background checks or reaping.
QUIET: dict[str, Any] = {
    "health_check_interval": None,
    "max_idle_time": None,
    "reconnect_initial_delay": 0.02,
    "reconnect_max_delay": 0.2,
}


@contextlib.asynccontextmanager
async def pool_factory(build: PoolFactory) -> AsyncIterator[PoolFactory]:
    """Wrap ``build(**config)`` so that every pool it makes is closed (bounded) at the end.

    Args:
        build: makes a pool, not opened, from :class:`~poolkit.PoolConfig` fields.

    Yields:
        A factory applying :data:`QUIET` defaults under the caller's settings.
    """
    pools: list[Pool[Any]] = []

    def make(**config: Any) -> Pool[Any]:
        pool = build(**{**QUIET, **config})
        pools.append(pool)
        return pool

    try:
        yield make
    finally:
        async with asyncio.timeout(15):
            for pool in pools:
                await pool.close(timeout=5)


async def wait_until(predicate: Callable[[], Awaitable[bool]], *, timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it is true; fail with an AssertionError after ``timeout`` s.

    For state that settles asynchronously (a server noticing a closed socket). A bound, not a
    timed assertion: the usual wait is a few milliseconds.
    """
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(0.02)


class _ContractCore(Generic[C]):
    """Acquire/release, reuse, stats, timeouts, discard and close: what every backend keeps.

    The subclass defines the ``make_pool`` fixture (yielding a :data:`PoolFactory`) and the
    hooks below.
    """

    async def connection_identity(self, conn: C) -> object:
        """Override: a value naming the *physical* connection (server pid, socket port...)."""
        raise NotImplementedError

    async def roundtrip(self, conn: C) -> None:
        """Override: one cheap request on ``conn`` that fails unless the connection works."""
        raise NotImplementedError

    async def test_acquire_runs_a_request_and_release_returns_the_connection(
        self, make_pool: PoolFactory
    ) -> None:
        """A borrowed connection works; after release it is idle again and counted once."""
        pool = make_pool(min_size=1, max_size=2)
        async with pool:
            async with pool.acquire(timeout=10) as conn:
                await self.roundtrip(conn)
                assert pool.stats().in_use == 1
            stats = pool.stats()
            assert (stats.in_use, stats.acquires) == (0, 1)
            assert stats.idle + stats.resetting == stats.size == 1

    async def test_awaited_acquire_and_explicit_release_work_like_the_context(
        self, make_pool: PoolFactory
    ) -> None:
        """``conn = await pool.acquire()`` then ``await pool.release(conn)`` is the same cycle."""
        pool = make_pool(min_size=0, max_size=1)
        async with pool:
            conn = await pool.acquire(timeout=10)
            try:
                await self.roundtrip(conn)
            finally:
                await pool.release(conn)
            assert pool.stats().in_use == 0

    async def test_a_released_connection_is_reused(self, make_pool: PoolFactory) -> None:
        """The same physical connection serves consecutive borrowers; nothing new is opened."""
        pool = make_pool(min_size=1, max_size=1)
        async with pool:
            identities = []
            for _ in range(3):
                async with pool.acquire(timeout=10) as conn:
                    await self.roundtrip(conn)
                    identities.append(await self.connection_identity(conn))
            assert len(set(identities)) == 1
            assert pool.stats().created == 1

    async def test_stats_count_acquires_connections_and_hold_times(
        self, make_pool: PoolFactory
    ) -> None:
        """Concurrent borrowers are counted; size never exceeds max_size; times are recorded."""
        pool = make_pool(min_size=0, max_size=3)
        async with pool:

            async def borrow() -> None:
                async with pool.acquire(timeout=10) as conn:
                    await self.roundtrip(conn)
                    stats = pool.stats()
                    assert stats.size <= 3
                    assert stats.size == (
                        stats.idle + stats.in_use + stats.connecting + stats.resetting
                        + stats.checking
                    )  # fmt: skip

            await asyncio.gather(*(borrow() for _ in range(8)))
            stats = pool.stats()
            assert stats.acquires == 8
            assert 1 <= stats.created <= 3
            assert stats.use_time.count == 8
            assert stats.wait_time.count == 8
            assert stats.in_use == 0
            assert stats.as_dict()["acquires"] == 8

    async def test_acquire_timeout_raises_pool_timeout_naming_max_size(
        self, make_pool: PoolFactory
    ) -> None:
        """With every connection in use, acquire ends in PoolTimeout that says why."""
        pool = make_pool(min_size=1, max_size=1)
        async with pool, pool.acquire(timeout=10):
            with pytest.raises(PoolTimeout) as info:
                await pool.acquire(timeout=0.05)
            assert info.value.phase == "wait"
            assert "max_size=1" in str(info.value)
            assert pool.stats().timeouts == 1

    async def test_a_discarded_connection_is_closed_and_replaced(
        self, make_pool: PoolFactory
    ) -> None:
        """release(conn, discard=True) closes it; the next borrower gets a new connection."""
        pool = make_pool(min_size=0, max_size=1)
        async with pool:
            conn = await pool.acquire(timeout=10)
            first = await self.connection_identity(conn)
            await pool.release(conn, discard=True)
            async with pool.acquire(timeout=10) as conn:
                await self.roundtrip(conn)
                assert await self.connection_identity(conn) != first
            assert pool.stats().closed.get("discarded") == 1

    async def test_close_fails_later_acquires_and_leaves_no_file_descriptor(
        self, make_pool: PoolFactory
    ) -> None:
        """After close(), acquire raises PoolClosed and every socket the pool opened is gone."""
        tracker = FdTracker()
        pool = make_pool(min_size=2, max_size=3)
        await pool.open()
        async with pool.acquire(timeout=10) as conn:
            await self.roundtrip(conn)
        assert pool.stats().size >= 2
        await pool.close()
        assert pool.closed
        with pytest.raises(PoolClosed):
            await pool.acquire(timeout=1)
        await tracker.check()

    async def test_repr_shows_the_pool_state_and_target(self, make_pool: PoolFactory) -> None:
        """repr(pool) is a one-line state dump naming the (redacted) target."""
        pool = make_pool(min_size=1, max_size=2)
        async with pool:
            text = repr(pool)
            assert "\n" not in text
            assert "max=2" in text
            assert pool.target in text or pool.name in text


class BackendContract(_ContractCore[C]):
    """The core contract alone (the extensions below include it as well).

    Listing it next to extensions works too: ``class TestX(BackendContract[Conn],
    KillContract[Conn])``.
    """


class ResetContract(_ContractCore[C]):
    """Session state one borrower leaves does not reach the next one."""

    async def dirty(self, conn: C) -> None:
        """Override: change the connection's session state."""
        raise NotImplementedError

    async def is_clean(self, conn: C) -> bool:
        """Override: whether the session state is as after connect (no change from ``dirty``)."""
        raise NotImplementedError

    async def test_reset_clears_what_the_previous_borrower_left(
        self, make_pool: PoolFactory
    ) -> None:
        """With one connection, borrower B finds none of borrower A's session changes."""
        pool = make_pool(min_size=1, max_size=1)
        async with pool:
            async with pool.acquire(timeout=10) as conn:
                assert await self.is_clean(conn)
                await self.dirty(conn)
                assert not await self.is_clean(conn)
            async with pool.acquire(timeout=10) as conn:
                assert await self.is_clean(conn)
            stats = pool.stats()
            assert stats.created == 1
            assert stats.reset_failures == 0


class KillContract(_ContractCore[C]):
    """A connection broken from outside is never handed out again, and the pool heals."""

    async def kill(self, conn: C) -> None:
        """Override: break ``conn`` from outside (server side), as an outage would."""
        raise NotImplementedError

    async def test_a_connection_killed_while_idle_is_not_handed_out(
        self, make_pool: PoolFactory
    ) -> None:
        """check_on_acquire (or the backend's free liveness test) replaces a dead connection."""
        pool = make_pool(min_size=1, max_size=1, check_on_acquire="always")
        async with pool:
            async with pool.acquire(timeout=10) as conn:
                victim = await self.connection_identity(conn)
                await self.kill(conn)
            async with pool.acquire(timeout=10) as conn:
                await self.roundtrip(conn)
                assert await self.connection_identity(conn) != victim
            stats = pool.stats()
            assert sum(stats.closed.values()) >= 1
            assert stats.created == 2

    async def test_a_connection_killed_in_use_fails_only_its_borrower(
        self, make_pool: PoolFactory
    ) -> None:
        """The borrower of a killed connection gets an error; the pool then serves others."""
        pool = make_pool(min_size=1, max_size=1, check_on_acquire="never")
        async with pool:
            with pytest.raises(Exception) as info:  # the driver's own error type
                async with pool.acquire(timeout=10) as conn:
                    victim = await self.connection_identity(conn)
                    await self.kill(conn)
                    await self.roundtrip(conn)
            assert not isinstance(info.value, AssertionError)
            async with pool.acquire(timeout=10) as conn:
                await self.roundtrip(conn)
                assert await self.connection_identity(conn) != victim


class ServerCountContract(_ContractCore[C]):
    """The server sees exactly the connections the pool holds, and none after close()."""

    async def server_connection_count(self) -> int:
        """Override: how many connections of *this test's* pools the server has open."""
        raise NotImplementedError

    async def test_close_leaves_no_connection_on_the_server(self, make_pool: PoolFactory) -> None:
        """min_size connections appear server-side on open and all disappear on close."""
        pool = make_pool(min_size=3, max_size=4)
        await pool.open()
        try:

            async def three_open() -> bool:
                return await self.server_connection_count() == 3

            await wait_until(three_open)
        finally:
            await pool.close()

        async def none_open() -> bool:
            return await self.server_connection_count() == 0

        await wait_until(none_open)
