"""``poolkit bench``: end to end in a subprocess, plus its URL, report and HTTP parts in-process."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fix_servers import FdTracker, in_ci
from poolkit import Pool
from poolkit._bench._client import HTTPStreamConnector
from poolkit._bench._command import BenchOptions, run_bench
from poolkit._bench._measure import ConnectResult, ModeResult, percentile
from poolkit._bench._progress import Progress
from poolkit._bench._report import BenchReport, LevelResult, render_json, render_text
from poolkit._bench._server import EmbeddedServer
from poolkit._bench._sizing import check_server_limit, recommend
from poolkit._bench._url import BadURL, parse_target, redact_url, scrub
from poolkit.cli import main

CANARY = "canary-Pw-7f3a9"

# Short runs: each subprocess must finish in a few seconds.
FAST = ["--duration", "0.2", "--concurrency", "1,8", "--connect-samples", "20"]

SPEEDUP = re.compile(r"^\s*(1|8)\s+[\d,.]+\s+[\d,.]+\s+(\d+\.\d)x\s", re.MULTILINE)


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m poolkit`` with ``args``; ResourceWarnings are shown (on stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONWARNINGS")}
    return subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-m", "poolkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def require_backend(name: str) -> None:
    """Skip (fail in CI) when ``poolkit.<name>`` or its driver cannot be imported."""
    try:
        found = importlib.util.find_spec(f"poolkit.{name}") is not None
    except ImportError:
        found = False
    if found:
        try:
            __import__(f"poolkit.{name}")
        except ImportError:
            found = False
    if not found:
        message = f"poolkit.{name} is not importable"
        if in_ci():
            pytest.fail(f"{message} (CI=true: a missing test dependency is an error)")
        pytest.skip(message)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The run failed with ``code`` and exactly one line on stderr, without a traceback."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("poolkit bench: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


# ----------------------------------------------------------------------------- end to end


def test_bench_without_url_prints_a_table_with_a_speedup_per_level() -> None:
    """The default run benchmarks the embedded server: exit 0, one speedup per level."""
    result = run_cli("bench", *FAST)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar off a terminal, no ResourceWarning
    out = result.stdout
    assert "(embedded)" in out
    assert re.search(r"poolkit bench: http://127\.0\.0\.1:\d+/", out)
    assert "connect cost:  p50 " in out
    assert "speedup" in out
    levels = {m.group(1): float(m.group(2)) for m in SPEEDUP.finditer(out)}
    assert set(levels) == {"1", "8"}, out
    assert all(v > 0 for v in levels.values())
    assert "pooling is up to " in out


def test_bench_without_url_needs_no_extra_installed() -> None:
    """With every driver made unimportable, the embedded benchmark still runs (stdlib only)."""
    drivers = ("aiohttp", "asyncpg", "aiomysql", "pymysql", "websockets", "uvloop", "yarl")
    code = (
        "import sys\n"
        f"for name in {drivers!r}: sys.modules[name] = None\n"
        "from poolkit.cli import main\n"
        "rc = main(['bench', '--duration', '0.1', '--concurrency', '1,4', '--json'])\n"
        f"assert not any(sys.modules.get(n) for n in {drivers!r})\n"
        "sys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["embedded"] is True


def test_bench_json_is_valid_and_complete() -> None:
    """--json prints one JSON document with the measurements of every level, times in seconds."""
    result = run_cli("bench", *FAST, "--json", "--rps", "500")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["schema"] == 1
    assert data["embedded"] is True
    assert [lv["concurrency"] for lv in data["levels"]] == [1, 8]
    for level in data["levels"]:
        assert level["speedup"] > 0
        assert level["per_request"]["requests"] > 0
        assert level["pooled"]["requests"] > 0
        assert level["pooled"]["wait_p99"] >= level["pooled"]["wait_p50"] >= 0
        assert level["per_request"]["wait_p50"] is None
    assert data["connect"]["samples"] > 0
    assert 0 < data["connect"]["p50"] <= data["connect"]["p99"] < 5
    assert data["service_time"] > 0
    assert data["hold_time"] >= data["service_time"]
    assert sizing_uses_hold_time(data)
    sizing = data["sizing"]
    assert sizing["rps"] == 500
    assert sizing["max_size"] >= sizing["min_size"] >= 1
    assert data["max_connections"] is None  # an HTTP server has no connection limit to read


def sizing_uses_hold_time(data: dict[str, Any]) -> bool:
    """The recommendation in a JSON report was computed from the measured hold time."""
    sizing = data["sizing"]
    return bool(sizing["service_time"] == data["hold_time"])


def test_bench_requests_bound_ends_each_measurement() -> None:
    """--requests N stops each measurement after N requests even if time remains."""
    result = run_cli(
        "bench", "--duration", "30", "--requests", "50", "--concurrency", "4", "--json",
        "--connect-samples", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    level = json.loads(result.stdout)["levels"][0]
    assert level["per_request"]["requests"] == 50
    assert level["pooled"]["requests"] == 50


def test_bench_postgres_reports_speedup_sizing_and_server_limit(pg_dsn: str) -> None:
    """Against the local Postgres: exit 0, speedups, max_connections read, workers warning."""
    require_backend("postgres")
    url = pg_dsn.replace("postgres@", f"postgres:{CANARY}@", 1)  # trust auth ignores it
    assert CANARY in url
    result = run_cli("bench", url, *FAST, "--rps", "1000", "--workers", "500", "--max-size", "10")
    assert result.returncode == 0, result.stderr
    assert CANARY not in result.stdout + result.stderr
    out = result.stdout
    assert "postgres:***@" in out
    assert "SELECT 1" in out
    assert len(SPEEDUP.findall(out)) == 2, out
    match = re.search(r"max_connections = (\d+)", out)
    assert match, out
    limit = int(match.group(1))
    assert "recommended per worker (500 workers): min_size=" in out
    # 500 workers x max_size >= 1 exceed the default limit (100): the warning says so.
    warned = "warning: 500 worker(s) x max_size" in out
    assert warned == (limit < 500), out


def test_bench_postgres_json_is_valid(pg_dsn: str) -> None:
    """--json against Postgres: valid JSON with the server's max_connections and no secret."""
    require_backend("postgres")
    url = pg_dsn.replace("postgres@", f"postgres:{CANARY}@", 1)
    result = run_cli("bench", url, *FAST, "--json")
    assert result.returncode == 0, result.stderr
    assert CANARY not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["target"].startswith("postgresql://postgres:***@")
    assert isinstance(data["max_connections"], int) and data["max_connections"] > 0
    assert data["limit_check"]["exceeds"] is False
    assert all(level["speedup"] > 0 for level in data["levels"])


