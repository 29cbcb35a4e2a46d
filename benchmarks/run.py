"""Run every ``benchmarks/bench_*.py`` module side by side and report medians and ratios.

Usage (``nox -s bench`` runs it with the peers installed)::

    python benchmarks/run.py                     # full run: asyncio and uvloop, --repeat 5
    python benchmarks/run.py --quick             # smoke run (CI): every module, a few seconds each
    python benchmarks/run.py --only postgres,core --loop uvloop --repeat 9

Each module exposes ``async def run(opts: Options) -> list[Measurement]`` (see ``_common.py``).
Every module runs in its own fresh event loop, once per loop kind; a module that fails (a server
down, a missing package) is reported and makes the exit code 1, and the others still run.

Output: a table per group on stdout (contender, median, spread, ratio to the reference row), and
``benchmarks/results/<name>.md``, ``<name>.json`` and ``<name>.png`` (the chart needs
matplotlib, from the ``bench`` dependency group). ``<name>`` is ``latest`` for a full run and
``quick`` for ``--quick``, so a smoke run never overwrites the published results. A full run in which
every module succeeded also copies the chart to ``docs/assets/benchmarks.png``, which
``docs/benchmarks.md`` shows.

Ratio: how the row performs relative to the reference row (poolkit's), 1.00 for the reference,
greater than 1 when the row is better: ``row / reference`` for rates, ``reference / row`` for
durations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(HERE), str(ROOT / "src")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _common import Measurement, Options, client_pinned, placement  # noqa: E402 - needs the path set above

#: Packages whose versions are recorded with the results (the contenders and the loop).
COMPARED_PACKAGES = (
    "poolkit",
    "asyncpg",
    "psycopg",
    "psycopg-pool",
    "aiomysql",
    "asyncmy",
    "PyMySQL",
    "SQLAlchemy",
    "aiohttp",
    "httpx",
    "httpcore",
    "websockets",
    "uvloop",
)

#: Where a full run of every module publishes its chart for docs/benchmarks.md.
DOCS_CHART = Path("docs") / "assets" / "benchmarks.png"

#: Default per-module time limit, seconds (a hung module must not hang CI).
QUICK_MODULE_TIMEOUT = 90.0
FULL_MODULE_TIMEOUT = 1800.0


@dataclass(slots=True)
class ModuleRun:
    """The outcome of one module under one loop."""

    module: str
    loop: str
    ok: bool
    seconds: float
    measurements: int = 0
    error: str | None = None


@dataclass(slots=True)
class Row:
    """One measurement as reported: the module's numbers plus the ratio to the reference."""

    group: str
    name: str
    loop: str
    module: str
    unit: str
    median: float
    spread: float
    samples: list[float]
    higher_is_better: bool
    reference: bool
    ratio: float | None
    extra: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- discovery


def discover(directory: Path = HERE) -> dict[str, Path]:
    """Map each module's short name (``bench_core.py`` -> ``core``) to its path, sorted."""
    found = {p.stem.removeprefix("bench_"): p for p in directory.glob("bench_*.py")}
    return dict(sorted(found.items()))


