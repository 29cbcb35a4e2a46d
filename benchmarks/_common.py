"""Shared vocabulary of the benchmark modules.

Each ``benchmarks/bench_<area>.py`` exposes ``async def run(opts: Options) -> list[Measurement]``.
The runner (``benchmarks/run.py``) calls every module in one process, under the loop asked for,
then prints medians and ratios and writes ``benchmarks/results/latest.{md,json}``.

A *group* is one scenario (e.g. "postgres: SELECT 1, one task"); every row in a group measures
the same work with a different contender, so the rows can be compared as ratios. The row marked
``reference=True`` is the one ratios are computed against (poolkit's own row, usually).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = (
    "Measurement",
    "MinimalFifo",
    "Options",
    "SQLAlchemyEngine",
    "client_pinned",
    "interleaved",
    "pin_mariadb_threads",
    "jain_index",
    "measure_rate",
    "overtaken_fraction",
    "pin_postgres_backends",
    "pin_process",
    "placement",
    "run_alone",
    "serve_forever",
    "server_process",
)


@dataclass(frozen=True, slots=True)
class Options:
    """What the runner passes to every benchmark module."""

    quick: bool = False
    repeat: int = 5
    pg_dsn: str = os.environ.get(
        "POOLKIT_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"
    )
    mysql_dsn: str = os.environ.get("POOLKIT_BENCH_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
    loop: str = "asyncio"


@dataclass(slots=True)
class Measurement:
    """One contender in one scenario: repeated samples of a rate or a duration."""

    group: str
    name: str
    unit: str
    samples: list[float]
    higher_is_better: bool = True
    reference: bool = False
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> float:
        """The median of the samples."""
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Half the distance between the smallest and the largest sample, relative to the median."""
        if len(self.samples) < 2 or self.median == 0:
            return 0.0
        return (max(self.samples) - min(self.samples)) / 2 / self.median


async def measure_rate(
    body: Callable[[int], Awaitable[None]],
    *,
    ops: int,
    repeat: int,
    warmup: int = 1,
    before_each: Callable[[], object] | None = None,
) -> list[float]:
    """Run ``body(ops)`` ``warmup + repeat`` times and return ``repeat`` rates in ops/s.

    ``before_each`` runs (untimed) before every run, e.g. to pin server processes of
    connections a pool opened during the previous run.
    """
    rates: list[float] = []
    for i in range(warmup + repeat):
        if before_each is not None:
            before_each()
        start = time.perf_counter()
        await body(ops)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            rates.append(ops / elapsed)
    return rates


async def interleaved(
    group: str,
    contenders: Sequence[tuple[Any, bool, int]],
    repeat: int,
    measure: Callable[[Any, int], Awaitable[tuple[float, dict[str, float]]]],
    unit: str,
) -> list[Measurement]:
    """Measure ``(contender, is_reference, ops)`` rows ``repeat`` times, taking turns.

    Each round calls ``measure(contender, ops)`` once per contender, in order, so that a change
    in the machine's load during the run hits all of them alike; ``measure`` returns one rate
    and extra figures (their medians over the rounds end up in the row). Contenders need a
    ``name``.
    """
    samples: list[list[float]] = [[] for _ in contenders]
    extras: list[list[dict[str, float]]] = [[] for _ in contenders]
    for _ in range(repeat):
        for i, (contender, _, ops) in enumerate(contenders):
            rate, extra = await measure(contender, ops)
            samples[i].append(rate)
            if extra:
                extras[i].append(extra)
    out = []
    for i, (contender, reference, _) in enumerate(contenders):
        medians = (
            {key: statistics.median(e[key] for e in extras[i]) for key in extras[i][0]}
            if extras[i]
            else {}
        )
        out.append(
            Measurement(group, contender.name, unit, samples[i], reference=reference, extra=medians)
        )
    return out


def jain_index(values: list[float]) -> float:
    """Jain's fairness index of ``values`` (1.0 = perfectly even)."""
    if not values:
        return 1.0
    total = sum(values)
    squares = sum(v * v for v in values)
    return (total * total) / (len(values) * squares) if squares else 1.0


def overtaken_fraction(arrival_order: list[int], service_order: list[int]) -> float:
    """The fraction of requests served after a request that arrived later (barging)."""
    if not arrival_order:
        return 0.0
    rank = {req: i for i, req in enumerate(service_order)}
    overtaken = 0
    latest_served = -1
    for req in arrival_order:
        if rank[req] < latest_served:
            overtaken += 1
        latest_served = max(latest_served, rank[req])
    return overtaken / len(arrival_order)