def test_bench_mysql_json_reads_the_server_limit(mysql_dsn: str) -> None:
    """--json against MariaDB/MySQL: speedups and @@max_connections."""
    require_backend("mysql")
    result = run_cli("bench", mysql_dsn, *FAST, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["operation"] == "SELECT 1"
    assert data["max_connections"] > 0
    assert all(level["speedup"] > 0 for level in data["levels"])


async def run_cli_async(*args: str) -> tuple[int, str, str]:
    """Like :func:`run_cli`, without blocking the test's event loop (which serves the target)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONWARNINGS")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "always::ResourceWarning",
        "-m",
        "poolkit",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bench_http_url_measures_through_poolkit_http() -> None:
    """An http:// URL is benchmarked with poolkit.http; a token in the query is never shown."""
    require_backend("http")
    async with EmbeddedServer() as server:
        url = f"http://user:{CANARY}@127.0.0.1:{server.port}/ping?token={CANARY}"
        code, out, err = await run_cli_async("bench", url, *FAST)
        assert code == 0, err
        assert err == ""
        assert CANARY not in out
        assert "HTTP (poolkit.http" in out
        assert "GET /ping?token=***" in out
        assert len(SPEEDUP.findall(out)) == 2, out
        assert server.requests > 0


async def test_bench_websocket_url_measures_ping_round_trips() -> None:
    """A ws:// URL is benchmarked with poolkit.websocket (ping/pong); the token is never shown."""
    require_backend("websocket")
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}/stream?token={CANARY}"
        code, out, err = await run_cli_async("bench", url, *FAST, "--json")
        assert code == 0, err
        assert CANARY not in out + err
        data = json.loads(out)
        assert data["operation"] == "ping/pong"
        assert "token=***" in data["target"]
        assert all(level["speedup"] > 0 for level in data["levels"])


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("foo://127.0.0.1:1/", "unsupported URL scheme 'foo'"),
        ("127.0.0.1:5432", "expected scheme://host"),
        ("http://127.0.0.1:99999/", "the port must be a number"),
        (f"postgresql://user:{CANARY}@:5432/db", "no host"),
        (f"mysql://root:{CANARY}@127.0.0.1:0/test", "port 0"),
    ],
)
def test_bench_bad_url_is_a_one_line_usage_error(url: str, fragment: str) -> None:
    """A bad URL exits 2 with one line naming the (redacted) URL and the problem."""
    result = run_cli("bench", url)
    line = assert_one_line_error(result, 2)
    assert fragment in line
    assert CANARY not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("scheme", "backend"),
    [("postgresql", "postgres"), ("mysql", "mysql"), ("http", "http"), ("ws", "websocket")],
)
def test_bench_unreachable_server_is_a_one_line_error(scheme: str, backend: str) -> None:
    """A closed loopback port exits 3 with one redacted line naming the target."""
    require_backend(backend)
    port = closed_port()
    url = f"{scheme}://user:{CANARY}@127.0.0.1:{port}/db"
    result = run_cli("bench", url, "--timeout", "2", timeout=20)
    line = assert_one_line_error(result, 3)
    assert f"127.0.0.1:{port}" in line
    assert CANARY not in result.stdout + result.stderr


