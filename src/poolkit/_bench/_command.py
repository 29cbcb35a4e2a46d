"""``poolkit bench``: run the measurements, size the pool, print the report.

The order of a run:

1. Validate the URL and import the backend (a bad URL or a missing extra: exit code 2).
2. With no URL, start the embedded HTTP server on ``127.0.0.1:0``.
3. Probe: open a one-connection pool and run one request; read the server's connection limit
   for databases. Failure here means the server is unreachable or refused us: exit code 3.
4. Connect cost, then at each concurrency level connect-per-request and pooled throughput.
5. Sizing from the measured service time (``--rps``), and the limit check (``--workers``).

Errors become one line on stderr (redacted), never a traceback, unless ``--traceback``.
"""

from __future__ import annotations

import asyncio
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TextIO

from .. import AuthenticationError, ConfigError, ConnectError, PoolError
from ._errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNEXPECTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    BenchError,
)
from ._measure import (
    ConnectResult,
    ModeResult,
    describe_error,
    measure_connect,
    measure_per_request,
    measure_pooled,
)
from ._progress import Progress
from ._report import BenchReport, LevelResult, render_json, render_json_error, render_text
from ._server import EmbeddedServer
from ._sizing import DEFAULT_HEADROOM, check_server_limit, recommend
from ._targets import Adapter, BenchPool, embedded_adapter, load_adapter
from ._url import BadURL, Target, parse_target, scrub

__all__ = ("BenchOptions", "run_bench")

_POOL_NAME = "poolkit-bench"


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """The options of one ``poolkit bench`` run (see ``poolkit bench --help``).

    Attributes:
        url: the server to benchmark; ``None`` starts the embedded HTTP server.
        concurrency: the concurrency levels (tasks issuing requests at once).
        duration: time bound of each measurement, seconds.
        requests: request bound of each measurement (``None``: time only).
        max_size: ``max_size`` of the pool in the pooled measurements.
        rps: target requests per second of the whole service, for sizing advice.
        workers: worker processes, each with its own pool.
        headroom: factor above the Little's-law average.
        timeout: bound on each connect and each request, seconds.
        connect_samples: connections opened to measure the connect cost.
        loop: ``"asyncio"`` or ``"uvloop"``.
        json: print JSON on stdout instead of the table.
        progress: draw a progress bar on stderr when it is a terminal.
        traceback: let unexpected errors propagate with their traceback.
    """

    url: str | None = None
    concurrency: tuple[int, ...] = (1, 8, 64)
    duration: float = 1.0
    requests: int | None = None
    max_size: int = 10
    rps: float | None = None
    workers: int = 1
    headroom: float = DEFAULT_HEADROOM
    timeout: float = 5.0
    connect_samples: int = 100
    loop: str = "asyncio"
    json: bool = False
    progress: bool = True
    traceback: bool = False


