"""KeyedPool: a pool per key under a global cap."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from core.util import settle
from poolkit import KeyedPool, PoolTimeout, PoolUsageError
from poolkit.testing import FakeConnection, FakeConnector, assert_pool_consistent

Keyed = KeyedPool[str, FakeConnection]


def _factory(connectors: dict[str, FakeConnector]) -> Callable[[str], FakeConnector]:
    def make(key: str) -> FakeConnector:
        connectors[key] = FakeConnector(needs_reset=False, target=f"fake://{key}")
        return connectors[key]

    return make


async def test_each_key_gets_its_own_pool_and_connections() -> None:
    """Different keys never share a connection; the same key reuses its own."""
    connectors: dict[str, FakeConnector] = {}
    pools: Keyed = KeyedPool(_factory(connectors), min_size=0, max_size=2)
    async with pools:
        async with pools.acquire("a") as a1:
            pass
        async with pools.acquire("a") as a2:
            pass
        async with pools.acquire("b") as b1:
            pass
        assert a1 is a2
        assert b1 is not a1
        assert sorted(pools.keys()) == ["a", "b"]
        assert pools.pool("a").name.endswith("[a]")
    assert all(c.live == [] for c in connectors.values())


async def test_global_cap_evicts_idle_connection_of_another_key() -> None:
    """At max_total, a key needing a connection closes another key's idle one."""
    connectors: dict[str, FakeConnector] = {}
    pools: Keyed = KeyedPool(
        _factory(connectors),
        min_size=0,
        max_size=2,
        max_total=2,
    )
    async with pools:
        a = [await pools.acquire("a") for _ in range(2)]
        for conn in a:
            await pools.release(conn)
        async with pools.acquire("b", timeout=2) as b:
            assert isinstance(b, FakeConnection)
            total = pools.total_stats()
            assert total.size <= 2
            assert total.closed.get("evicted") == 1
        await settle(pools.pool("a"))
        assert_pool_consistent(pools.pool("a"))
        assert_pool_consistent(pools.pool("b"))


async def test_global_cap_makes_other_keys_wait_for_a_release() -> None:
    """With every slot lent, a new key waits; a release of another key frees a slot for it."""
    connectors: dict[str, FakeConnector] = {}
    pools: Keyed = KeyedPool(
        _factory(connectors),
        min_size=0,
        max_size=2,
        max_total=2,
    )
    async with pools:
        a = [await pools.acquire("a") for _ in range(2)]
        waiter = asyncio.ensure_future(pools.acquire("b", timeout=5))
        await asyncio.sleep(0.02)
        assert not waiter.done()
        assert pools.total_stats().size == 2
        await pools.release(a[0])
        b = await waiter
        assert pools.total_stats().size <= 2
        await pools.release(b)
        await pools.release(a[1])


async def test_global_cap_times_out_when_nothing_frees() -> None:
    """With every slot lent and nothing released, another key's acquire times out."""
    pools: Keyed = KeyedPool(_factory({}), min_size=0, max_size=1, max_total=1)
    async with pools, pools.acquire("a"):
        with pytest.raises(PoolTimeout):
            await pools.acquire("b", timeout=0.05)


async def test_release_of_unknown_connection_raises() -> None:
    """Releasing something no key's pool lent raises PoolUsageError."""
    pools: Keyed = KeyedPool(_factory({}), min_size=0)
    async with pools:
        with pytest.raises(PoolUsageError):
            await pools.release(FakeConnection())


async def test_total_stats_add_up() -> None:
    """total_stats() sums the keys' counts and merges their distributions."""
    pools: Keyed = KeyedPool(_factory({}), min_size=0, max_size=2)
    async with pools:
        for key in ("a", "b", "c"):
            async with pools.acquire(key):
                pass
        total = pools.total_stats()
        assert total.acquires == 3
        assert total.created == 3
        assert total.use_time.count == 3
        assert set(pools.stats()) == {"a", "b", "c"}
        assert "keys=3" in repr(pools)


def test_invalid_max_total_is_refused() -> None:
    """max_total must be a positive integer."""
    with pytest.raises(ValueError, match="max_total=0"):
        KeyedPool(_factory({}), max_total=0)