def test_bench_unreachable_server_with_json_prints_an_error_document() -> None:
    """With --json a failure also prints {"ok": false, "error", "exit_code"} on stdout."""
    require_backend("mysql")
    result = run_cli("bench", f"mysql://root:{CANARY}@127.0.0.1:{closed_port()}/x", "--json")
    assert_one_line_error(result, 3)
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["exit_code"] == 3
    assert CANARY not in result.stdout


def test_bench_refused_credentials_exit_3_without_the_password(mysql_dsn: str) -> None:
    """A wrong password is reported as an authentication failure, password redacted."""
    require_backend("mysql")
    url = mysql_dsn.replace("root@", f"root:{CANARY}@", 1)
    result = run_cli("bench", url, "--timeout", "3")
    line = assert_one_line_error(result, 3)
    assert "authentication failed" in line
    assert CANARY not in result.stdout + result.stderr


def test_bench_missing_extra_names_the_pip_command() -> None:
    """When the backend's driver is not installed: exit 2 and `pip install 'poolkit[mysql]'`."""
    code = (
        "import sys; sys.modules['aiomysql'] = None; sys.modules['pymysql'] = None\n"
        "from poolkit.cli import main\n"
        "sys.exit(main(['bench', 'mysql://root@127.0.0.1:3306/test']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    line = assert_one_line_error(result, 2)
    assert "pip install 'poolkit[mysql]'" in line


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "--concurrency", "0"],
        ["bench", "--concurrency", "1,x"],
        ["bench", "--duration", "-1"],
        ["bench", "--headroom", "0.5"],
        ["bench", "--loop", "trio"],
        [],
    ],
)
def test_invalid_options_exit_2(args: list[str]) -> None:
    """Invalid options (and no command at all) exit with the usage code 2, no traceback."""
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_help_documents_the_exit_codes() -> None:
    """`poolkit bench --help` lists every exit code."""
    result = run_cli("bench", "--help")
    assert result.returncode == 0
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert f"  {code}" in result.stdout


