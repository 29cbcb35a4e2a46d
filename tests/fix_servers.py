"""Fixtures for the shared local database servers, and leak-checking helpers.

Loaded as a pytest plugin (``tests/conftest.py`` lists every ``tests/fix_*.py``).

The suite talks to real servers. When one is missing, a test that needs it is
*skipped* on a developer machine and *fails* in CI (``CI=true``), so a broken CI
environment can never turn into a green run that tested nothing.
"""

from __future__ import annotations

import asyncio
import gc
import glob
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Literal, NoReturn
from urllib.parse import urlsplit

import pytest

__all__ = [
    "DEFAULT_MYSQL_DSN",
    "DEFAULT_PG_DSN",
    "FdTracker",
    "dsn_host_port",
    "fd_count",
    "find_binary",
    "in_ci",
    "open_fds",
    "require_binary",
    "require_server",
    "tcp_reachable",
    "unavailable",
]

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL_DSN = "mysql://root@127.0.0.1:3306/test"

_DSN_ENV: dict[str, tuple[str, str]] = {
    "postgres": ("POOLKIT_TEST_PG_DSN", DEFAULT_PG_DSN),
    "mysql": ("POOLKIT_TEST_MYSQL_DSN", DEFAULT_MYSQL_DSN),
}
_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306}

# Extra directories searched by require_binary(): server binaries often live outside PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

# Probe results, memoised for the whole session: one TCP connect per server.
_probe_cache: dict[tuple[str, int], bool] = {}


def in_ci() -> bool:
    """Return True when running in CI (``CI=true``), where missing services are errors."""
    return os.environ.get("CI") == "true"


def unavailable(message: str) -> NoReturn:
    """Skip the current test, or fail it in CI, because something it needs is missing.

    Args:
        message: What is missing and how to provide it.
    """
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing test dependency is an error)", pytrace=False)
    pytest.skip(message)


def tcp_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """Return True if a TCP connection to ``host:port`` can be opened.

    Args:
        host: Host name or address.
        port: TCP port.
        timeout: Connect timeout in seconds.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def dsn_host_port(dsn: str) -> tuple[str, int]:
    """Return the ``(host, port)`` a URL-style DSN points to.

    Args:
        dsn: A DSN such as ``postgresql://user@127.0.0.1:5432/db``.

    Raises:
        ValueError: The DSN has no host.
    """
    parts = urlsplit(dsn)
    if not parts.hostname:
        raise ValueError(f"DSN {parts.scheme}://... has no host")
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    return parts.hostname, port


def _redacted(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def require_server(kind: Literal["postgres", "mysql"]) -> str:
    """Return the DSN of the shared local server of ``kind``, or skip/fail if it is down.

    The DSN comes from ``POOLKIT_TEST_PG_DSN`` / ``POOLKIT_TEST_MYSQL_DSN`` or the
    defaults; reachability is probed with one TCP connect per session.

    Args:
        kind: ``"postgres"`` or ``"mysql"``.

    Returns:
        The DSN.
    """
    if kind not in _DSN_ENV:
        raise ValueError(f"unknown server kind {kind!r}: expected 'postgres' or 'mysql'")
    env, default = _DSN_ENV[kind]
    dsn = os.environ.get(env) or default
    host, port = dsn_host_port(dsn)
    key = (host, port)
    if key not in _probe_cache:
        _probe_cache[key] = tcp_reachable(host, port)
    if not _probe_cache[key]:
        unavailable(
            f"{kind} server not reachable at {host}:{port} ({_redacted(dsn)}); "
            f"start it or set {env}"
        )
    return dsn


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """DSN of the shared PostgreSQL server (env ``POOLKIT_TEST_PG_DSN``)."""
    return require_server("postgres")


@pytest.fixture(scope="session")
def mysql_dsn() -> str:
    """DSN of the shared MariaDB/MySQL server (env ``POOLKIT_TEST_MYSQL_DSN``)."""
    return require_server("mysql")


def find_binary(name: str) -> str | None:
    """Return the path of executable ``name`` (PATH, sbin dirs, PostgreSQL bindir), or None.

    Args:
        name: Executable name, e.g. ``"pgbouncer"`` or ``"initdb"``.
    """
    found = shutil.which(name)
    if found:
        return found
    dirs = list(_EXTRA_BIN_DIRS)
    pg_bindir = _pg_bindir()
    if pg_bindir:
        dirs.insert(0, pg_bindir)
    for directory in dirs:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _pg_bindir() -> str | None:
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and os.path.isfile(os.path.join(out, "initdb")):
            return out
    candidates = sorted(
        (d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.isfile(f"{d}/initdb")),
        key=_version_key,
    )
    return candidates[-1] if candidates else None


def _version_key(path: str) -> tuple[int, ...]:
    version = path.rstrip("/").split("/")[-2]
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def require_binary(name: str) -> str:
    """Return the path of executable ``name``, or skip the test (fail it in CI).

    Args:
        name: Executable name, e.g. ``"pgbouncer"``, ``"initdb"``, ``"mariadbd"``.
    """
    path = find_binary(name)
    if path is None:
        unavailable(f"executable {name!r} not found (PATH, sbin dirs, `pg_config --bindir`)")
    return path


# ----------------------------------------------------------------------------- fds


def _fd_dir() -> str:
    return "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


def open_fds() -> dict[int, str]:
    """Return this process's open file descriptors, mapped to what they point to."""
    directory = _fd_dir()
    result: dict[int, str] = {}
    for entry in os.listdir(directory):
        fd = int(entry)
        try:
            result[fd] = os.readlink(os.path.join(directory, entry))
        except OSError:  # closed meanwhile, or the fd listing the directory itself
            continue
    return result


