"""Throwaway database servers (PostgreSQL, MariaDB, pgbouncer) for kill/restart tests.

Loaded as a pytest plugin. Each server runs from the installed binaries on a free
loopback port with its data in its own temp directory; the shared servers
(127.0.0.1:5432, :3306) are never touched. The model is asyncpg's ``cluster.py``.

* ``initdb`` and ``mariadb-install-db`` run once per session into a template
  directory; each server gets a copy (``cp -a``), which takes a fraction of a second.
* PostgreSQL and pgbouncer refuse to run as root: when the tests run as root,
  they run as the ``postgres`` OS user (``runuser``) and their directories belong
  to it. ``mariadbd`` runs with ``--user=root`` then.
* Readiness is awaited properly (``pg_ctl -w``; a protocol greeting for MariaDB and
  pgbouncer), with a deadline, never a fixed sleep.
* Every process is killed and every directory removed at fixture teardown, even
  when the test failed.
* A missing binary skips the test, or fails it in CI (``CI=true``).

Tests using these fixtures are marked ``tempserver`` (``pgbouncer`` for pgbouncer)
automatically, so ``-m "not tempserver"`` deselects them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote, urlsplit

import pytest

from fix_servers import find_binary, require_binary, unavailable
from fix_tls import TLSFiles

__all__ = [
    "PgBouncer",
    "PgBouncerFactory",
    "TempMariaDB",
    "TempMariaDBFactory",
    "TempPostgres",
    "TempPostgresFactory",
    "TempServerError",
    "free_port",
]

StopMode = Literal["fast", "immediate"]
SettingValue = str | int | float | bool

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0
# Postgres and pgbouncer refuse to run as root; this OS user runs them then.
_PG_OS_USER = "postgres"


class TempServerError(RuntimeError):
    """A throwaway server could not be set up, started or stopped."""


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _is_root() -> bool:
    return os.geteuid() == 0


def _os_user_ids(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        unavailable(f"running as root but there is no {name!r} OS user to run the server as")
    return entry.pw_uid, entry.pw_gid


def _as_user(cmd: Sequence[str], user: str | None) -> list[str]:
    """Prefix ``cmd`` to run as OS ``user`` when we are root (else run it as ourselves)."""
    if user is None or not _is_root():
        return list(cmd)
    return [require_binary("runuser"), "-u", user, "--", *cmd]


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None or not _is_root():
        return
    uid, gid = _os_user_ids(user)
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _make_dir(prefix: str, owner: str | None) -> Path:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, which the postgres user cannot enter;
    # for the same reason a directory handed to another user goes to /tmp, not $TMPDIR.
    base = "/tmp" if owner is not None and _is_root() and os.path.isdir("/tmp") else None
    path = Path(tempfile.mkdtemp(prefix=f"poolkit-{prefix}-", dir=base))
    _chown_tree(path, owner)
    return path


def _clean_env() -> dict[str, str]:
    # Never let the developer's PG*/MYSQL* variables steer the helper commands.
    return {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL", "MARIADB"))}


def _run(
    cmd: Sequence[str],
    *,
    user: str | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 60.0,
) -> str:
    """Run ``cmd`` (as ``user`` when root) and return its stdout; raise with its output."""
    full = _as_user(cmd, user)
    try:
        proc = subprocess.run(
            full,
            input=stdin,
            capture_output=True,
            text=True,
            cwd=cwd,
            env=_clean_env(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TempServerError(f"{cmd[0]} timed out after {timeout}s") from exc
    if proc.returncode != 0:
        raise TempServerError(
            f"{' '.join(cmd[:2])} ... exited with {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc.stdout


def _tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


def _conf_value(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def _wait_for_greeting(
    port: int, probe: bytes, proc: subprocess.Popen[bytes] | None, log: Path, what: str
) -> None:
    """Poll until the server on ``port`` answers ``probe`` (maybe empty) with some bytes."""
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        if proc is not None and proc.poll() is not None:
            raise TempServerError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.settimeout(1.0)
                if probe:
                    sock.sendall(probe)
                if sock.recv(1):
                    return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise TempServerError(f"{what} not ready after {_START_TIMEOUT}s:\n{_tail(log)}")
        time.sleep(0.05)


# Servers not cleaned up yet: a safety net at interpreter exit (e.g. after Ctrl-C).
_live: set[_TempServer] = set()


@atexit.register
def _cleanup_leftovers() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.cleanup()


class _TempServer:
    """Common lifecycle of the throwaway servers: sync core, async wrappers."""

    kind = "server"
    host = "127.0.0.1"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.running = False
        self._removed = False
        _live.add(self)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"

    # Subclasses implement these two.
    def _start(self) -> None:
        raise NotImplementedError  # pragma: no cover

    def _stop(self, mode: StopMode) -> None:
        raise NotImplementedError  # pragma: no cover

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on."""
        return self.host, self.port

    def start_sync(self) -> None:
        """Start the server and wait until it accepts connections (no-op if running)."""
        if self._removed:
            raise TempServerError(f"{self!r} was cleaned up")
        if not self.running:
            self._start()
            self.running = True

    def stop_sync(self, mode: StopMode = "fast") -> None:
        """Stop the server (no-op if stopped).

        Args:
            mode: ``"fast"``: graceful, clients are disconnected cleanly; ``"immediate"``:
                abrupt (PostgreSQL immediate shutdown, SIGKILL for MariaDB/pgbouncer).
        """
        if mode not in ("fast", "immediate"):
            raise ValueError(f"stop mode must be 'fast' or 'immediate', got {mode!r}")
        if self.running:
            self._stop(mode)
            self.running = False

    def restart_sync(self, mode: StopMode = "fast") -> None:
        """Stop then start again on the same port (existing connections are dropped).

        Args:
            mode: How to stop, as in :meth:`stop_sync`.
        """
        self.stop_sync(mode)
        self.start_sync()

    async def start(self) -> None:
        """Start the server without blocking the event loop."""
        await asyncio.to_thread(self.start_sync)

    async def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server without blocking the event loop.

        Args:
            mode: ``"fast"`` (graceful) or ``"immediate"`` (abrupt).
        """
        await asyncio.to_thread(self.stop_sync, mode)

    async def restart(self, mode: StopMode = "fast") -> None:
        """Restart the server on the same port without blocking the event loop.

        Args:
            mode: How to stop, ``"fast"`` or ``"immediate"``.
        """
        await asyncio.to_thread(self.restart_sync, mode)

    def cleanup(self) -> None:
        """Kill the server whatever its state and delete its directory (idempotent)."""
        if self._removed:
            return
        try:
            self._kill()
        finally:
            self.running = False
            self._removed = True
            _live.discard(self)
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill(self) -> None:
        with contextlib.suppress(TempServerError, OSError):
            self._stop("immediate")


# ----------------------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str:
    return require_binary(name)


class TempPostgres(_TempServer):
    """A throwaway PostgreSQL cluster on a free port.

    Attributes:
        host: ``127.0.0.1``.
        port: TCP port (kept across restarts).
        user: Superuser name (``postgres``).
        database: Database of :attr:`dsn` (``test``, like the shared server).
        password: Password of :attr:`user` (TCP auth requires it), or None for trust auth.
        root: Temp directory holding ``data/``, ``sock/`` and ``postgres.log``.
    """

    kind = "postgres"

    def __init__(
        self,
        template: Path,
        *,
        max_connections: int = 20,
        password: str | None = None,
        auth_method: Literal["scram-sha-256", "md5"] = "scram-sha-256",
        tls: TLSFiles | None = None,
        tls_only: bool = False,
        settings: Mapping[str, SettingValue] | None = None,
    ) -> None:
        """Copy the template cluster and configure it (does not start it).

        Args:
            template: Data directory made by initdb (see the ``_pg_template`` fixture).
            max_connections: Server ``max_connections``.
            password: Set this password on ``postgres`` and require it over TCP
                (``auth_method``); None: trust auth.
            auth_method: Password method over TCP, ``"scram-sha-256"`` or ``"md5"``.
            tls: Certificate files: enables ``ssl = on``.
            tls_only: Reject TCP connections without TLS (needs ``tls``).
            settings: Extra ``postgresql.conf`` settings.
        """
        if tls_only and tls is None:
            raise ValueError("tls_only=True needs tls files")
        self.user = "postgres"
        self.database = "test"
        self.password = password
        self.tls = tls
        self._os_user = _PG_OS_USER if _is_root() else None
        super().__init__(_make_dir("pg", self._os_user))
        self.data = self.root / "data"
        self.sockdir = self.root / "sock"
        self.log = self.root / "postgres.log"
        self._password_set = False
        try:
            self._setup(template, max_connections, auth_method, tls_only, settings or {})
        except BaseException:
            self.cleanup()
            raise

    def _setup(
        self,
        template: Path,
        max_connections: int,
        auth_method: str,
        tls_only: bool,
        settings: Mapping[str, SettingValue],
    ) -> None:
        _run(["cp", "-a", str(template), str(self.data)])
        self.sockdir.mkdir(mode=0o700)
        conf: dict[str, SettingValue] = {
            "listen_addresses": self.host,
            "port": self.port,
            "unix_socket_directories": str(self.sockdir),
            "max_connections": max_connections,
            "shared_buffers": "16MB",
            "fsync": False,
            "synchronous_commit": False,
            "full_page_writes": False,
            "wal_level": "minimal",
            "max_wal_senders": 0,
            "logging_collector": False,
            "password_encryption": auth_method,
        }
        if self.tls is not None:
            shutil.copyfile(self.tls.cert, self.data / "server.crt")
            shutil.copyfile(self.tls.key, self.data / "server.key")
            os.chmod(self.data / "server.key", 0o600)
            conf.update(ssl=True, ssl_cert_file="server.crt", ssl_key_file="server.key")
        conf.update(settings)
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# poolkit test server\n")
            f.writelines(f"{key} = {_conf_value(value)}\n" for key, value in conf.items())
        method = "trust" if self.password is None else auth_method
        host_kind = "hostssl" if tls_only else "host"
        hba = [
            "local all all trust",
            f"{host_kind} all all 127.0.0.1/32 {method}",
            f"{host_kind} all all ::1/128 {method}",
        ]
        if tls_only:
            hba += ["hostnossl all all 127.0.0.1/32 reject", "hostnossl all all ::1/128 reject"]
        (self.data / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        _chown_tree(self.root, self._os_user)

    @property
    def dsn(self) -> str:
        """``postgresql://postgres[:password]@127.0.0.1:<port>/test``."""
        return self.make_dsn()

    def make_dsn(
        self, *, user: str | None = None, password: str | None = None, database: str | None = None
    ) -> str:
        """Return a DSN for this server, optionally with another user/password/database.

        Args:
            user: User name (default :attr:`user`).
            password: Password (default :attr:`password`); ``""`` for none; anything
                else, e.g. a wrong one, is put in the DSN as given.
            database: Database (default :attr:`database`).
        """
        pw = self.password if password is None else password
        auth = quote(user or self.user, safe="")
        if pw:
            auth += ":" + quote(pw, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{database or self.database}"

    def _pg_ctl(self, *args: str, timeout: float = 60.0) -> str:
        return _run(
            [_pg_bin("pg_ctl"), "-D", str(self.data), *args],
            user=self._os_user,
            cwd=self.root,
            timeout=timeout,
        )

    def _start(self) -> None:
        try:
            self._pg_ctl(
                "-l", str(self.log), "-w", "-t", str(int(_START_TIMEOUT)), "-s", "start",
                timeout=_START_TIMEOUT + 10,
            )  # fmt: skip
        except TempServerError as exc:
            raise TempServerError(f"{exc}\n--- postgres.log ---\n{_tail(self.log)}") from None
        if self.password is not None and not self._password_set:
            self.query_sync(f"ALTER ROLE postgres PASSWORD {_conf_value(self.password)}")
            self._password_set = True

    def _stop(self, mode: StopMode) -> None:
        self._pg_ctl(
            "-m", mode, "-w", "-t", str(int(_STOP_TIMEOUT)), "-s", "stop",
            timeout=_STOP_TIMEOUT + 10,
        )  # fmt: skip

    def _kill(self) -> None:
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists():
            return
        with contextlib.suppress(TempServerError, OSError):
            self._pg_ctl("-m", "immediate", "-w", "-t", "10", "-s", "stop", timeout=20)
            return
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGKILL)

    def query_sync(self, sql: str) -> str:
        """Run ``sql`` as superuser over the Unix socket (psql); return unaligned output.

        Args:
            sql: One SQL statement or several separated by ``;``.
        """
        return _run(
            [
                _pg_bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.sockdir), "-p", str(self.port), "-U", "postgres",
                "-d", "postgres", "-c", sql,
            ],
            user=self._os_user,
            cwd=self.root,
        ).strip()  # fmt: skip

    async def query(self, sql: str) -> str:
        """Async :meth:`query_sync` (runs psql in a thread).

        Args:
            sql: SQL to run as superuser.
        """
        return await asyncio.to_thread(self.query_sync, sql)

    async def client_connections(self) -> int:
        """Return how many client connections the server has open (psql's excluded)."""
        out = await self.query(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int(out)

    async def terminate_connections(self) -> int:
        """Kill every client connection server-side (``pg_terminate_backend``); return count."""
        out = await self.query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int(out)


# ----------------------------------------------------------------------------- MariaDB


class TempMariaDB(_TempServer):
    """A throwaway MariaDB server on a free port.

    ``root`` has an empty password (from 127.0.0.1 and ::1); with ``password`` set, a
    second user :attr:`password_user` is created that needs it.

    Attributes:
        host: ``127.0.0.1``.
        port: TCP port (kept across restarts).
        user: ``root``.
        database: ``test``.
        password: Password of :attr:`password_user`, or None.
        password_user: ``poolkit`` (all privileges), created when ``password`` is set.
        root: Temp directory holding ``data/``, the socket and ``mariadb.log``.
    """

    kind = "mariadb"
    password_user = "poolkit"

    def __init__(
        self,
        template: Path,
        *,
        max_connections: int = 50,
        password: str | None = None,
        tls: TLSFiles | None = None,
        settings: Mapping[str, SettingValue] | None = None,
    ) -> None:
        """Copy the template datadir (does not start the server).

        Args:
            template: Datadir made by mariadb-install-db (``_mariadb_template`` fixture).
            max_connections: Server ``max_connections``.
            password: Create user :attr:`password_user` with this password.
            tls: Certificate files: enables TLS (``--ssl-cert``/``--ssl-key``).
            settings: Extra server options, passed as ``--key=value``.
        """
        self.user = "root"
        self.database = "test"
        self.password = password
        self.tls = tls
        super().__init__(_make_dir("mariadb", None))
        self.data = self.root / "data"
        self.socket_path = self.root / "mysqld.sock"
        self.log = self.root / "mariadb.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._user_created = False
        self._options = {
            "max-connections": str(max_connections),
            **{k: _mysql_value(v) for k, v in (settings or {}).items()},
        }
        try:
            _run(["cp", "-a", str(template), str(self.data)])
        except BaseException:
            self.cleanup()
            raise

    @property
    def dsn(self) -> str:
        """``mysql://root@127.0.0.1:<port>/test`` (root, empty password)."""
        return self.make_dsn()

    @property
    def password_dsn(self) -> str:
        """DSN of :attr:`password_user` with the right password (needs ``password``)."""
        if self.password is None:
            raise TempServerError("this TempMariaDB has no password user: pass password=...")
        return self.make_dsn(user=self.password_user, password=self.password)

    def make_dsn(
        self, *, user: str | None = None, password: str | None = None, database: str | None = None
    ) -> str:
        """Return a DSN for this server, optionally with another user/password/database.

        Args:
            user: User name (default ``root``).
            password: Password, put in the DSN as given (default: none).
            database: Database (default ``test``).
        """
        auth = quote(user or self.user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        return f"mysql://{auth}@{self.host}:{self.port}/{database or self.database}"

    def _command(self) -> list[str]:
        cmd = [
            require_binary("mariadbd"),
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.root / 'mariadbd.pid'}",
            f"--log-error={self.log}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--performance-schema=OFF",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=4M",
            "--innodb-flush-log-at-trx-commit=0",
            "--open-files-limit=4096",
        ]
        if _is_root():
            cmd.append("--user=root")
        if self.tls is not None:
            cmd += [
                f"--ssl-cert={self.tls.cert}",
                f"--ssl-key={self.tls.key}",
                f"--ssl-ca={self.tls.ca}",
            ]
        cmd += [f"--{k}={v}" for k, v in self._options.items()]
        return cmd

    def _start(self) -> None:
        with open(self.root / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=_clean_env(),
            )
        try:
            _wait_for_greeting(self.port, b"", self._proc, self.log, "mariadbd")
            if self.password is not None and not self._user_created:
                pw = _mysql_string(self.password)
                self.query_sync(
                    f"CREATE USER '{self.password_user}'@'127.0.0.1' IDENTIFIED BY {pw};"
                    f"CREATE USER '{self.password_user}'@'::1' IDENTIFIED BY {pw};"
                    f"GRANT ALL ON *.* TO '{self.password_user}'@'127.0.0.1';"
                    f"GRANT ALL ON *.* TO '{self.password_user}'@'::1';"
                )
                self._user_created = True
        except BaseException:
            self._stop("immediate")
            raise

    def _stop(self, mode: StopMode) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _end_process(proc, signal.SIGKILL if mode == "immediate" else signal.SIGTERM)

    def _kill(self) -> None:
        self._stop("immediate")

    def query_sync(self, sql: str) -> str:
        """Run ``sql`` as root over the Unix socket (``mariadb`` client); return its output.

        Args:
            sql: SQL statements separated by ``;``.
        """
        client = find_binary("mariadb") or require_binary("mysql")
        return _run(
            [client, "--no-defaults", "-S", str(self.socket_path), "-u", "root", "-N", "-B",
             "-e", sql],
            cwd=self.root,
        ).strip()  # fmt: skip

    async def query(self, sql: str) -> str:
        """Async :meth:`query_sync` (runs the client in a thread).

        Args:
            sql: SQL to run as root.
        """
        return await asyncio.to_thread(self.query_sync, sql)

    async def client_connections(self) -> int:
        """Return how many client connections the server has open (the client's excluded)."""
        out = await self.query(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon', 'Killed') "
            "AND USER NOT IN ('system user', 'event_scheduler')"
        )
        return int(out)

    async def terminate_connections(self) -> int:
        """Kill every client connection server-side (``KILL``); return how many."""
        ids = await self.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() "
            "AND COMMAND NOT IN ('Daemon', 'Killed') "
            "AND USER NOT IN ('system user', 'event_scheduler')"
        )
        killed = 0
        for thread_id in (int(i) for i in ids.split()):
            try:
                await self.query(f"KILL CONNECTION {thread_id}")
            except TempServerError:  # it ended by itself meanwhile ("Unknown thread id")
                continue
            killed += 1
        return killed


