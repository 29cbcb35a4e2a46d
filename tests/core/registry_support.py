"""Helpers shared by the registry tests (``test_registry*.py``).

* Loop factories that record what a loop reports to its exception handler (the suite's
  conftest does this for asyncio loops only; uvloop's loops are not ``BaseEventLoop``\\s).
* :func:`run_threads`: run one function per thread, all at once, and re-raise the first error.
* Postgres pools: :func:`pg_pool_factory` makes ``poolkit.postgres`` pools of real asyncpg
  connections tagged with an ``application_name``; :func:`server_connections` counts them on
  the server side.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from poolkit.postgres import PostgresPool, create_pool

#: Loop errors recorded by the loops :func:`recording_loop_factory` made.
LoopErrors = list[dict[str, Any]]


def recording_loop_factory(
    make: Callable[[], asyncio.AbstractEventLoop], errors: LoopErrors
) -> Callable[[], asyncio.AbstractEventLoop]:
    """Wrap a loop factory: each loop is in debug mode and records exception-handler calls."""

    def factory() -> asyncio.AbstractEventLoop:
        loop = make()
        loop.set_debug(True)

        def record(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            errors.append(context)
            loop.default_exception_handler(context)

        loop.set_exception_handler(record)
        return loop

    return factory


def describe_errors(errors: LoopErrors) -> str:
    """One line per recorded loop error."""
    return "; ".join(f"{e.get('message')} ({e.get('exception')!r})" for e in errors)


def run_threads(count: int, target: Callable[[int], None], timeout: float = 30.0) -> None:
    """Run ``target(i)`` in ``count`` threads at once; re-raise the first exception."""
    failures: list[BaseException] = []

    def main(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:
            failures.append(exc)

    threads = [
        threading.Thread(target=main, args=(i,), name=f"registry-test-{i}") for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads did not finish within {timeout} s: {alive}"
    if failures:
        raise failures[0]


# ---------------------------------------------------------------------------- Postgres


def unique_app_name(prefix: str = "poolkit-registry") -> str:
    """A fresh ``application_name`` to find this test's connections on the server."""
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def pg_pool_factory(dsn: str, app: str, **config: Any) -> Callable[[], PostgresPool]:
    """A registry factory making ``poolkit.postgres`` pools whose sessions carry ``app``."""

    def factory() -> PostgresPool:
        return create_pool(dsn, server_settings={"application_name": app}, **config)

    return factory


async def server_connections(dsn: str, app: str) -> int:
    """How many server sessions carry ``app`` (counted from a separate connection)."""
    conn = await asyncpg.connect(dsn)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
            "AND pid <> pg_backend_pid()",
            app,
        )
    finally:
        await conn.close()
    return int(count)


async def wait_server_connections(dsn: str, app: str, expected: int, limit: float = 5.0) -> None:
    """Wait until the server has exactly ``expected`` sessions for ``app`` (backends exit
    shortly after their socket closes)."""
    deadline = time.monotonic() + limit
    while True:
        count = await server_connections(dsn, app)
        if count == expected:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"server has {count} sessions for {app}, expected {expected}")
        await asyncio.sleep(0.05)


def wait_server_connections_sync(dsn: str, app: str, expected: int, limit: float = 5.0) -> None:
    """:func:`wait_server_connections` from code with no running loop (its own short loop)."""
    asyncio.run(wait_server_connections(dsn, app, expected, limit))