def load(name: str, path: Path) -> ModuleType:
    """Import ``benchmarks/bench_<name>.py`` as module ``bench_<name>``."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise TypeError(f"{path.name} has no run(opts) coroutine function")
    return module


def select(available: Sequence[str], only: str | None) -> list[str]:
    """The modules to run: all, or those named in ``--only`` (unknown names are an error)."""
    if not only:
        return list(available)
    wanted = [w.strip().removeprefix("bench_") for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise SystemExit(
            f"run.py: error: --only {','.join(unknown)}: no such module "
            f"(available: {', '.join(available)})"
        )
    return [name for name in available if name in wanted]


# ----------------------------------------------------------------------------- running


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for ``loop`` (``None``: asyncio's default)."""
    if loop == "asyncio":
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: type, message and the innermost cause."""
    text = f"{type(exc).__name__}: {exc}".strip()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return " ".join(text.split())


def run_module(
    name: str, path: Path, opts: Options, timeout: float, verbose: bool
) -> tuple[ModuleRun, list[Measurement]]:
    """Import and run one module in a fresh event loop; never raises (except Ctrl-C)."""
    started = time.perf_counter()
    try:
        module = load(name, path)

        async def main() -> list[Measurement]:
            async with asyncio.timeout(timeout):
                result: list[Measurement] = await module.run(opts)
                return result

        with client_pinned(), asyncio.Runner(loop_factory=loop_factory(opts.loop)) as runner:
            measurements = runner.run(main())
        if not isinstance(measurements, list):
            raise TypeError(f"run() returned {type(measurements).__name__}, not a list")
        for m in measurements:
            for attr in ("group", "name", "unit", "samples"):
                if not hasattr(m, attr):
                    raise TypeError(f"run() returned {m!r}: no attribute {attr!r}")
            if not m.samples:
                raise ValueError(f"{m.group} / {m.name}: no samples")
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        message = one_line(exc)
        if isinstance(exc, TimeoutError) and not str(exc):
            message = f"TimeoutError: did not finish within {timeout:g} s"
        run = ModuleRun(name, opts.loop, False, time.perf_counter() - started, error=message)
        return run, []
    run = ModuleRun(name, opts.loop, True, time.perf_counter() - started, len(measurements))
    return run, measurements


def build_rows(measurements: list[tuple[str, str, Measurement]]) -> list[Row]:
    """Turn ``(module, loop, measurement)`` triples into rows with ratios, grouped and ordered.

    Ratios are computed within each (group, loop); a group with no reference row (or a
    reference with a zero median) has no ratios.
    """
    rows = [
        Row(
            group=m.group,
            name=m.name,
            loop=loop,
            module=module,
            unit=m.unit,
            median=m.median,
            spread=m.spread,
            samples=list(m.samples),
            higher_is_better=m.higher_is_better,
            reference=m.reference,
            ratio=None,
            extra=dict(m.extra),
        )
        for module, loop, m in measurements
    ]
    by_key: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        by_key.setdefault((row.group, row.loop), []).append(row)
    for group_rows in by_key.values():
        reference = next((r for r in group_rows if r.reference), None)
        if reference is None or reference.median == 0:
            continue
        for row in group_rows:
            if row.median == 0:
                row.ratio = 0.0 if row.higher_is_better else None
            elif row.higher_is_better:
                row.ratio = row.median / reference.median
            else:
                row.ratio = reference.median / row.median
    return rows


# ----------------------------------------------------------------------------- machine info


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def machine_info(loops: Sequence[str]) -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "loops": list(loops),
        "placement": placement(),
        "git_commit": _git_commit(),
        "packages": {name: _version(name) for name in COMPARED_PACKAGES},
    }


# ----------------------------------------------------------------------------- rendering


def fmt_value(value: float, unit: str) -> str:
    """A number with its unit, with about four significant digits."""
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 0.01:
        text = f"{value:.3f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}"


def fmt_extra(extra: dict[str, float]) -> str:
    """The extra numbers of a row, compactly (``wait_p99_ms=1.2 jain=0.99``)."""
    return " ".join(f"{k}={fmt_value(v, '').strip()}" for k, v in extra.items())


def _group_order(rows: list[Row]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for row in rows:
        seen.setdefault((row.group, row.loop), None)
    return list(seen)


def _cells(row: Row) -> list[str]:
    return [
        row.name + (" (ref)" if row.reference else ""),
        fmt_value(row.median, row.unit),
        f"±{row.spread * 100:.1f}%",
        f"{row.ratio:.2f}" if row.ratio is not None else "-",
        fmt_extra(row.extra),
    ]


HEADERS = ["contender", "median", "spread", "ratio", "notes"]


def render_text(rows: list[Row]) -> str:
    """One plain-text table per (group, loop)."""
    out: list[str] = []
    for group, loop in _group_order(rows):
        members = [r for r in rows if r.group == group and r.loop == loop]
        cells = [_cells(r) for r in members]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
        out.append(f"{group}  [{loop}]")
        out.append("  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip())
        out.append("  ".join("-" * w for w in widths))
        out.extend(
            "  ".join(
                (v.ljust(w) if i in (0, 4) else v.rjust(w))
                for i, (v, w) in enumerate(zip(c, widths, strict=True))
            ).rstrip()
            for c in cells
        )
        out.append("")
    return "\n".join(out)


def render_markdown(
    rows: list[Row], runs: list[ModuleRun], info: dict[str, Any], opts: Options, chart: str | None
) -> str:
    """The results page: machine, options, module status, one table per group."""
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    lines = [
        "# Benchmark results",
        "",
        f"Measured {info['date']} on {info['cpu_count']} CPU(s) ({info['cpu_model'] or 'unknown CPU'}), "
        f"{info['platform']}, {info['python_implementation']} {info['python']}"
        + (f", commit {info['git_commit']}" if info["git_commit"] else "")
        + ".",
        "",
        f"Loops: {', '.join(info['loops'])}. Repetitions: {opts.repeat}"
        + (" (quick smoke run: numbers are not meaningful)" if opts.quick else "")
        + ". Each row is the median of the repetitions; spread is half the range over the "
        "median; ratio is the row's performance relative to the reference row (poolkit), "
        "greater than 1 when the row is better.",
        "",
        f"Packages: {packages}.",
        "",
        f"CPU placement: {info.get('placement') or 'none (left to the scheduler)'}.",
        "",
    ]
    if chart:
        lines += [f"![ratios to poolkit]({chart})", ""]
    failed = [r for r in runs if not r.ok]
    if failed:
        lines += ["## Modules that failed", ""]
        lines += [f"- `{r.module}` under {r.loop}: {r.error}" for r in failed]
        lines.append("")
    for group, loop in _group_order(rows):
        members = [r for r in rows if r.group == group and r.loop == loop]
        lines += [f"## {group} ({loop})", ""]
        lines.append("| " + " | ".join(HEADERS) + " |")
        lines.append("|---|---:|---:|---:|---|")
        for r in members:
            cells = _cells(r)
            cells[0] = f"**{cells[0]}**" if r.reference else cells[0]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


LOOP_COLORS = {"asyncio": ("#2b6cb0", "#a3bffa"), "uvloop": ("#c05621", "#fbd38d")}


def render_chart(rows: list[Row], path: Path) -> str | None:
    """Draw the ratios as horizontal bars: one panel per group, one bar per contender and loop.

    The reference rows (poolkit) are drawn dark, the others light; the x axis turns
    logarithmic when a panel's ratios span more than 20x.

    Returns:
        ``None`` on success, else a message saying why no chart was written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle
    except ImportError:
        return "no chart: matplotlib is not installed (it is in the bench dependency group)"
    groups: list[str] = []
    for row in rows:
        if row.ratio is not None and row.group not in groups:
            groups.append(row.group)
    if not groups:
        return "no chart: no group has a reference row"
    loops = sorted({r.loop for r in rows}, key=lambda name: (name != "asyncio", name))
    per_group = {g: [r for r in rows if r.group == g and r.ratio is not None] for g in groups}
    heights = [len(per_group[g]) * 0.3 + 0.6 for g in groups]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(9, sum(heights) + 0.8),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    bar = 0.8 / len(loops)
    for ax, group in zip(axes[:, 0], groups, strict=True):
        members = per_group[group]
        names = list(dict.fromkeys(r.name for r in members))
        ratios = [r.ratio or 0.0 for r in members]
        for index, loop in enumerate(loops):
            for row in (r for r in members if r.loop == loop):
                y = names.index(row.name) + (index - (len(loops) - 1) / 2) * bar
                dark, light = LOOP_COLORS.get(loop, ("#2d3748", "#cbd5e0"))
                value = row.ratio or 0.0
                ax.barh(y, value, height=bar, color=dark if row.reference else light)
                ax.text(value, y, f" {value:.2f}", va="center", fontsize=6.5)
        ax.set_yticks(range(len(names)), names)
        ax.axvline(1.0, color="#2d3748", linewidth=0.8)
        ax.invert_yaxis()
        ax.set_title(group, fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
        positive = [v for v in ratios if v > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_xscale("log")
            ax.set_xlim(min(positive) / 1.5, max(positive) * 2.5)
        else:
            ax.set_xlim(0, max(max(ratios, default=1.0), 1.0) * 1.2)
    handles = [
        Rectangle((0, 0), 1, 1, color=LOOP_COLORS.get(loop, ("#2d3748", ""))[0]) for loop in loops
    ]
    fig.legend(handles, loops, loc="upper right", fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("performance relative to poolkit (higher is better; poolkit = 1)")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The runner's command line."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Run the poolkit benchmark modules side by side; print medians and ratios.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode (CI): each module does very little work; results go to quick.*",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="repetitions per measurement (default: 5, or 2 with --quick)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default=None,
        help="event loop(s) (default: both, or asyncio with --quick)",
    )
    parser.add_argument("--only", default=None, help="comma-separated modules, e.g. postgres,core")
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "results",
        help="output directory (default: benchmarks/results)",
    )
    parser.add_argument(
        "--name",
        default=None,
        help="output file stem (default: latest, or quick with --quick)",
    )
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG chart")
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help=f"do not copy the chart of a full run of every module to {DOCS_CHART}",
    )
    parser.add_argument(
        "--module-timeout",
        type=float,
        default=None,
        help=f"seconds before a module is abandoned (default: {QUICK_MODULE_TIMEOUT:g} with "
        f"--quick, else {FULL_MODULE_TIMEOUT:g})",
    )
    parser.add_argument("--pg-dsn", default=None, help="PostgreSQL DSN for the postgres modules")
    parser.add_argument("--mysql-dsn", default=None, help="MySQL DSN for the mysql modules")
    parser.add_argument(
        "--modules-dir",
        type=Path,
        default=HERE,
        help="directory holding the bench_*.py modules (default: benchmarks/)",
    )
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="print tracebacks")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected modules; return 0 if every module succeeded, else 1."""
    args = parse_args(argv)
    modules = discover(args.modules_dir)
    if args.list:
        print("\n".join(modules))
        return 0
    if not modules:
        print("run.py: error: no benchmarks/bench_*.py module found", file=sys.stderr)
        return 1
    names = select(list(modules), args.only)
    loops_arg = args.loop or ("asyncio" if args.quick else "both")
    loops = ["asyncio", "uvloop"] if loops_arg == "both" else [loops_arg]
    if "uvloop" in loops and importlib.util.find_spec("uvloop") is None:
        print("run.py: error: --loop uvloop needs uvloop (pip install uvloop)", file=sys.stderr)
        return 2
    repeat = args.repeat or (2 if args.quick else 5)
    timeout = args.module_timeout or (QUICK_MODULE_TIMEOUT if args.quick else FULL_MODULE_TIMEOUT)
    base = Options(quick=args.quick, repeat=repeat)
    if args.pg_dsn:
        base = replace(base, pg_dsn=args.pg_dsn)
    if args.mysql_dsn:
        base = replace(base, mysql_dsn=args.mysql_dsn)

    runs: list[ModuleRun] = []
    collected: list[tuple[str, str, Measurement]] = []
    started = time.perf_counter()
    for loop in loops:
        opts = replace(base, loop=loop)
        for name in names:
            print(f"running {name} under {loop} ...", file=sys.stderr, flush=True)
            run, measurements = run_module(name, modules[name], opts, timeout, args.verbose)
            runs.append(run)
            collected.extend((name, loop, m) for m in measurements)
            status = f"ok, {run.measurements} rows" if run.ok else f"FAILED: {run.error}"
            print(f"  {name} [{loop}]: {status} ({run.seconds:.1f} s)", file=sys.stderr)

    rows = build_rows(collected)
    info = machine_info(loops)
    print()
    print(render_text(rows))

    stem = args.name or ("quick" if args.quick else "latest")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    chart_name: str | None = None
    if not args.no_chart and rows:
        chart_path = out / f"{stem}.png"
        problem = render_chart(rows, chart_path)
        if problem:
            print(problem, file=sys.stderr)
        else:
            chart_name = chart_path.name
            full = not (args.quick or args.only or args.name or args.no_publish)
            if full and args.modules_dir == HERE and all(r.ok for r in runs):
                published = ROOT / DOCS_CHART
                published.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(chart_path, published)
                print(f"published the chart to {DOCS_CHART}", file=sys.stderr)
    (out / f"{stem}.md").write_text(render_markdown(rows, runs, info, base, chart_name))
    document = {
        "machine": info,
        "options": {"quick": base.quick, "repeat": base.repeat, "loops": loops, "only": names},
        "runs": [asdict(run) for run in runs],
        "results": [asdict(row) for row in rows],
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / f"{stem}.json").write_text(json.dumps(document, indent=2) + "\n")
    written = ", ".join(str(out / f"{stem}.{ext}") for ext in ("md", "json"))
    print(f"wrote {written}" + (f", {out / chart_name}" if chart_name else ""), file=sys.stderr)

    failed = [r for r in runs if not r.ok]
    if failed:
        print(f"{len(failed)} module run(s) failed:", file=sys.stderr)
        for r in failed:
            print(f"  {r.module} [{r.loop}]: {r.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