# ---------------------------------------------------------------------- CPU placement
#
# On a small virtual machine, where a client and a server process run decides a round trip's
# cost: on the same vCPU a loopback round trip costs ~25 µs; across vCPUs ~90 µs (waking an idle
# vCPU is a hypervisor exit). Left to the scheduler, that placement changes from one connection
# to the next, and a one-task comparison measured placement luck (measured here: the same pool
# at 0.28x and at 2.9x a raw connection, depending on where the backends landed). So, where the
# machine has two CPUs or more and allows it, the benchmark client runs on the first half of
# the CPUs and the servers it talks to (PostgreSQL backends of its own connections, the HTTP and
# WebSocket server processes) on the other half: like a database on its own host, the same for
# every contender. POOLKIT_BENCH_NO_PIN=1 turns this off.


def _cpu_split() -> tuple[set[int], set[int]] | None:
    if os.environ.get("POOLKIT_BENCH_NO_PIN") or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


_SERVER_CPUS: set[int] | None = None
_PLACED = False  # whether a run was placed at least once
# Server threads moved (MariaDB's outlive their connection in its thread cache): put back after.
_MOVED_THREADS: dict[int, set[int]] = {}


def placement() -> str | None:
    """How a run places client and servers, for the results page (``None``: not at all)."""
    split = _cpu_split()
    if split is None or not _PLACED:
        return None
    client, server = (",".join(map(str, sorted(cpus))) for cpus in split)
    return (
        f"benchmark client on CPU {client}; PostgreSQL backends of its connections, MariaDB "
        f"threads of its connections and the HTTP/WebSocket server processes on CPU {server}"
    )


@contextlib.contextmanager
def client_pinned() -> Iterator[set[int] | None]:
    """Run the block with this process on the client CPUs; yields the server CPUs (or None:
    no placement, one CPU or not permitted)."""
    global _SERVER_CPUS, _PLACED
    split = _cpu_split()
    if split is None or _SERVER_CPUS is not None:
        yield _SERVER_CPUS
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, split[0])
    except OSError:
        yield None
        return
    _SERVER_CPUS = split[1]
    _PLACED = True
    try:
        yield split[1]
    finally:
        _SERVER_CPUS = None
        os.sched_setaffinity(0, before)
        for tid, cpus in _MOVED_THREADS.items():
            with contextlib.suppress(OSError):  # (gone with its connection)
                os.sched_setaffinity(tid, cpus)
        _MOVED_THREADS.clear()


def pin_process(pid: int) -> bool:
    """Put process ``pid`` on the server CPUs (inside :func:`client_pinned`); ``False`` if not."""
    if _SERVER_CPUS is None:
        return False
    try:
        os.sched_setaffinity(pid, _SERVER_CPUS)
    except OSError:
        return False
    return True