# ----------------------------------------------------------------------------- in-process


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_run_bench_in_process_draws_and_erases_a_progress_bar_on_a_tty() -> None:
    """On a terminal the bar is drawn on stderr and erased at the end; stdout has the table."""
    stdout, stderr = io.StringIO(), _TTY()
    tracker = FdTracker()
    options = BenchOptions(duration=0.15, concurrency=(2,), connect_samples=5)
    assert run_bench(options, stdout=stdout, stderr=stderr) == 0
    tracker.check_sync()
    drawn = stderr.getvalue()
    assert "[" in drawn and "/4 connecting" in drawn and "4/4 pooled, 2 tasks" in drawn
    assert drawn.endswith("\r\x1b[2K")
    assert "speedup" in stdout.getvalue()


def test_run_bench_in_process_with_json_draws_no_progress_bar() -> None:
    """--json never draws the bar, even on a terminal."""
    stdout, stderr = io.StringIO(), _TTY()
    options = BenchOptions(duration=0.1, concurrency=(1,), connect_samples=3, json=True)
    assert run_bench(options, stdout=stdout, stderr=stderr) == 0
    assert stderr.getvalue() == ""
    assert json.loads(stdout.getvalue())["ok"] is True


def test_main_returns_the_exit_code_of_a_bad_url(capsys: pytest.CaptureFixture[str]) -> None:
    """main() returns 2 for a bad URL instead of raising."""
    assert main(["bench", "gopher://example"]) == 2
    assert "unsupported URL scheme 'gopher'" in capsys.readouterr().err


async def test_stdlib_connector_reuses_keep_alive_connections_through_a_pool() -> None:
    """Pooled requests to the embedded server reuse one TCP connection; nothing leaks."""
    tracker = FdTracker()
    async with EmbeddedServer() as server:
        connector = HTTPStreamConnector("127.0.0.1", server.port)
        async with Pool(connector, min_size=1, max_size=1, name="cli-test") as pool:
            for _ in range(20):
                async with pool.acquire() as conn:
                    assert await conn.request("/") == 200
        assert server.requests == 20
        assert server.connections == 1
        assert connector.describe() == f"http://127.0.0.1:{server.port}"
    await tracker.check()


async def test_embedded_server_answers_connection_close_and_bad_requests() -> None:
    """`Connection: close` ends the connection after the answer; garbage gets a 400."""
    async with EmbeddedServer() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in data
        writer.close()
        await writer.wait_closed()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"NONSENSE\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://app:{CANARY}@db:5432/main", "postgresql://app:***@db:5432/main"),
        ("postgresql://app@db/main", "postgresql://app@db/main"),
        (f"mysql://root:{CANARY}@h/x?ssl=1&password={CANARY}", "mysql://root:***@h/x?ssl=1&password=***"),
        (f"wss://h/stream?token={CANARY}&symbol=btc", "wss://h/stream?token=***&symbol=btc"),
        ("http://127.0.0.1:8080/health", "http://127.0.0.1:8080/health"),
    ],
)  # fmt: skip
def test_redact_url_hides_passwords_and_secret_parameters(url: str, shown: str) -> None:
    """The password and secret query parameters become ***; the rest stays readable."""
    assert redact_url(url) == shown


def test_parse_target_maps_schemes_to_backends_and_collects_secrets() -> None:
    """Each scheme picks its backend and default port; secrets are kept for scrubbing."""
    expected = {
        "postgresql": ("postgres", 5432),
        "postgres": ("postgres", 5432),
        "mysql": ("mysql", 3306),
        "http": ("http", 80),
        "https": ("http", 443),
        "ws": ("websocket", 80),
        "wss": ("websocket", 443),
    }
    for scheme, (backend, port) in expected.items():
        target = parse_target(f"{scheme}://u:{CANARY}@host/path")
        assert (target.backend, target.port, target.host) == (backend, port, "host")
        assert CANARY in target.secrets
        assert CANARY not in target.display
        assert CANARY not in repr(BadURL(target.display))
    target = parse_target(f"postgresql://u:{CANARY}@host/db")
    assert scrub(f"driver said: password {CANARY} rejected", target.secrets) == (
        "driver said: password *** rejected"
    )


