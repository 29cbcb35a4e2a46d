"""The measurements of ``poolkit bench``: connect cost, per-request vs pooled throughput.

Every measurement is bounded twice: by time (``duration``) and optionally by a request count
(``requests``), whichever comes first. Each request is bounded by ``timeout``. A failing request
is counted (with its first error kept for the report) rather than stopping the run: a server
that refuses the 64th simultaneous connection is itself a finding.

Both modes do the same work per request and pay the same bookkeeping (one ``asyncio.timeout``
and three clock reads), so the ratio between them is the cost of connecting and closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .. import Connector

if TYPE_CHECKING:
    from ._targets import BenchPool

__all__ = (
    "ConnectResult",
    "ModeResult",
    "measure_connect",
    "measure_per_request",
    "measure_pooled",
    "percentile",
)

C = TypeVar("C")

Operation = Callable[[C], Awaitable[None]]


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``sorted_values`` by the nearest-rank method.

    Returns 0.0 for an empty list.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.0
    """
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(len(sorted_values) * q / 100.0))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """The cost of opening one connection (connect only; closing is not timed).

    Attributes:
        samples: connections opened.
        errors: attempts that failed.
        mean: mean connect time, seconds.
        p50: median connect time, seconds.
        p99: 99th percentile, seconds.
        max: slowest connect, seconds.
        first_error: the first failure's one-line description, if any.
    """

    samples: int
    errors: int
    mean: float
    p50: float
    p99: float
    max: float
    first_error: str | None = None


@dataclass(frozen=True, slots=True)
class ModeResult:
    """One mode (``"per_request"`` or ``"pooled"``) at one concurrency level.

    Attributes:
        mode: ``"per_request"`` (connect, request, close) or ``"pooled"`` (acquire from a pool).
        concurrency: tasks issuing requests at once.
        requests: requests completed successfully.
        errors: requests that failed.
        seconds: wall time of the measurement.
        rps: successful requests per second.
        latency_p50: median request latency (including connect or acquire), seconds.
        latency_p99: 99th percentile of that latency, seconds.
        wait_p50: pooled only: median time to acquire a connection, seconds.
        wait_p99: pooled only: 99th percentile of the acquire wait, seconds.
        wait_max: pooled only: the longest acquire wait, seconds.
        service_time: mean time a request held its connection (the operation alone), seconds.
        first_error: the first failure's one-line description, if any.
    """

    mode: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    latency_p50: float
    latency_p99: float
    wait_p50: float | None
    wait_p99: float | None
    wait_max: float | None
    service_time: float
    first_error: str | None = None


class _Budget:
    """Hands out request slots until the deadline or the request budget is reached."""

    def __init__(self, duration: float, requests: int | None) -> None:
        self._deadline = time.perf_counter() + duration
        self._remaining = requests

    def take(self) -> bool:
        if time.perf_counter() >= self._deadline:
            return False
        if self._remaining is not None:
            if self._remaining <= 0:
                return False
            self._remaining -= 1
        return True