def _own_tcp_ports() -> set[int]:
    """Local TCP ports of this process's sockets (Linux ``/proc``)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines, None)
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def pin_postgres_backends() -> int:
    """Put the PostgreSQL backends serving *this process's* connections on the server CPUs.

    A backend's command line names its client (``postgres: user db 127.0.0.1(54321) idle``);
    only backends whose client port is one of our sockets are moved, and they exit with their
    connection. Returns how many were moved (0 outside :func:`client_pinned`).
    """
    if _SERVER_CPUS is None:
        return 0
    ports = _own_tcp_ports()
    moved = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if not cmdline.startswith(b"postgres: "):
            continue
        start = cmdline.find(b"(")
        end = cmdline.find(b")", start)
        if start < 0 or end < 0 or not cmdline[start + 1 : end].isdigit():
            continue
        if int(cmdline[start + 1 : end]) in ports and pin_process(int(entry)):
            moved += 1
    return moved


async def pin_mariadb_threads(control: Any) -> int:
    """Put the MariaDB threads serving *this process's* connections on the server CPUs.

    ``control`` is an open aiomysql connection used to read ``information_schema.PROCESSLIST``
    (MariaDB 10.5+ shows each connection's OS thread id, ``TID``). The server keeps finished
    threads for reuse, so each moved thread's placement is put back when
    :func:`client_pinned` ends. Returns how many threads were moved.
    """
    if _SERVER_CPUS is None:
        return 0
    ports = _own_tcp_ports()
    try:
        async with control.cursor() as cursor:
            await cursor.execute("SELECT TID, HOST FROM information_schema.PROCESSLIST")
            rows = await cursor.fetchall()
    except Exception:  # an older server without TID: leave placement to the scheduler
        return 0
    moved = 0
    for tid, host in rows:
        port = str(host or "").rpartition(":")[2]
        if not tid or not port.isdigit() or int(port) not in ports:
            continue
        with contextlib.suppress(OSError):
            _MOVED_THREADS.setdefault(int(tid), os.sched_getaffinity(int(tid)))
            if pin_process(int(tid)):
                moved += 1
    return moved


class SQLAlchemyEngine:
    """An SQLAlchemy async engine as a benchmark contender (both database modules use it)."""

    def __init__(self, name: str, url: str, size: int, **engine_options: Any) -> None:
        self.name = name
        self.url = url
        self.size = size
        self.engine_options = engine_options
        self.engine: Any = None

    async def open(self) -> None:
        """Create the engine and warm one connection, like the other contenders."""
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine = create_async_engine(
            self.url, pool_size=self.size, max_overflow=0, **self.engine_options
        )
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    def borrow(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Check a connection out of the engine's pool."""
        return self.engine.connect()  # type: ignore[no-any-return]

    async def query(self, conn: Any) -> None:
        """``SELECT 1`` through SQLAlchemy."""
        result = await conn.exec_driver_sql("SELECT 1")
        result.fetchone()

    async def close(self) -> None:
        """Dispose of the engine and its connections."""
        await self.engine.dispose()


class MinimalFifo:
    """The least a fair pool can do, the ceiling rows of the database benchmarks: ``size`` raw
    connections, an idle list and a deque of waiting futures, each release handed straight to
    the oldest waiter. No timeouts, stats, checks, cancellation safety or limits. ``reset``, if
    given, is awaited by the releasing task before the handoff (one round trip per release)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        close: Callable[[Any], Awaitable[object]],
        size: int,
        reset: Callable[[Any], Awaitable[object]] | None = None,
    ) -> None:
        self._connect = connect
        self._close = close
        self._size = size
        self._reset = reset
        self.conns: list[Any] = []
        self._idle: list[Any] = []
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()

    async def open(self) -> None:
        """Open the connections."""
        self.conns = [await self._connect() for _ in range(self._size)]
        self._idle = list(self.conns)
        self._waiters.clear()

    @contextlib.asynccontextmanager
    async def borrow(self) -> AsyncIterator[Any]:
        """Hold a connection for the block."""
        if self._idle and not self._waiters:
            conn = self._idle.pop()
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            conn = await waiter
        try:
            yield conn
        finally:
            if self._reset is not None:
                await self._reset(conn)
            if self._waiters:
                self._waiters.popleft().set_result(conn)
            else:
                self._idle.append(conn)

    async def close(self) -> None:
        """Close the connections."""
        for conn in self.conns:
            await self._close(conn)
        self.conns = []
        self._idle = []


@contextlib.asynccontextmanager
async def server_process(script: str) -> AsyncIterator[tuple[int, int, Path]]:
    """Run ``script --serve --cert C --key K`` in a subprocess, with a fresh trustme CA.

    The script prints ``PORTS <plain> <tls>`` once listening (on 127.0.0.1). Yields the two
    ports and the CA file to trust; the process is terminated on exit. A server in its own
    process does not compete with the measured client's event loop.
    """
    import trustme  # only the benchmarks need it (the `bench` group has it)

    with tempfile.TemporaryDirectory(prefix="poolkit-bench-") as tmp:
        directory = Path(tmp)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        cert, key, ca_file = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        ca.cert_pem.write_to_path(str(ca_file))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            script,
            "--serve",
            "--cert",
            str(cert),
            "--key",
            str(key),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                line = (await proc.stdout.readline()).decode()
            if not line.startswith("PORTS "):
                raise RuntimeError(f"benchmark server did not start: {line!r}")
            plain, tls = (int(port) for port in line.split()[1:])
            pin_process(proc.pid)  # on the server CPUs, when the run is pinned
            yield plain, tls, ca_file
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()


def serve_forever(serve: Callable[[str, str], Awaitable[None]], description: str) -> None:
    """The ``--serve`` entry point of a benchmark server script (see :func:`server_process`):
    parse ``--cert``/``--key`` and run ``serve(cert, key)`` (which prints ``PORTS <plain> <tls>``
    and never returns) on uvloop when installed, until the parent terminates the process."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--serve", action="store_true", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    os.environ.pop("PYTHONASYNCIODEBUG", None)
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is in the bench group
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.cert, args.key))


def run_alone(run: Callable[[Options], Awaitable[list[Measurement]]]) -> None:
    """Run one module by itself (``python benchmarks/bench_x.py [--quick]``): print each group's
    medians and ratios to its reference row (``benchmarks/run.py`` does the full report)."""
    results = asyncio.run(run(Options(quick="--quick" in sys.argv)))
    groups: dict[str, list[Measurement]] = {}
    for m in results:
        groups.setdefault(m.group, []).append(m)
    for group, rows in groups.items():
        ref = next((r for r in rows if r.reference), rows[0])
        print(f"\n{group}")
        for r in rows:
            if r.higher_is_better:
                ratio = r.median / ref.median if ref.median else float("nan")
            else:
                ratio = ref.median / r.median if r.median else float("nan")
            figures = " ".join(f"{k}={v:.3g}" for k, v in r.extra.items())
            print(f"  {r.name:56} {r.median:12.3f} {r.unit}  x{ratio:5.2f}  {figures}")