def test_parse_target_error_never_contains_the_password() -> None:
    """A BadURL message shows the URL redacted."""
    with pytest.raises(BadURL) as info:
        parse_target(f"redis://u:{CANARY}@host:6379/0")
    assert CANARY not in str(info.value)
    assert "redis://u:***@host:6379/0" in str(info.value)


def test_percentile_uses_nearest_rank() -> None:
    """p50 of 1..4 is 2, p99 of 1..100 is 99, an empty list gives 0."""
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([], 99) == 0.0


def _mode(mode: str, rps: float, errors: int = 0) -> ModeResult:
    pooled = mode == "pooled"
    return ModeResult(
        mode=mode,
        concurrency=8,
        requests=int(rps),
        errors=errors,
        seconds=1.0,
        rps=rps,
        latency_p50=0.001,
        latency_p99=0.002,
        wait_p50=0.0001 if pooled else None,
        wait_p99=0.0002 if pooled else None,
        wait_max=0.0003 if pooled else None,
        service_time=0.0005,
        first_error=f"boom {CANARY}" if errors else None,
    )


def _report(**changes: Any) -> BenchReport:
    fields: dict[str, Any] = {
        "target": "postgresql://app:***@db:5432/main",
        "target_label": "PostgreSQL",
        "operation": "SELECT 1",
        "embedded": False,
        "loop": "asyncio",
        "python": "3.11.7",
        "poolkit_version": "0.1",
        "max_size": 10,
        "duration": 1.0,
        "requests": None,
        "connect": ConnectResult(samples=10, errors=0, mean=0.003, p50=0.0025, p99=0.009, max=0.01),
        "levels": (LevelResult(8, _mode("per_request", 1000.0), _mode("pooled", 12500.0)),),
        "service_time": 0.0005,
        "hold_time": 0.0005,
        "sizing": recommend(2000, 0.0005, workers=4),
        "workers": 4,
        "max_connections": 100,
        "limit_check": check_server_limit(100, workers=4, max_size=1),
        "warnings": (),
    }
    fields.update(changes)
    return BenchReport(**fields)


def test_render_text_shows_the_speedup_sizing_and_limit() -> None:
    """The table shows 12.5x, the recommendation per worker, and that the pools fit."""
    text = render_text(_report())
    assert re.search(r"^\s+8\s+1,000\s+12,500\s+12\.5x\s", text, re.MULTILINE), text
    assert "pooling is up to 12.5x faster" in text
    assert "recommended per worker (4 workers): min_size=1, max_size=1" in text
    assert "max_connections = 100; 4 worker(s) x max_size 1 = 4 connections: fits" in text


def test_render_text_without_rps_explains_how_to_get_a_size() -> None:
    """Without --rps the report says to pass it and what one connection can serve."""
    text = render_text(_report(sizing=None))
    assert "pass --rps N" in text
    assert "one connection serves at most ~2,000 req/s" in text


def test_render_marks_failed_requests_and_json_carries_the_warnings() -> None:
    """A mode with failures is starred in the table; warnings appear in text and JSON."""
    level = LevelResult(8, _mode("per_request", 900.0, errors=3), _mode("pooled", 9000.0))
    report = _report(levels=(level,), warnings=("per-request: 3 of 903 attempts failed",))
    text = render_text(report)
    assert "900*" in text
    assert "warning: per-request: 3 of 903 attempts failed" in text
    data = json.loads(render_json(report))
    assert data["warnings"] == ["per-request: 3 of 903 attempts failed"]
    assert data["levels"][0]["speedup"] == pytest.approx(10.0)
    assert data["sizing"]["total_max"] == 4


