"""PoolGroup: named pools opened and closed together, with background health sampling."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from poolkit import Pool, PoolClosed, PoolConfig, PoolTimeout, PoolUsageError
from poolkit._multiconfig import PoolSettings
from poolkit.integrations import PoolGroup
from poolkit.integrations._common import backend_name, snapshot
from poolkit.testing import FakeConnection, FakeConnector


def fake_pool(name: str, **config: object) -> Pool[FakeConnection]:
    """A pool of fake connections."""
    return Pool(FakeConnector(), name=name, min_size=0, max_size=2, **config)  # type: ignore[arg-type]


async def test_factories_run_at_open_and_pools_are_remade_after_close() -> None:
    """Factory entries (sync or async) are called at each open(); given pools are kept."""
    calls: list[str] = []

    def sync_factory() -> Pool[FakeConnection]:
        calls.append("sync")
        return fake_pool("a")

    async def async_factory() -> Pool[FakeConnection]:
        calls.append("async")
        return fake_pool("b")

    group = PoolGroup({"a": sync_factory, "b": async_factory}, sample_interval=None)
    assert group.names() == ["a", "b"] and len(group) == 2 and "a" in group
    with pytest.raises(PoolUsageError, match="'a' is created when the group opens"):
        group["a"]
    async with group:
        first = group["a"]
        assert calls == ["sync", "async"]
        assert [name for name, _ in group.items()] == ["a", "b"]
        assert set(group.stats()) == {"a", "b"}
    assert first.closed
    assert "closed" in repr(group)
    await group.close()  # idempotent
    async with group:  # fresh pools at each open (e.g. two TestClients on one app)
        assert group["a"] is not first
    assert calls == ["sync", "async", "sync", "async"]


async def test_a_given_pool_object_opens_once() -> None:
    """A pool object (not a factory) is kept: once closed, opening the group again fails."""
    given = fake_pool("c")
    group = PoolGroup({"c": given}, sample_interval=None)
    assert group["c"] is given
    async with group:
        pass
    assert given.closed
    with pytest.raises(PoolClosed):
        await group.open()
    assert not group.is_open


def test_names_are_checked() -> None:
    """Unknown, duplicate and empty names raise clear errors."""
    group = PoolGroup({"a": fake_pool("a")})
    with pytest.raises(KeyError, match="no pool named 'zz' \\(configured: 'a'\\)"):
        group["zz"]
    with pytest.raises(ValueError, match="already in this group"):
        group.add("a", fake_pool("a2"))
    with pytest.raises(ValueError, match="non-empty"):
        group.add("", fake_pool("x"))
    with pytest.raises(ValueError, match="sample_interval"):
        PoolGroup(sample_interval=0)


async def test_bad_factory_result_is_a_type_error_and_nothing_leaks() -> None:
    """A factory returning something that is not a pool fails open() and closes the rest."""
    good = fake_pool("good")
    group = PoolGroup({"good": good, "bad": lambda: "not a pool"}, sample_interval=None)
    with pytest.raises(TypeError, match="returned 'not a pool', not a pool"):
        await group.open()
    assert good.closed and not group.is_open
    with pytest.raises(PoolUsageError, match="cannot add pool"):
        async with PoolGroup({"x": fake_pool("x")}, sample_interval=None) as opened:
            opened.add("y", fake_pool("y"))


async def test_settings_entries_build_pools_through_their_backend(mysql_dsn: str) -> None:
    """A PoolSettings entry is turned into a pool by its backend's create_pool() at open."""
    from poolkit._multiconfig import pools_from_mapping

    settings = pools_from_mapping({"mysql": {"dsn": mysql_dsn, "max_size": 2}})
    assert isinstance(settings["mysql"], PoolSettings)
    async with PoolGroup(settings, sample_interval=None) as group:
        pool = group["mysql"]
        assert backend_name(pool) == "mysql"
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute("SELECT 1")
        assert snapshot(pool).acquires == 1
        assert group.health()["mysql"].status == "ok"
    assert pool.closed


async def test_background_sampler_feeds_the_monitors_and_stops_at_close() -> None:
    """With sample_interval, monitors fill in the background; close() stops the task."""
    group = PoolGroup({"a": lambda: fake_pool("a")}, sample_interval=0.001)
    async with group:
        monitor = group.monitor("a")
        while len(monitor.samples) < 3:
            await asyncio.sleep(0.001)
        sampler = group._sampler
        assert sampler is not None and not sampler.done()
    assert sampler.done()
    assert group.status()["pools"] == {}


def test_snapshot_rejects_unknown_stats_shapes() -> None:
    """snapshot() names the type when stats() returns something unusable."""

    class Odd:
        def stats(self) -> int:
            return 3

    with pytest.raises(TypeError, match="Odd.stats\\(\\) returned int, not PoolStats"):
        snapshot(Odd())
    assert PoolConfig().max_size == 10


def test_importing_the_package_loads_no_framework() -> None:
    """``import poolkit.integrations`` (and poolkit) imports no framework or metrics library."""
    code = (
        "import sys, poolkit, poolkit.integrations\n"
        "heavy = ('fastapi', 'starlette', 'aiohttp', 'prometheus_client', 'opentelemetry')\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in heavy]\n"
        "assert not loaded, loaded\n"
        "assert poolkit.integrations.PoolGroup.__name__ == 'PoolGroup'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("poolkit.integrations.fastapi", "fastapi", "fastapi"),
        ("poolkit.fastapi", "fastapi", "fastapi"),
        ("poolkit.integrations.aiohttp", "aiohttp", "aiohttp"),
        ("poolkit.integrations.prometheus", "prometheus_client", "prometheus"),
        ("poolkit.integrations.otel", "opentelemetry", "otel"),
    ],
)
def test_missing_extra_names_the_pip_install(module: str, blocked: str, extra: str) -> None:
    """Without its library, an integration fails at import naming the extra to install."""
    code = (
        f"import sys\nsys.modules[{blocked!r}] = None\n"
        f"try:\n    import {module}\nexcept ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert f"requires `pip install poolkit[{extra}]`" in result.stdout


async def test_health_window_starts_when_the_group_opens() -> None:
    """Timeouts right after startup are reported even when the next sample comes after them."""
    group = PoolGroup({"a": lambda: fake_pool("a", acquire_timeout=0.001)}, sample_interval=None)
    async with group:
        pool = group["a"]
        assert len(group.monitor("a").samples) == 1  # taken at open
        async with pool.acquire(), pool.acquire():
            with pytest.raises(PoolTimeout):
                await pool.acquire()
        group.monitor("a").sample()  # a later sample, already counting the timeout
        report = group.health()["a"]
    assert report.status == "critical"
    assert report.timeouts == 1
