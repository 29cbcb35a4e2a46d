"""Benchmark CPU placement (``benchmarks/_common.py``): the client on one half of the CPUs, the
servers of *its own* connections on the other, and everything put back afterwards."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest

_COMMON = Path(__file__).resolve().parent.parent / "benchmarks" / "_common.py"

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="placement needs Linux and two CPUs or more",
)


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_common_under_test", _COMMON)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _may_move(pid: int) -> bool:
    try:
        os.sched_setaffinity(pid, os.sched_getaffinity(pid))
    except PermissionError:
        return False
    return True


async def test_only_our_own_backends_move_and_the_client_is_put_back(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POOLKIT_BENCH_NO_PIN", raising=False)
    common = _load()
    before = os.sched_getaffinity(0)
    ours = await asyncpg.connect(pg_dsn)
    try:
        with common.client_pinned() as server_cpus:
            assert server_cpus is not None
            assert os.sched_getaffinity(0) | server_cpus == before
            assert not os.sched_getaffinity(0) & server_cpus
            moved = common.pin_postgres_backends()
            backend = ours.get_server_pid()
            if _may_move(backend):
                assert moved == 1
                assert os.sched_getaffinity(backend) == server_cpus
            else:
                assert moved == 0
            # A backend of a connection this process does not own is left alone.
            assert common.pin_postgres_backends() == moved
        assert os.sched_getaffinity(0) == before
        assert common.placement() is not None
        assert common.pin_postgres_backends() == 0  # outside client_pinned: nothing moves
    finally:
        await ours.close()


def test_no_pin_variable_turns_placement_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLKIT_BENCH_NO_PIN", "1")
    common = _load()
    before = os.sched_getaffinity(0)
    with common.client_pinned() as server_cpus:
        assert server_cpus is None
        assert os.sched_getaffinity(0) == before
        assert common.pin_process(os.getpid()) is False
    assert common.placement() is None