def test_level_without_throughput_has_no_speedup() -> None:
    """When every per-request attempt failed, the speedup is n/a rather than infinite."""
    level = LevelResult(8, _mode("per_request", 0.0, errors=5), _mode("pooled", 100.0))
    assert level.speedup is None
    assert "n/a" in render_text(_report(levels=(level,)))


def test_progress_is_silent_when_disabled() -> None:
    """A disabled bar writes nothing at all."""
    stream = _TTY()
    progress = Progress(stream, total=3, enabled=False)
    progress.step("connect cost", 1.0)
    assert stream.getvalue() == ""
    assert progress.render().startswith("[")


# ----------------------------------------------------------------------------- benchmarks/run.py

RUNNER = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"

GOOD_MODULE = """
from _common import Measurement, Options

async def run(opts: Options) -> list[Measurement]:
    n = opts.repeat
    return [
        Measurement("demo: rate", "poolkit", "ops/s", [100.0] * n, reference=True),
        Measurement("demo: rate", "other", "ops/s", [50.0] * n, extra={"jain": 0.5}),
        Measurement("demo: time", "poolkit", "us", [2.0] * n, higher_is_better=False,
                    reference=True),
        Measurement("demo: time", "other", "us", [8.0] * n, higher_is_better=False),
    ]
"""

BAD_MODULE = """
from _common import Measurement, Options

async def run(opts: Options) -> list[Measurement]:
    raise ConnectionRefusedError("server down")
"""


def test_runner_reports_a_failing_module_and_still_runs_the_others(tmp_path: Path) -> None:
    """One failing module: exit 1, the failure recorded, the other module's ratios written."""
    modules = tmp_path / "mods"
    modules.mkdir()
    (modules / "bench_good.py").write_text(GOOD_MODULE)
    (modules / "bench_bad.py").write_text(BAD_MODULE)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(RUNNER), "--quick", "--modules-dir", str(modules), "--out", str(out),
         "--no-chart", "--repeat", "3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "bad [asyncio]: ConnectionRefusedError: server down" in result.stderr
    assert re.search(r"other\s+50\.0 ops/s\s+±0\.0%\s+0\.50\s+jain=0\.500", result.stdout)
    assert re.search(r"other\s+8\.000 us\s+±0\.0%\s+0\.25", result.stdout)
    data = json.loads((out / "quick.json").read_text())
    assert {(r["module"], r["ok"]) for r in data["runs"]} == {("good", True), ("bad", False)}
    assert data["machine"]["cpu_count"] == os.cpu_count()
    assert data["machine"]["python"] == platform.python_version()
    assert "uvloop" in data["machine"]["packages"]
    ratios = {(r["group"], r["name"]): r["ratio"] for r in data["results"]}
    assert ratios == {
        ("demo: rate", "poolkit"): 1.0,
        ("demo: rate", "other"): 0.5,
        ("demo: time", "poolkit"): 1.0,
        ("demo: time", "other"): 0.25,
    }
    assert all(len(r["samples"]) == 3 for r in data["results"])
    markdown = (out / "quick.md").read_text()
    assert "## Modules that failed" in markdown
    assert "| **poolkit (ref)** | 100.0 ops/s |" in markdown


def test_runner_only_filters_modules_and_rejects_unknown_names(tmp_path: Path) -> None:
    """--only runs just the named modules; an unknown name is an error naming the choices."""
    modules = tmp_path / "mods"
    modules.mkdir()
    (modules / "bench_good.py").write_text(GOOD_MODULE)
    (modules / "bench_bad.py").write_text(BAD_MODULE)
    base = [sys.executable, str(RUNNER), "--quick", "--modules-dir", str(modules), "--no-chart"]
    ok = subprocess.run(
        [*base, "--only", "good", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "bad" not in ok.stderr
    unknown = subprocess.run(
        [*base, "--only", "nope"], capture_output=True, text=True, timeout=60, check=False
    )
    assert unknown.returncode != 0
    assert "--only nope: no such module (available: bad, good)" in unknown.stderr
