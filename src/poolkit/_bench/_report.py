"""The result of ``poolkit bench`` and its two renderings: a text table and JSON.

All times in :class:`BenchReport` (and in the JSON output) are seconds; the text table shows
them in human units. The report holds only redacted targets, so rendering cannot leak a secret.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from ._measure import ConnectResult, ModeResult
from ._sizing import ServerLimitCheck, SizingAdvice

__all__ = (
    "BenchReport",
    "LevelResult",
    "format_duration",
    "render_json",
    "render_json_error",
    "render_text",
)

#: Version of the JSON document's layout; bumped when a field changes meaning or goes away.
JSON_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class LevelResult:
    """Both modes at one concurrency level.

    Attributes:
        concurrency: tasks issuing requests at once.
        per_request: connect, request, close: each time.
        pooled: acquire from a pool, request, release.
    """

    concurrency: int
    per_request: ModeResult
    pooled: ModeResult

    @property
    def speedup(self) -> float | None:
        """Pooled throughput divided by per-request throughput (``None`` if either is zero)."""
        if self.per_request.rps <= 0 or self.pooled.rps <= 0:
            return None
        return self.pooled.rps / self.per_request.rps


@dataclass(frozen=True, slots=True)
class BenchReport:
    """Everything ``poolkit bench`` measured and concluded.

    Attributes:
        target: the redacted URL.
        target_label: what the target is (e.g. ``"PostgreSQL (poolkit.postgres, asyncpg)"``).
        operation: the work of one request (e.g. ``"SELECT 1"``).
        embedded: whether the target is the in-process HTTP server.
        loop: ``"asyncio"`` or ``"uvloop"``.
        python: the Python version.
        poolkit_version: the installed poolkit version.
        max_size: ``max_size`` of the pool in the pooled measurements.
        duration: the time bound of each measurement, seconds.
        requests: the request bound of each measurement, if any.
        connect: the connect cost.
        levels: one result per concurrency level.
        service_time: mean time one request holds a connection (lowest concurrency, pooled).
        hold_time: time one request keeps a connection from the others, including the pool's
            reset after release: ``1 / pooled req/s`` with one task. The sizing uses it (it is
            ``service_time`` when concurrency 1 was not measured).
        sizing: the recommendation for ``--rps`` (``None`` without ``--rps``).
        workers: worker processes assumed for sizing and the limit check.
        max_connections: the server's connection limit (databases), if it could be read.
        limit_check: ``workers × max_size`` against ``max_connections``, if known.
        warnings: one-line warnings, already redacted.
    """

    target: str
    target_label: str
    operation: str
    embedded: bool
    loop: str
    python: str
    poolkit_version: str
    max_size: int
    duration: float
    requests: int | None
    connect: ConnectResult
    levels: tuple[LevelResult, ...]
    service_time: float
    hold_time: float
    sizing: SizingAdvice | None
    workers: int
    max_connections: int | None
    limit_check: ServerLimitCheck | None
    warnings: tuple[str, ...]

    @property
    def best_speedup(self) -> float | None:
        """The largest speedup over all levels (``None`` if none could be computed)."""
        values = [lv.speedup for lv in self.levels if lv.speedup is not None]
        return max(values) if values else None


def format_duration(seconds: float) -> str:
    """A duration in a unit that keeps three significant digits: ``"85.2 us"``, ``"1.24 ms"``."""
    if seconds < 0.0001:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 0.01:
        return f"{seconds * 1e3:.3f} ms"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return lines


def render_text(report: BenchReport) -> str:
    """The human-readable report: a header, the throughput table, sizing and warnings."""
    out: list[str] = []
    where = "embedded" if report.embedded else report.target_label
    out.append(f"poolkit bench: {report.target} ({where})")
    bound = f"{report.duration:g} s"
    if report.requests is not None:
        bound += f" or {report.requests:,} requests"
    out.append(
        f"request: {report.operation} | loop: {report.loop} | Python {report.python} | "
        f"poolkit {report.poolkit_version} | {bound} per measurement"
    )
    out.append("")
    c = report.connect
    if c.samples:
        out.append(
            f"connect cost:  p50 {format_duration(c.p50)}, p99 {format_duration(c.p99)}, "
            f"mean {format_duration(c.mean)} ({c.samples:,} connections)"
        )
    else:
        out.append("connect cost:  not measured (every connect failed)")
    out.append(
        f"service time:  {format_duration(report.service_time)} mean per request on a held "
        "connection"
    )
    if report.hold_time > report.service_time:
        out.append(
            f"hold time:     {format_duration(report.hold_time)} per request, including the "
            "pool's work around it (reset after release): used for sizing"
        )
    out.append("")

    out.append(
        f"per-request: connect, request, close each time | pooled: acquire from a pool of "
        f"max_size {report.max_size}, request, release | wait: time to acquire"
    )
    headers = [
        "tasks",
        "per-request req/s",
        "pooled req/s",
        "speedup",
        "p99 per-request",
        "p99 pooled",
        "wait p50",
        "wait p99",
        "wait max",
    ]
    rows: list[list[str]] = []
    for level in report.levels:
        pr, po = level.per_request, level.pooled
        speedup = f"{level.speedup:.1f}x" if level.speedup is not None else "n/a"
        rows.append(
            [
                str(level.concurrency),
                _rate(pr.rps) + ("*" if pr.errors else ""),
                _rate(po.rps) + ("*" if po.errors else ""),
                speedup,
                format_duration(pr.latency_p99) if pr.requests else "n/a",
                format_duration(po.latency_p99) if po.requests else "n/a",
                format_duration(po.wait_p50 or 0.0) if po.requests else "n/a",
                format_duration(po.wait_p99 or 0.0) if po.requests else "n/a",
                format_duration(po.wait_max or 0.0) if po.requests else "n/a",
            ]
        )
    out.extend(_table(headers, rows))
    if any(lv.per_request.errors or lv.pooled.errors for lv in report.levels):
        out.append("* some requests failed: see the warnings below")
    best = report.best_speedup
    if best is not None:
        out.append("")
        out.append(
            f"pooling is up to {best:.1f}x faster than connecting for every request "
            f"(speedup = pooled req/s / per-request req/s)"
        )

    out.append("")
    out.extend(_sizing_lines(report))
    if report.warnings:
        out.append("")
        out.extend(f"warning: {w}" for w in report.warnings)
    return "\n".join(out) + "\n"


def _sizing_lines(report: BenchReport) -> list[str]:
    lines: list[str] = []
    s = report.sizing
    if s is None:
        per_conn = 1.0 / report.hold_time if report.hold_time > 0 else 0.0
        lines.append(
            "sizing: pass --rps N (your target requests per second) for a recommended "
            "min_size/max_size"
        )
        if per_conn:
            lines.append(
                f"        at {format_duration(report.hold_time)} per request one connection "
                f"serves at most ~{_rate(per_conn)} req/s"
            )
    else:
        per_worker = f" per worker ({s.workers} workers)" if s.workers > 1 else ""
        lines.append(
            f"sizing: {_rate(s.rps)} req/s x {format_duration(s.service_time)} x headroom "
            f"{s.headroom:g}{' / ' + str(s.workers) + ' workers' if s.workers > 1 else ''} "
            f"= {s.connections:.3g} connections (Little's law)"
        )
        lines.append(
            f"        recommended{per_worker}: min_size={s.min_size}, max_size={s.max_size}"
        )
    if report.max_connections is not None:
        check = report.limit_check
        line = f"server: max_connections = {report.max_connections}"
        if check is not None:
            verdict = "exceeds it" if check.exceeds else "fits"
            line += (
                f"; {check.workers} worker(s) x max_size {check.max_size} = {check.total} "
                f"connections: {verdict}"
            )
        lines.append(line)
    return lines


def _to_plain(report: BenchReport) -> dict[str, Any]:
    data = asdict(report)
    for level, plain in zip(report.levels, data["levels"], strict=True):
        plain["speedup"] = level.speedup
    if report.sizing is not None:
        data["sizing"]["total_max"] = report.sizing.total_max
    data["best_speedup"] = report.best_speedup
    return data


def render_json(report: BenchReport) -> str:
    """The report as a JSON document (times in seconds); see ``docs/cli.md`` for the layout."""
    data: dict[str, Any] = {"schema": JSON_SCHEMA_VERSION, "ok": True, **_to_plain(report)}
    data["warnings"] = list(report.warnings)
    return json.dumps(data, indent=2) + "\n"


def render_json_error(message: str, exit_code: int) -> str:
    """The JSON document printed on stdout (with ``--json``) when the run failed."""
    payload = {"schema": JSON_SCHEMA_VERSION, "ok": False, "error": message, "exit_code": exit_code}
    return json.dumps(payload, indent=2) + "\n"