def fd_count() -> int:
    """Return the number of file descriptors this process has open."""
    return len(open_fds())


class FdTracker:
    """Records the open fds at creation; :meth:`check` asserts the count came back down.

    Closing a transport in asyncio finishes on a later loop iteration, so
    :meth:`check` polls (running the loop and ``gc.collect()``) before failing.
    """

    def __init__(self) -> None:
        """Take the baseline snapshot now."""
        self.baseline: dict[int, str] = open_fds()

    def leaked(self) -> dict[int, str]:
        """Return fds open now that were not open at the baseline (fd -> target)."""
        now = open_fds()
        return {fd: target for fd, target in now.items() if self.baseline.get(fd) != target}

    def _ok(self) -> bool:
        return fd_count() <= len(self.baseline)

    def _fail(self) -> NoReturn:
        extra = self.leaked()
        raise AssertionError(
            f"fd leak: {fd_count()} open, baseline {len(self.baseline)}; new: "
            + ", ".join(f"{fd}->{target}" for fd, target in sorted(extra.items()))
        )

    async def check(self, timeout: float = 2.0) -> None:
        """Wait (running the event loop) up to ``timeout`` s for the fd count to reach baseline.

        Args:
            timeout: Seconds to wait before failing.

        Raises:
            AssertionError: More fds are open than at the baseline; lists the new ones.
        """
        deadline = time.monotonic() + timeout
        while True:
            gc.collect()
            if self._ok():
                return
            if time.monotonic() >= deadline:
                self._fail()
            await asyncio.sleep(0.02)

    def check_sync(self, timeout: float = 2.0) -> None:
        """Like :meth:`check`, for code with no running event loop.

        Args:
            timeout: Seconds to wait before failing.

        Raises:
            AssertionError: More fds are open than at the baseline; lists the new ones.
        """
        deadline = time.monotonic() + timeout
        while True:
            gc.collect()
            if self._ok():
                return
            if time.monotonic() >= deadline:
                self._fail()
            time.sleep(0.02)


@pytest.fixture
async def no_fd_leak() -> AsyncIterator[FdTracker]:
    """Fail the test if it ends with more open fds than it started with.

    An async fixture, so the baseline is taken after the test's event loop exists and
    checked before it closes. Request it *first* in the test's arguments, so that its
    teardown runs after the other fixtures' (pools, proxies) teardown. The tracker can
    also be checked mid-test: ``await no_fd_leak.check()``.
    """
    tracker = FdTracker()
    yield tracker
    await tracker.check()


@pytest.fixture
def no_fd_leak_sync() -> Iterator[FdTracker]:
    """Like ``no_fd_leak`` for synchronous tests (no event loop involved)."""
    tracker = FdTracker()
    yield tracker
    tracker.check_sync()