def _mysql_value(value: SettingValue) -> str:
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    return str(value)


def _mysql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _end_process(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal ``proc``, wait for it (SIGKILL after the stop timeout) and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ----------------------------------------------------------------------------- pgbouncer


_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


class PgBouncer(_TempServer):
    """A throwaway pgbouncer (transaction pooling by default) in front of one database.

    Attributes:
        host: ``127.0.0.1``.
        port: Port pgbouncer listens on.
        database: Database name clients use (same as the target's).
        user: User clients and pgbouncer use.
        password: Password pgbouncer uses towards the server, or None.
        root: Temp directory holding ``pgbouncer.ini`` and ``pgbouncer.log``.
    """

    kind = "pgbouncer"

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        database: str = "test",
        user: str = "postgres",
        password: str | None = None,
        pool_mode: Literal["transaction", "session", "statement"] = "transaction",
        pool_size: int = 5,
        settings: Mapping[str, SettingValue] | None = None,
    ) -> None:
        """Write the configuration (does not start pgbouncer).

        Args:
            target_host: PostgreSQL host (loopback).
            target_port: PostgreSQL port.
            database: Database to expose (and connect to on the server).
            user: User for the server connections; clients connect as it too (trust).
            password: Password pgbouncer sends to the server, if it needs one.
            pool_mode: pgbouncer ``pool_mode``.
            pool_size: ``default_pool_size`` (server connections per user/database).
            settings: Extra ``[pgbouncer]`` settings.
        """
        self.database = database
        self.user = user
        self.password = password
        self._os_user = _PG_OS_USER if _is_root() else None
        super().__init__(_make_dir("pgbouncer", self._os_user))
        self.log = self.root / "pgbouncer.log"
        self.config = self.root / "pgbouncer.ini"
        self._proc: subprocess.Popen[bytes] | None = None
        target = f"host={target_host} port={target_port} dbname={database} user={user}"
        if password is not None:
            target += f" password={password}"
        conf: dict[str, SettingValue] = {
            "listen_addr": self.host,
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.root / "userlist.txt"),
            "pool_mode": pool_mode,
            "default_pool_size": pool_size,
            "max_client_conn": 200,
            "logfile": str(self.log),
            "admin_users": user,
            "ignore_startup_parameters": "extra_float_digits",
            **(settings or {}),
        }
        lines = ["[databases]", f"{database} = {target}", "", "[pgbouncer]"]
        lines += [f"{k} = {v}" for k, v in conf.items()]
        self.config.write_text("\n".join(lines) + "\n")
        os.chmod(self.config, 0o600)
        (self.root / "userlist.txt").write_text(f'"{user}" ""\n')
        _chown_tree(self.root, self._os_user)

    @property
    def dsn(self) -> str:
        """``postgresql://<user>@127.0.0.1:<port>/<database>`` (through pgbouncer)."""
        return f"postgresql://{quote(self.user, safe='')}@{self.host}:{self.port}/{self.database}"

    @property
    def admin_dsn(self) -> str:
        """DSN of the pgbouncer admin console (``SHOW POOLS`` etc.; simple protocol only)."""
        return f"postgresql://{quote(self.user, safe='')}@{self.host}:{self.port}/pgbouncer"

    def _start(self) -> None:
        cmd = [require_binary("pgbouncer")]
        if self._os_user is not None:
            cmd += ["-u", self._os_user]  # pgbouncer drops root itself: signals reach it
        cmd.append(str(self.config))
        with open(self.root / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=_clean_env(),
            )
        try:
            _wait_for_greeting(self.port, _SSL_REQUEST, self._proc, self.log, "pgbouncer")
        except BaseException:
            self._stop("immediate")
            raise

    def _stop(self, mode: StopMode) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # SIGTERM: pgbouncer's immediate shutdown (SIGINT would wait for clients).
        _end_process(proc, signal.SIGKILL if mode == "immediate" else signal.SIGTERM)

    def _kill(self) -> None:
        self._stop("immediate")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def _pg_template() -> Iterator[Path]:
    """Session template cluster: initdb once (plus database ``test``); servers copy it."""
    initdb = require_binary("initdb")
    postgres = require_binary("postgres")
    for name in ("pg_ctl", "psql"):
        require_binary(name)
    os_user = _PG_OS_USER if _is_root() else None
    root = _make_dir("pgtemplate", os_user)
    data = root / "data"
    try:
        _run(
            [initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--locale=C", "--no-sync", "--no-instructions"],
            user=os_user,
            cwd=root,
            timeout=120,
        )  # fmt: skip
        # Single-user mode: no server to start, no port needed.
        _run(
            [postgres, "--single", "-D", str(data), "-c", "fsync=off", "postgres"],
            user=os_user,
            cwd=root,
            stdin="CREATE DATABASE test;\n",
        )
        yield data
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def _mariadb_template() -> Iterator[Path]:
    """Session template datadir: mariadb-install-db once (plus database ``test``)."""
    install = find_binary("mariadb-install-db") or require_binary("mysql_install_db")
    mariadbd = require_binary("mariadbd")
    root = _make_dir("mariadbtemplate", None)
    data = root / "data"
    user = ["--user=root"] if _is_root() else []
    small = ["--innodb-buffer-pool-size=16M", "--innodb-log-file-size=4M"]
    try:
        _run(
            [install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
             "--skip-test-db", "--skip-name-resolve", *user, *small],
            cwd=root,
            timeout=120,
        )  # fmt: skip
        _run(
            [mariadbd, "--no-defaults", "--bootstrap", f"--datadir={data}", *user, *small,
             "--skip-networking", f"--log-error={root / 'bootstrap.log'}"],
            cwd=root,
            stdin="CREATE DATABASE test;\n",
        )  # fmt: skip
        yield data
    finally:
        shutil.rmtree(root, ignore_errors=True)


class TempPostgresFactory(Protocol):
    """Type of ``temp_postgres_factory``: returns a *started* :class:`TempPostgres`."""

    def __call__(
        self,
        *,
        max_connections: int = 20,
        password: str | None = None,
        auth_method: Literal["scram-sha-256", "md5"] = "scram-sha-256",
        tls: TLSFiles | None = None,
        tls_only: bool = False,
        settings: Mapping[str, SettingValue] | None = None,
    ) -> TempPostgres:
        """Create and start a server; it is removed at test teardown."""
        ...


class TempMariaDBFactory(Protocol):
    """Type of ``temp_mariadb_factory``: returns a *started* :class:`TempMariaDB`."""

    def __call__(
        self,
        *,
        max_connections: int = 50,
        password: str | None = None,
        tls: TLSFiles | None = None,
        settings: Mapping[str, SettingValue] | None = None,
    ) -> TempMariaDB:
        """Create and start a server; it is removed at test teardown."""
        ...


class PgBouncerFactory(Protocol):
    """Type of ``pgbouncer_factory``: returns a *started* :class:`PgBouncer`."""

    def __call__(
        self,
        target_host: str,
        target_port: int,
        *,
        database: str = "test",
        user: str = "postgres",
        password: str | None = None,
        pool_mode: Literal["transaction", "session", "statement"] = "transaction",
        pool_size: int = 5,
        settings: Mapping[str, SettingValue] | None = None,
    ) -> PgBouncer:
        """Create and start a pgbouncer; it is removed at test teardown."""
        ...


@pytest.fixture
def temp_postgres_factory(_pg_template: Path) -> Iterator[TempPostgresFactory]:
    """Factory of started throwaway PostgreSQL servers, all removed at teardown.

    Blocking (about half a second): call it before the code under test runs.
    """
    servers: list[TempPostgres] = []

    def make(
        *,
        max_connections: int = 20,
        password: str | None = None,
        auth_method: Literal["scram-sha-256", "md5"] = "scram-sha-256",
        tls: TLSFiles | None = None,
        tls_only: bool = False,
        settings: Mapping[str, SettingValue] | None = None,
    ) -> TempPostgres:
        server = TempPostgres(
            _pg_template,
            max_connections=max_connections,
            password=password,
            auth_method=auth_method,
            tls=tls,
            tls_only=tls_only,
            settings=settings,
        )
        servers.append(server)
        server.start_sync()
        return server

    try:
        yield make
    finally:
        _cleanup_all(servers)


@pytest.fixture
def temp_postgres(temp_postgres_factory: TempPostgresFactory) -> TempPostgres:
    """A started throwaway PostgreSQL server (trust auth, database ``test``)."""
    return temp_postgres_factory()


@pytest.fixture
def temp_mariadb_factory(_mariadb_template: Path) -> Iterator[TempMariaDBFactory]:
    """Factory of started throwaway MariaDB servers, all removed at teardown."""
    servers: list[TempMariaDB] = []

    def make(
        *,
        max_connections: int = 50,
        password: str | None = None,
        tls: TLSFiles | None = None,
        settings: Mapping[str, SettingValue] | None = None,
    ) -> TempMariaDB:
        server = TempMariaDB(
            _mariadb_template,
            max_connections=max_connections,
            password=password,
            tls=tls,
            settings=settings,
        )
        servers.append(server)
        server.start_sync()
        return server

    try:
        yield make
    finally:
        _cleanup_all(servers)


@pytest.fixture
def temp_mariadb(temp_mariadb_factory: TempMariaDBFactory) -> TempMariaDB:
    """A started throwaway MariaDB server (root without password, database ``test``)."""
    return temp_mariadb_factory()


@pytest.fixture
def pgbouncer_factory() -> Iterator[PgBouncerFactory]:
    """Factory of started pgbouncers in front of a given PostgreSQL, removed at teardown."""
    require_binary("pgbouncer")
    bouncers: list[PgBouncer] = []

    def make(
        target_host: str,
        target_port: int,
        *,
        database: str = "test",
        user: str = "postgres",
        password: str | None = None,
        pool_mode: Literal["transaction", "session", "statement"] = "transaction",
        pool_size: int = 5,
        settings: Mapping[str, SettingValue] | None = None,
    ) -> PgBouncer:
        bouncer = PgBouncer(
            target_host,
            target_port,
            database=database,
            user=user,
            password=password,
            pool_mode=pool_mode,
            pool_size=pool_size,
            settings=settings,
        )
        bouncers.append(bouncer)
        bouncer.start_sync()
        return bouncer

    try:
        yield make
    finally:
        _cleanup_all(bouncers)


@pytest.fixture
def pgbouncer(pg_dsn: str, pgbouncer_factory: PgBouncerFactory) -> PgBouncer:
    """A started pgbouncer (transaction mode) in front of the shared PostgreSQL's database."""
    parts = urlsplit(pg_dsn)
    return pgbouncer_factory(
        parts.hostname or "127.0.0.1",
        parts.port or 5432,
        database=parts.path.lstrip("/") or "postgres",
        user=parts.username or "postgres",
        password=parts.password,
    )


def _cleanup_all(servers: Sequence[_TempServer]) -> None:
    errors: list[BaseException] = []
    for server in reversed(servers):
        try:
            server.cleanup()
        except (TempServerError, OSError) as exc:  # keep cleaning the others
            errors.append(exc)
    if errors:
        raise errors[0]


_TEMPSERVER_FIXTURES = frozenset(
    {"temp_postgres", "temp_postgres_factory", "temp_mariadb", "temp_mariadb_factory"}
)
_PGBOUNCER_FIXTURES = frozenset({"pgbouncer", "pgbouncer_factory"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that use the throwaway servers ``tempserver`` / ``pgbouncer``."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _TEMPSERVER_FIXTURES:
            item.add_marker(pytest.mark.tempserver)
        if names & _PGBOUNCER_FIXTURES:
            item.add_marker(pytest.mark.pgbouncer)
