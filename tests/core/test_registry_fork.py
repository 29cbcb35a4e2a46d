"""Registry across ``os.fork()``: a child gets fresh pools and never touches the parent's
connections.

Each test forks a real child process while the parent's loop (an ``asyncio.Runner``, stopped
between runs, as in a pre-fork server) holds idle connections. The child works through the same
registry and key, reports through a pipe and leaves with ``os._exit``; the parent then checks its
own connections still work. The child records every warning, unraisable exception and loop error
and reports them: it must produce none.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from core.registry_support import (
    LoopErrors,
    describe_errors,
    pg_pool_factory,
    recording_loop_factory,
    server_connections,
    unique_app_name,
    wait_server_connections,
    wait_server_connections_sync,
)
from core.util import settle
from poolkit import Pool, PoolUsageError, Registry
from poolkit.testing import FakeConnection, FakeConnector

pytestmark = [
    pytest.mark.fork,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork() is POSIX-only"),
]

Report = dict[str, Any]


def loop_maker(kind: str, errors: LoopErrors) -> Callable[[], asyncio.AbstractEventLoop]:
    """A recording loop factory of the given kind ("asyncio" or "uvloop")."""
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return recording_loop_factory(uvloop.new_event_loop, errors)
    return recording_loop_factory(asyncio.new_event_loop, errors)


def in_child(work: Callable[[], Report]) -> Report:
    """Fork; run ``work()`` in the child, which reports through a pipe and ``os._exit``\\s.

    The child's report gets ``warnings`` (every warning raised, recorded instead of raised),
    ``unraisable`` (exceptions in destructors) and ``error`` (if ``work`` raised).
    """
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns when forking a process that has threads (other tests' executors):
        # this test forks on purpose, with no lock held by those threads.
        warnings.filterwarnings("ignore", message=".*fork", category=DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child process
        code = 1
        payload = b'{"error": "the child failed before reporting"}'
        try:
            os.close(read_end)
            signal.alarm(30)  # never hang the parent's test
            unraisable: list[str] = []
            sys.unraisablehook = lambda u: unraisable.append(
                f"{u.exc_type.__name__}: {u.exc_value}"
            )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    outcome = work()
                except BaseException as exc:
                    outcome = {"error": f"{exc!r}\n{traceback.format_exc()}"}
                gc.collect()
            outcome["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
            outcome["unraisable"] = unraisable
            payload = json.dumps(outcome).encode()
            code = 0
        finally:
            try:
                with os.fdopen(write_end, "wb") as out:
                    out.write(payload)
            finally:
                os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as source:
        data = source.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    report: Report = json.loads(data)
    assert "error" not in report, report["error"]
    assert report["warnings"] == [], report["warnings"]
    assert report["unraisable"] == [], report["unraisable"]
    return report


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_forked_child_gets_fresh_pools_and_leaves_the_parents_connections_alone(
    kind: str,
) -> None:
    """The parent holds idle connections; the child, through the same registry and key, gets a
    new pool with new connections, cannot use the parent's pool, and closes none of the
    parent's connections; the parent's pool keeps working after the child exits."""
    errors: LoopErrors = []
    make_loop = loop_maker(kind, errors)
    reg = Registry("fork")
    connector = FakeConnector()

    def factory() -> Pool[FakeConnection]:
        return Pool(connector, min_size=2, max_size=4)

    async def warm() -> Pool[FakeConnection]:
        pool = await reg.get("db", factory)
        await settle(pool)  # the registry opened it: wait for min_size
        return pool

    with asyncio.Runner(loop_factory=make_loop) as runner:
        parent_pool = runner.run(warm())
        parent_conns = list(connector.opened)
        assert len(parent_conns) == 2 and parent_pool.stats().idle == 2

        def child() -> Report:
            async def main() -> Report:
                try:
                    async with parent_pool.acquire(timeout=1):
                        pass
                    usage = ""
                except PoolUsageError as exc:
                    usage = str(exc)
                pool = await reg.get("db", factory)
                async with pool.acquire() as a, pool.acquire() as b:
                    got = [a.id, b.id]
                return {"usage": usage, "same_pool": pool is parent_pool, "got": got}

            child_errors: LoopErrors = []
            with asyncio.Runner(loop_factory=loop_maker(kind, child_errors)) as child_runner:
                report = child_runner.run(main())
            gc.collect()
            report["loop_errors"] = describe_errors(child_errors)
            report["parent_conns_touched"] = [
                c.id for c in parent_conns if c.closed or c.aborted or c.resets or c.checks
            ]
            return report

        report = in_child(child)
        assert "os.fork()" in report["usage"], report["usage"]
        assert report["same_pool"] is False
        assert not set(report["got"]) & {c.id for c in parent_conns}
        assert report["parent_conns_touched"] == []
        assert report["loop_errors"] == ""

        async def parent_again() -> list[FakeConnection]:
            pool = await reg.get("db", factory)
            assert pool is parent_pool
            async with pool.acquire() as a, pool.acquire() as b:
                return [a, b]

        again = runner.run(parent_again())
        assert {c.id for c in again} == {c.id for c in parent_conns}
        assert all(c.alive for c in parent_conns)
        assert connector.opened == parent_conns  # the parent opened nothing new
    assert parent_pool.closed
    assert connector.live == []
    assert not errors, describe_errors(errors)


def test_child_running_the_parents_loop_again_still_gets_a_fresh_pool() -> None:
    """A child that keeps using the loop object it inherited (a pre-fork server running the
    master's loop in each worker) is not given the parent's pool for that loop: the registry
    notices the fork and makes a new pool."""
    reg = Registry("fork-same-loop")
    connector = FakeConnector()

    def factory() -> Pool[FakeConnection]:
        return Pool(connector, min_size=1, max_size=4)

    async def warm() -> Pool[FakeConnection]:
        pool = await reg.get("db", factory)
        await settle(pool)  # the registry opened it: wait for min_size
        return pool

    with asyncio.Runner(debug=True) as runner:
        parent_pool = runner.run(warm())
        parent_ids = {c.id for c in connector.opened}

        def child() -> Report:
            async def main() -> Report:
                pool = await reg.get("db", factory)
                async with pool.acquire(timeout=5) as conn:
                    got = conn.id
                return {
                    "same_pool": pool is parent_pool,
                    "same_loop": pool.loop is parent_pool.loop,
                    "got": got,
                }

            return runner.run(main())  # the loop inherited from the parent

        report = in_child(child)
        assert report["same_loop"] is True
        assert report["same_pool"] is False
        assert report["got"] not in parent_ids
        assert runner.run(reg.get("db", factory)) is parent_pool
    assert parent_pool.closed
    assert connector.live == []


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_forked_child_opens_its_own_postgres_sessions_and_parent_keeps_working(
    kind: str, pg_dsn: str
) -> None:
    """Real connections: the child's pool opens new server sessions (never the parent's); after
    the child exits, the parent's idle sessions are alive and answer queries."""
    errors: LoopErrors = []
    make_loop = loop_maker(kind, errors)
    reg = Registry("pg-fork")
    app = unique_app_name()
    factory = pg_pool_factory(pg_dsn, app, min_size=2, max_size=4)

    async def backend_pids() -> set[int]:
        pool = await reg.get("db", factory)
        await settle(pool)  # the registry opened it: wait for min_size
        async with pool.acquire(timeout=10) as a, pool.acquire(timeout=10) as b:
            return {
                await a.fetchval("SELECT pg_backend_pid()"),
                await b.fetchval("SELECT pg_backend_pid()"),
            }

    with asyncio.Runner(loop_factory=make_loop) as runner:
        parent_pids = runner.run(backend_pids())
        assert len(parent_pids) == 2

        def child() -> Report:
            child_errors: LoopErrors = []

            async def main() -> Report:
                pids = await backend_pids()
                return {"pids": sorted(pids), "sessions": await server_connections(pg_dsn, app)}

            with asyncio.Runner(loop_factory=loop_maker(kind, child_errors)) as child_runner:
                report = child_runner.run(main())
            report["loop_errors"] = describe_errors(child_errors)
            return report

        report = in_child(child)
        assert len(report["pids"]) == 2
        assert not set(report["pids"]) & parent_pids, "the child reused a parent session"
        assert report["sessions"] == 4  # the parent's two were alive alongside the child's
        assert report["loop_errors"] == ""

        async def parent_again() -> set[int]:
            pids = await asyncio.wait_for(backend_pids(), 10)
            # The child's sessions are gone, the parent's two are not.
            await wait_server_connections(pg_dsn, app, 2)
            return pids

        assert runner.run(parent_again()) == parent_pids  # the same sessions, still working
    assert not errors, describe_errors(errors)
    wait_server_connections_sync(pg_dsn, app, 0)