def run_bench(options: BenchOptions, *, stdout: TextIO, stderr: TextIO) -> int:
    """Run ``poolkit bench`` and return its exit code (see :mod:`poolkit._bench._errors`)."""
    secrets: tuple[str, ...] = ()
    try:
        target = parse_target(options.url) if options.url is not None else None
        if target is not None:
            secrets = target.secrets
        adapter = load_adapter(target) if target is not None else None
        loop_factory = _loop_factory(options.loop)
        progress = Progress(
            stderr,
            total=2 + 2 * len(options.concurrency),
            enabled=options.progress and not options.json and _isatty(stderr),
        )
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            report = runner.run(_bench(options, target, adapter, progress))
    except BadURL as exc:
        return _fail(options, stdout, stderr, str(exc), EXIT_USAGE)
    except BenchError as exc:
        return _fail(options, stdout, stderr, scrub(str(exc), secrets), exc.exit_code)
    except KeyboardInterrupt:
        return _fail(options, stdout, stderr, "interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        if options.traceback:
            raise
        message = (
            f"unexpected error: {type(exc).__name__}: {scrub(describe_error(exc), secrets)} "
            "(run with --traceback for details)"
        )
        return _fail(options, stdout, stderr, message, EXIT_UNEXPECTED)
    rendered = render_json(report) if options.json else render_text(report)
    # Defence in depth: the report holds only redacted text, but a driver's message in a
    # warning could echo a secret. Very short secrets are left to the structured redaction, as
    # scrubbing them would garble numbers.
    stdout.write(scrub(rendered, tuple(s for s in secrets if len(s) >= 4)))
    stdout.flush()
    return EXIT_OK


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _fail(options: BenchOptions, stdout: TextIO, stderr: TextIO, message: str, code: int) -> int:
    line = " ".join(message.split())
    stderr.write(f"poolkit bench: error: {line}\n")
    stderr.flush()
    if options.json:
        stdout.write(render_json_error(line, code))
        stdout.flush()
    return code


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "asyncio":
        return None
    if name == "uvloop":
        try:
            import uvloop  # optional: imported only when asked for
        except ImportError:
            raise BenchError(
                "--loop uvloop needs uvloop: pip install 'poolkit[uvloop]'", EXIT_USAGE
            ) from None
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    raise BenchError(f"--loop {name!r}: expected 'asyncio' or 'uvloop'", EXIT_USAGE)


async def _bench(
    options: BenchOptions, target: Target | None, adapter: Adapter | None, progress: Progress
) -> BenchReport:
    server: EmbeddedServer | None = None
    try:
        if adapter is None:
            server = EmbeddedServer()
            await server.start()
            adapter = embedded_adapter("127.0.0.1", server.port)
            display = server.url
        elif target is not None:
            display = target.display
        else:  # pragma: no cover - run_bench never passes an adapter without its target
            raise BenchError("an adapter needs a target", EXIT_UNEXPECTED)
        progress.start()
        return await _measure_all(options, target, adapter, display, progress)
    finally:
        await progress.stop()
        if server is not None:
            await server.close()


async def _probe(
    options: BenchOptions, adapter: Adapter, display: str
) -> tuple[BenchPool, int | None, str | None]:
    """Open a one-connection pool, run one request and read the server's limit.

    Returns the (closed) probe pool, whose connector the per-request measurements use, the
    server's ``max_connections`` (databases) and a warning if that could not be read.
    """
    try:
        pool = adapter.make_pool(
            min_size=1,
            max_size=1,
            acquire_timeout=options.timeout,
            connect_timeout=options.timeout,
            name=f"{_POOL_NAME}-probe",
        )
    except ConfigError as exc:
        raise BenchError(f"invalid configuration for {display}: {exc}", EXIT_USAGE) from exc
    limit: int | None = None
    limit_warning: str | None = None
    try:
        async with asyncio.timeout(options.timeout * 2):
            await pool.open(wait=True, timeout=options.timeout)
            async with pool.acquire() as conn:
                await adapter.operation(conn)
                if adapter.server_limit is not None:
                    try:
                        limit = await adapter.server_limit(conn)
                    except Exception as exc:
                        limit_warning = (
                            f"could not read the server's connection limit: {describe_error(exc)}"
                        )
    except AuthenticationError as exc:
        raise BenchError(f"authentication failed: {describe_error(exc)}", EXIT_UNREACHABLE) from exc
    except ConnectError as exc:  # its message names the (redacted) target already
        raise BenchError(describe_error(exc), EXIT_UNREACHABLE) from exc
    except Exception as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else describe_error(exc)
        raise BenchError(f"cannot reach {display}: {reason}", EXIT_UNREACHABLE) from exc
    finally:
        await pool.close()
    return pool, limit, limit_warning


async def _measure_all(
    options: BenchOptions,
    target: Target | None,
    adapter: Adapter,
    display: str,
    progress: Progress,
) -> BenchReport:
    secrets = target.secrets if target is not None else ()
    warnings: list[str] = []
    progress.step("connecting", options.timeout)
    probe, max_connections, limit_warning = await _probe(options, adapter, display)
    if limit_warning:
        warnings.append(limit_warning)
    connector = probe.connector

    progress.step("connect cost", options.duration)
    connect = await measure_connect(
        connector,
        samples=options.connect_samples,
        duration=options.duration,
        timeout=options.timeout,
    )
    if connect.samples == 0:
        raise BenchError(
            f"cannot reach {display}: every connect failed: {connect.first_error}",
            EXIT_UNREACHABLE,
        )
    _warn_errors(warnings, "connect cost", connect)

    levels: list[LevelResult] = []
    for concurrency in options.concurrency:
        progress.step(f"connect-per-request, {_tasks(concurrency)}", options.duration)
        per_request = await measure_per_request(
            connector,
            adapter.operation,
            concurrency=concurrency,
            duration=options.duration,
            requests=options.requests,
            timeout=options.timeout,
        )
        progress.step(f"pooled, {_tasks(concurrency)}", options.duration)
        pool = adapter.make_pool(
            min_size=1,
            max_size=options.max_size,
            acquire_timeout=options.timeout,
            connect_timeout=options.timeout,
            name=_POOL_NAME,
        )
        try:
            try:
                await pool.open(wait=True, timeout=options.timeout)
            except (PoolError, OSError) as exc:
                raise BenchError(
                    f"{display} became unreachable during the run: {describe_error(exc)}",
                    EXIT_UNREACHABLE,
                ) from exc
            pooled = await measure_pooled(
                pool,
                adapter.operation,
                concurrency=concurrency,
                duration=options.duration,
                requests=options.requests,
                timeout=options.timeout,
            )
        finally:
            await pool.close()
        _warn_errors(warnings, f"connect-per-request, {_tasks(concurrency)}", per_request)
        _warn_errors(warnings, f"pooled, {_tasks(concurrency)}", pooled)
        levels.append(LevelResult(concurrency, per_request, pooled))
        if max_connections is not None and concurrency > max_connections:
            warnings.append(
                f"{concurrency} tasks connecting per request exceed the server's "
                f"max_connections ({max_connections})"
            )

    service_time = _service_time(levels)
    hold_time = _hold_time(levels, service_time)
    sizing = (
        recommend(options.rps, hold_time, workers=options.workers, headroom=options.headroom)
        if options.rps is not None
        else None
    )
    limit_check = None
    if max_connections is not None:
        size = sizing.max_size if sizing is not None else options.max_size
        limit_check = check_server_limit(max_connections, workers=options.workers, max_size=size)
        message = limit_check.warning()
        if message:
            warnings.append(message)

    return BenchReport(
        target=display,
        target_label=adapter.label,
        operation=adapter.operation_label,
        embedded=target is None,
        loop=options.loop,
        python=platform.python_version(),
        poolkit_version=_poolkit_version(),
        max_size=options.max_size,
        duration=options.duration,
        requests=options.requests,
        connect=connect,
        levels=tuple(levels),
        service_time=service_time,
        hold_time=hold_time,
        sizing=sizing,
        workers=options.workers,
        max_connections=max_connections,
        limit_check=limit_check,
        warnings=tuple(scrub(w, secrets) for w in warnings),
    )


def _hold_time(levels: list[LevelResult], service_time: float) -> float:
    """How long one request keeps a connection from the others, pool overhead included.

    With one task and a pool, the single connection alternates between serving the task and
    the pool's own work on it (the reset after release, which runs before the connection can
    be lent again), so the time per request at 1 task is exactly that occupancy. Without a
    concurrency-1 measurement, fall back to the service time.
    """
    for level in levels:
        if level.concurrency == 1 and level.pooled.rps > 0:
            return max(service_time, 1.0 / level.pooled.rps)
    return service_time


def _tasks(n: int) -> str:
    return f"{n} task" if n == 1 else f"{n} tasks"


def _service_time(levels: list[LevelResult]) -> float:
    """Mean hold time at the lowest concurrency (no queueing), pooled if it ran, else per-request."""
    for level in sorted(levels, key=lambda lv: lv.concurrency):
        for mode in (level.pooled, level.per_request):
            if mode.requests and mode.service_time > 0:
                return mode.service_time
    return 0.0


def _warn_errors(warnings: list[str], what: str, result: ModeResult | ConnectResult) -> None:
    total = (result.requests if isinstance(result, ModeResult) else result.samples) + result.errors
    if result.errors:
        warnings.append(
            f"{what}: {result.errors} of {total} attempts failed; first error: {result.first_error}"
        )
    elif result.first_error:
        warnings.append(f"{what}: a warm-up request failed: {result.first_error}")


def _poolkit_version() -> str:
    try:
        return metadata.version("poolkit")
    except metadata.PackageNotFoundError:
        return "unknown"
