"""The ``poolkit`` command line (also ``python -m poolkit``).

``poolkit bench [URL]`` measures, on your own server, what pooling buys: connect cost,
connect-per-request vs pooled throughput at several concurrency levels, acquire wait
percentiles, and a pool size for a target request rate. With no URL it benchmarks an embedded
HTTP server, so it runs on a fresh machine with nothing else installed. See ``docs/cli.md``.

Exit codes: 0 the benchmark ran; 1 unexpected error; 2 bad usage, bad URL or missing extra;
3 server unreachable, credentials refused or first request failed; 130 interrupted.

Backends are imported only once a URL asks for them.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._bench._command import BenchOptions, run_bench
from ._bench._errors import EXIT_USAGE
from ._bench._sizing import DEFAULT_HEADROOM

__all__ = ("build_parser", "main")

_DESCRIPTION = """\
Measure what pooling buys on a server: connect cost, connect-per-request vs pooled
throughput (with the speedup) at several concurrency levels, acquire wait percentiles,
and a recommended pool size for a target request rate.

With no URL, an embedded HTTP/1.1 server is started in-process on 127.0.0.1.
URL schemes: postgresql:// (poolkit[postgres]), mysql:// (poolkit[mysql]),
http(s):// (poolkit[http]), ws(s):// (poolkit[websocket]).
Credentials in the URL are never printed."""

_EPILOG = """\
exit codes:
  0    the benchmark ran (warnings, if any, are in the report)
  1    unexpected error
  2    bad usage: invalid option or URL, or the backend's extra is not installed
  3    the server is unreachable, refused the credentials, or failed the first request
  130  interrupted (Ctrl-C)

examples:
  poolkit bench
  poolkit bench postgresql://app@127.0.0.1:5432/app --rps 2000 --workers 4
  poolkit bench http://127.0.0.1:8080/health --concurrency 1,16,128 --duration 3
  poolkit bench mysql://root@127.0.0.1:3306/test --json > result.json"""


def _concurrency(text: str) -> tuple[int, ...]:
    levels: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected positive integers separated by commas, e.g. 1,8,64"
            )
        if int(part) > 10_000:
            raise argparse.ArgumentTypeError(f"{part}: at most 10000 tasks per level")
        levels.add(int(part))
    return tuple(sorted(levels))


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return value


def _headroom(text: str) -> float:
    value = _positive_float(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 1")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return value


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (plus the usage) and exit with code 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``poolkit`` argument parser (exposed for the docs and the tests)."""
    parser = _Parser(prog="poolkit", description="poolkit: asyncio connection pools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    bench = commands.add_parser(
        "bench",
        help="measure what pooling buys on a server and how big the pool should be",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "url",
        nargs="?",
        metavar="URL",
        help="server to benchmark (default: an embedded HTTP server on 127.0.0.1)",
    )
    bench.add_argument(
        "-c",
        "--concurrency",
        type=_concurrency,
        default=(1, 8, 64),
        metavar="N,N,...",
        help="concurrency levels: tasks issuing requests at once (default: 1,8,64)",
    )
    bench.add_argument(
        "-d",
        "--duration",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="time bound of each measurement (default: 1.0)",
    )
    bench.add_argument(
        "-n",
        "--requests",
        type=_positive_int,
        default=None,
        metavar="N",
        help="request bound of each measurement; whichever of --duration and --requests "
        "comes first ends it (default: time only)",
    )
    bench.add_argument(
        "--max-size",
        type=_positive_int,
        default=10,
        metavar="N",
        help="max_size of the pool in the pooled measurements (default: 10)",
    )
    bench.add_argument(
        "--rps",
        type=_positive_float,
        default=None,
        metavar="RATE",
        help="target requests per second of the whole service: prints a recommended "
        "min_size/max_size (Little's law x headroom)",
    )
    bench.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes sharing --rps, each with its own pool; for databases, warns "
        "when workers x max_size exceeds the server's connection limit (default: 1)",
    )
    bench.add_argument(
        "--headroom",
        type=_headroom,
        default=DEFAULT_HEADROOM,
        metavar="FACTOR",
        help=f"capacity above the Little's-law average, >= 1 (default: {DEFAULT_HEADROOM})",
    )
    bench.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="bound on each connect and each request (default: 5.0)",
    )
    bench.add_argument(
        "--connect-samples",
        type=_positive_int,
        default=100,
        metavar="N",
        help="connections opened to measure the connect cost, within --duration (default: 100)",
    )
    bench.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop (default: asyncio; uvloop needs poolkit[uvloop])",
    )
    bench.add_argument(
        "--json", action="store_true", help="print a JSON document on stdout instead of a table"
    )
    bench.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (it is drawn only when stderr is a terminal and without --json)",
    )
    bench.add_argument(
        "--traceback",
        action="store_true",
        help="show the traceback of an unexpected error (for bug reports)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``poolkit`` command line and return the exit code.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 1 unexpected error, 2 usage, 3 unreachable server, 130
        interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    options = BenchOptions(
        url=args.url,
        concurrency=args.concurrency,
        duration=args.duration,
        requests=args.requests,
        max_size=args.max_size,
        rps=args.rps,
        workers=args.workers,
        headroom=args.headroom,
        timeout=args.timeout,
        connect_samples=args.connect_samples,
        loop=args.loop,
        json=args.json,
        progress=args.progress,
        traceback=args.traceback,
    )
    return run_bench(options, stdout=sys.stdout, stderr=sys.stderr)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("poolkit")
    except metadata.PackageNotFoundError:
        return "unknown"