@dataclass(slots=True)
class _Recorder:
    """Samples shared by the worker tasks of one measurement."""

    latencies: list[float]
    waits: list[float]
    services: list[float]
    errors: int = 0
    first_error: str | None = None

    def fail(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = describe_error(exc)


def describe_error(exc: BaseException) -> str:
    """One line naming ``exc`` and its innermost cause (callers scrub secrets from it)."""
    text = str(exc).strip() or type(exc).__name__
    root: BaseException | None = exc.__cause__ or exc.__context__
    seen = {id(exc)}
    while root is not None and id(root) not in seen:
        seen.add(id(root))
        nxt = root.__cause__ or root.__context__
        if nxt is None:
            break
        root = nxt
    if isinstance(exc, TimeoutError) and not str(exc).strip():
        text = "timed out"
    if root is not None:
        root_text = str(root).strip() or type(root).__name__
        # Drivers often repeat their message in a tuple-shaped str(): skip what is already said.
        said = [a for a in root.args if isinstance(a, str) and a.strip()] or [root_text]
        if not any(part in text for part in said):
            text = f"{text} ({root_text})"
    return " ".join(text.split())


async def _close_quietly(connector: Connector[Any], conn: Any, timeout: float) -> None:
    """Close ``conn`` within ``timeout``; abort it if that fails or is cancelled.

    A cancellation (the request's own timeout, Ctrl-C) still aborts the connection, then
    propagates: the socket is never left open.
    """
    try:
        async with asyncio.timeout(timeout):
            await connector.close(conn)
    except BaseException as exc:
        abort = getattr(connector, "abort", None)
        if callable(abort):
            with contextlib.suppress(Exception):
                abort(conn)
        if not isinstance(exc, Exception):
            raise


async def measure_connect(
    connector: Connector[C],
    *,
    samples: int,
    duration: float,
    timeout: float,
) -> ConnectResult:
    """Open and close connections one after the other, timing each connect.

    Stops after ``samples`` connections or ``duration`` seconds, whichever comes first (at
    least one attempt is always made).
    """
    times: list[float] = []
    errors = 0
    first_error: str | None = None
    deadline = time.perf_counter() + duration
    attempts = 0
    while attempts < samples and (attempts == 0 or time.perf_counter() < deadline):
        attempts += 1
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                conn = await connector.connect()
        except Exception as exc:
            errors += 1
            if first_error is None:
                first_error = describe_error(exc)
            continue
        times.append(time.perf_counter() - start)
        await _close_quietly(connector, conn, timeout)
    times.sort()
    return ConnectResult(
        samples=len(times),
        errors=errors,
        mean=sum(times) / len(times) if times else 0.0,
        p50=percentile(times, 50),
        p99=percentile(times, 99),
        max=times[-1] if times else 0.0,
        first_error=first_error,
    )


async def measure_per_request(
    connector: Connector[C],
    operation: Operation[C],
    *,
    concurrency: int,
    duration: float,
    requests: int | None,
    timeout: float,
) -> ModeResult:
    """``concurrency`` tasks each open a connection, run one operation and close it, in a loop."""
    rec = _Recorder([], [], [])
    budget = _Budget(duration, requests)

    async def worker() -> None:
        while budget.take():
            start = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    conn = await connector.connect()
                    try:
                        held = time.perf_counter()
                        await operation(conn)
                        done = time.perf_counter()
                    finally:
                        await _close_quietly(connector, conn, timeout)
            except Exception as exc:
                rec.fail(exc)
                continue
            rec.latencies.append(time.perf_counter() - start)
            rec.services.append(done - held)

    return await _run_workers("per_request", concurrency, worker, rec)


async def measure_pooled(
    pool: BenchPool,
    operation: Operation[C],
    *,
    concurrency: int,
    duration: float,
    requests: int | None,
    timeout: float,
) -> ModeResult:
    """``concurrency`` tasks each acquire a connection from ``pool``, run one operation, release.

    The pool must be open. One untimed round of ``concurrency`` requests runs first so that the
    pool has grown to its working size before the clock starts.
    """
    rec = _Recorder([], [], [])

    async def one() -> None:
        async with asyncio.timeout(timeout), pool.acquire() as conn:
            await operation(conn)

    # Warm-up: grow the pool to the size this concurrency needs; errors surface below.
    warmup = await asyncio.gather(*(one() for _ in range(concurrency)), return_exceptions=True)
    for outcome in warmup:
        if isinstance(outcome, Exception):
            rec.fail(outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
    rec.errors = 0  # warm-up failures are reported (first_error) but not counted

    budget = _Budget(duration, requests)

    async def worker() -> None:
        while budget.take():
            start = time.perf_counter()
            try:
                async with asyncio.timeout(timeout), pool.acquire() as conn:
                    held = time.perf_counter()
                    await operation(conn)
                    done = time.perf_counter()
            except Exception as exc:
                rec.fail(exc)
                continue
            rec.latencies.append(done - start)
            rec.waits.append(held - start)
            rec.services.append(done - held)

    return await _run_workers("pooled", concurrency, worker, rec)


async def _run_workers(
    mode: str, concurrency: int, worker: Callable[[], Coroutine[Any, Any, None]], rec: _Recorder
) -> ModeResult:
    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    seconds = time.perf_counter() - start
    latencies = sorted(rec.latencies)
    waits = sorted(rec.waits)
    pooled = mode == "pooled"
    return ModeResult(
        mode=mode,
        concurrency=concurrency,
        requests=len(latencies),
        errors=rec.errors,
        seconds=seconds,
        rps=len(latencies) / seconds if seconds > 0 else 0.0,
        latency_p50=percentile(latencies, 50),
        latency_p99=percentile(latencies, 99),
        wait_p50=percentile(waits, 50) if pooled else None,
        wait_p99=percentile(waits, 99) if pooled else None,
        wait_max=(waits[-1] if waits else 0.0) if pooled else None,
        service_time=sum(rec.services) / len(rec.services) if rec.services else 0.0,
        first_error=rec.first_error,
    )
