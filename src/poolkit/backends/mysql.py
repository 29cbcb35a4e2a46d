"""MySQL and MariaDB over aiomysql: the connector, DSN parsing, ``create_pool`` and ``MySQLPool``.

Design notes (why the code reaches into aiomysql's protocol machinery):

* **Connect.** aiomysql's ``_connect`` cleans up only after an ``Exception``: a connect cut off
  by the pool's ``connect_timeout`` (a cancellation) would leak its socket. We build the
  ``Connection`` ourselves and abort it on *any* failure, cancellation included. The
  pool's session settings (charset/collation, autocommit, time zone, sql_mode, init commands)
  are applied in one multi-statement round trip instead of aiomysql's two or three.
* **Reset "clean".** aiomysql has no API for ``COM_RESET_CONNECTION`` (command ``0x1f``), which
  clears user variables, temporary tables, session variables, named locks, prepared statements
  and any open transaction without re-authenticating. We write that command packet and the
  query packet that re-applies the pool's session settings in one ``write()`` (pipelined), then
  read both answers: a full reset costs one round trip. A server without the command (MySQL
  < 5.7.3, MariaDB < 10.2.4) answers with error 1047; from then on every reset fails at once, so
  the pool closes the connection instead of handing on a dirty one.
* **needs_reset.** Under ``"rollback"`` a release skips the reset task when the server's last
  status (``SERVER_STATUS_IN_TRANS``/``SERVER_STATUS_AUTOCOMMIT`` from the last OK packet)
  proves the connection holds no transaction. aiomysql does not record the status of the EOF
  packet that ends a result set, so with autocommit off we always reset.
* **abort.** ``Connection.close()`` calls ``transport.close()``, which raises once the event
  loop is closed. ``abort`` detaches the stream from the connection first, then aborts the
  transport, or closes the socket itself when the loop is gone, so it never raises or warns.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import re
import ssl as ssl_module
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, quote, unquote, urlsplit

try:
    import aiomysql
    from aiomysql.connection import DEFAULT_USER
    from pymysql.charset import charset_by_name
    from pymysql.constants import SERVER_STATUS
    from pymysql.err import MySQLError, raise_mysql_exception
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("poolkit.mysql requires `pip install poolkit[mysql]`") from exc

from poolkit import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    ConnectionBroken,
    Pool,
    PoolConfig,
    TLSError,
)
from poolkit.backends._errors import caused_by_tls_error, with_root_cause

__all__ = (
    "COM_RESET_CONNECTION",
    "MySQLConnection",
    "MySQLConnector",
    "MySQLPool",
    "ResetPolicy",
    "create_pool",
    "parse_dsn",
)

logger = logging.getLogger("poolkit.mysql")

#: The connection type the pool hands out (``aiomysql.Connection``).
MySQLConnection: TypeAlias = aiomysql.Connection

#: ``"clean"`` (COM_RESET_CONNECTION + session settings), ``"rollback"`` (only when a transaction
#: may be open) or an async callable taking the connection.
ResetPolicy: TypeAlias = Literal["clean", "rollback"] | Callable[[MySQLConnection], Awaitable[None]]

#: The MySQL protocol command that resets a session without re-authenticating.
COM_RESET_CONNECTION = 0x1F
_COM_QUERY = 0x03
_MAX_PAYLOAD = 0xFFFFFF - 1

_SCHEMES = ("mysql", "mariadb")
_DSN_PARAMS = (
    "autocommit",
    "charset",
    "collation",
    "init_command",
    "sql_mode",
    "ssl",
    "ssl_ca",
    "time_zone",
    "unix_socket",
)
# Server error codes that mean "these credentials are refused": retrying cannot help.
_AUTH_ERRORS = frozenset(
    {
        1044,  # ER_DBACCESS_DENIED_ERROR
        1045,  # ER_ACCESS_DENIED_ERROR
        1251,  # ER_NOT_SUPPORTED_AUTH_MODE
        1698,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
        1820,  # ER_MUST_CHANGE_PASSWORD
        1862,  # ER_MUST_CHANGE_PASSWORD_LOGIN
        2059,  # CR_AUTH_PLUGIN_CANNOT_LOAD
    }
)
_ER_UNKNOWN_COM_ERROR = 1047

_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_TIME_ZONE = re.compile(r"^(?:[+-]\d{1,2}:\d{2}|[A-Za-z][A-Za-z0-9_/+\-]*)$")
_SQL_MODE = re.compile(r"^[A-Za-z_,]*$")

# aiomysql.Connection parameters the connector sets itself; the others may be passed through
# (create_pool(**options) routes them, MySQLConnector(connect_kwargs=...) takes them).
_MANAGED = frozenset(
    {
        "host",
        "port",
        "user",
        "password",
        "db",
        "unix_socket",
        "ssl",
        "charset",
        "autocommit",
        "sql_mode",
        "init_command",
        "connect_timeout",
        "loop",
        "self",
    }
)
_DRIVER_PARAMS = frozenset(inspect.signature(aiomysql.Connection.__init__).parameters) - _MANAGED


def _pending_result(conn: MySQLConnection) -> bool:
    result = conn._result
    return result is not None and bool(result.unbuffered_active or result.has_next)


class MySQLConnector:
    """Opens, checks, resets and closes aiomysql connections for a :class:`~poolkit.Pool`.

    Most code calls :func:`create_pool`; build a connector directly to share one between pools
    or to pass it to a :class:`~poolkit.KeyedPool` factory.

    Args:
        host: server host name or address.
        port: server TCP port.
        user: user name (aiomysql's default, the OS user, when ``None``).
        password: password; never shown in reprs, logs or errors.
        db: default database, re-selected by the ``"clean"`` reset.
        unix_socket: path of a Unix socket to use instead of TCP.
        ssl: an :class:`ssl.SSLContext`, ``True`` for a default verifying context, or
            ``None``/``False`` for plain TCP. With TLS asked for, a server that does not offer
            it fails the connect with :class:`~poolkit.TLSError` (aiomysql alone would silently
            carry on in clear text).
        charset: connection character set (``SET NAMES``).
        collation: connection collation, or ``None`` for the charset's default.
        autocommit: session autocommit mode.
        time_zone: session ``time_zone`` (``"+00:00"``, ``"SYSTEM"``, ``"Europe/Paris"``), or
            ``None`` for the server's.
        sql_mode: session ``sql_mode``, or ``None`` for the server's.
        init_command: SQL statement(s) run on every new connection and after every ``"clean"``
            reset.
        reset: what a release does: ``"clean"`` (default), ``"rollback"`` or an async callable.
        connect_timeout: bound on the TCP connect inside aiomysql (the pool bounds the whole
            connect with its own ``connect_timeout`` as well).
        connect_kwargs: further keyword arguments for :class:`aiomysql.Connection` (for
            example ``program_name``, ``local_infile``, ``cursorclass``).

    Raises:
        ConfigError: an option is invalid; the message names it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 3306,
        user: str | None = None,
        password: str = "",
        db: str | None = None,
        unix_socket: str | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        charset: str = "utf8mb4",
        collation: str | None = None,
        autocommit: bool = True,
        time_zone: str | None = None,
        sql_mode: str | None = None,
        init_command: str | Sequence[str] | None = None,
        reset: ResetPolicy = "clean",
        connect_timeout: float | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        _check_str("host", host)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError("port", port, "must be an integer between 1 and 65535")
        if user is not None:
            _check_str("user", user)
        if not isinstance(password, str):
            raise ConfigError("password", password, "must be a string")
        if db is not None:
            _check_str("db", db)
        if unix_socket is not None:
            _check_str("unix_socket", unix_socket)
        if not isinstance(autocommit, bool):
            raise ConfigError("autocommit", autocommit, "must be True or False")
        if not isinstance(charset, str) or not _NAME.match(charset):
            raise ConfigError("charset", charset, "must be a character set name like 'utf8mb4'")
        try:
            known = charset_by_name(charset)
        except KeyError:
            known = None
        if known is None:
            raise ConfigError("charset", charset, "is not a character set aiomysql knows")
        encoding = known.encoding
        if collation is not None and (not isinstance(collation, str) or not _NAME.match(collation)):
            raise ConfigError("collation", collation, "must be a collation name")
        if time_zone is not None and (
            not isinstance(time_zone, str) or not _TIME_ZONE.match(time_zone)
        ):
            raise ConfigError(
                "time_zone", time_zone, "must look like '+00:00', 'SYSTEM' or 'Europe/Paris'"
            )
        if sql_mode is not None and (
            not isinstance(sql_mode, str) or not _SQL_MODE.match(sql_mode)
        ):
            raise ConfigError("sql_mode", sql_mode, "must be a comma-separated list of modes")
        if not (reset in ("clean", "rollback") or (callable(reset) and not isinstance(reset, str))):
            raise ConfigError("reset", reset, 'must be "clean", "rollback" or an async callable')
        if connect_timeout is not None and (
            isinstance(connect_timeout, bool)
            or not isinstance(connect_timeout, int | float)
            or connect_timeout <= 0
        ):
            raise ConfigError("connect_timeout", connect_timeout, "must be a positive number")
        extra = dict(connect_kwargs or {})
        for key, value in extra.items():
            if key not in _DRIVER_PARAMS:
                raise ConfigError(
                    key, value, "is not an aiomysql.Connection parameter poolkit passes through"
                )

        self._host = host
        self._port = port
        self._user = user
        self._password = password
        self._db = db
        self._unix_socket = unix_socket
        self._ssl = _ssl_context(ssl)
        self._charset = charset
        self._encoding = encoding
        self._autocommit = autocommit
        self._reset_policy = reset
        self._connect_timeout = connect_timeout
        self._connect_kwargs = extra
        self._init_commands = _init_commands(init_command)
        self._reset_unsupported = False

        settings = [f"NAMES '{charset}'" + (f" COLLATE '{collation}'" if collation else "")]
        settings.append(f"autocommit={int(autocommit)}")
        if time_zone is not None:
            settings.append(f"time_zone='{time_zone}'")
        if sql_mode is not None:
            settings.append(f"sql_mode='{sql_mode}'")
        setup = "SET " + ", ".join(settings)
        # Sent once per new connection, in one round trip.
        self._connect_sql = ";\n".join([setup, *self._init_commands])
        # Sent after COM_RESET_CONNECTION (which keeps the current database, so restore it).
        use_db = ["USE `" + db.replace("`", "``") + "`"] if db else []
        reset_sql = ";\n".join([setup, *use_db, *self._init_commands]).encode(encoding)
        if len(reset_sql) + 1 > _MAX_PAYLOAD:
            raise ConfigError("init_command", "...", "session setup exceeds one protocol packet")
        query_len = len(reset_sql) + 1
        # Two command packets, sequence id 0 each: [len:3][seq:1][command][payload].
        self._reset_payload = (
            b"\x01\x00\x00\x00"
            + bytes([COM_RESET_CONNECTION])
            + query_len.to_bytes(3, "little")
            + b"\x00"
            + bytes([_COM_QUERY])
            + reset_sql
        )

    # -- configuration views ------------------------------------------------------------------

    @property
    def reset_policy(self) -> ResetPolicy:
        """The reset policy given at construction."""
        return self._reset_policy

    @property
    def autocommit(self) -> bool:
        """The session autocommit mode the pool keeps."""
        return self._autocommit

    def describe(self) -> str:
        """Return the redacted target, e.g. ``mysql://app@db.internal:3306/shop``."""
        user = quote(self._user if self._user is not None else DEFAULT_USER, safe="")
        db = "/" + quote(self._db, safe="") if self._db else ""
        if self._unix_socket is not None:
            return f"mysql://{user}@localhost{db}?unix_socket={quote(self._unix_socket)}"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"mysql://{user}@{host}:{self._port}{db}"

    def __repr__(self) -> str:
        policy = self._reset_policy if isinstance(self._reset_policy, str) else "custom"
        return f"<MySQLConnector {self.describe()} reset={policy}>"

    # -- Connector protocol ---------------------------------------------------------------------

    async def connect(self) -> MySQLConnection:
        """Open one connection and apply the session settings.

        Returns:
            A connected :class:`aiomysql.Connection`.

        Raises:
            AuthenticationError: the server refused the credentials (error 1045 and kin).
            TLSError: the TLS handshake failed, or TLS was asked for and the server lacks it.
            ConnectError: any other failure; the driver's exception is chained.
        """
        conn = aiomysql.Connection(
            host=self._host,
            port=self._port,
            user=self._user,
            password=self._password,
            db=self._db,
            unix_socket=self._unix_socket,
            charset=self._charset,
            autocommit=None,  # set below with the other settings, in the same round trip
            ssl=self._ssl,
            connect_timeout=self._connect_timeout,
            **self._connect_kwargs,
        )
        try:
            await conn._connect()
            if self._ssl is not None and not conn._secure:
                raise TLSError(
                    f"cannot connect to {self.describe()}: TLS was requested but the server "
                    "does not support it",
                    target=self.describe(),
                )
            await conn.query(self._connect_sql)
            while conn._result is not None and conn._result.has_next:
                await conn.next_result()
        except BaseException as exc:
            self.abort(conn)
            if isinstance(exc, Exception) and not isinstance(exc, ConnectError):
                raise self._connect_error(exc) from exc
            raise
        conn.autocommit_mode = self._autocommit
        return conn

    async def check(self, conn: MySQLConnection) -> None:
        """Raise if ``conn`` is dead: its socket state first (free), then ``COM_PING``."""
        if self.is_closed(conn):
            raise ConnectionBroken(f"connection to {self.describe()} is closed")
        await conn.ping(reconnect=False)

    async def reset(self, conn: MySQLConnection) -> None:
        """Clean ``conn`` for its next borrower according to the reset policy.

        Raises:
            Exception: the reset failed; the pool then closes the connection.
        """
        policy = self._reset_policy
        await self._finish_results(conn)
        if not isinstance(policy, str):
            await policy(conn)
        elif policy == "clean":
            await self._reset_clean(conn)
        elif self.needs_reset(conn):
            await conn.query("ROLLBACK;\nSET autocommit=" + str(int(self._autocommit)))
            while conn._result is not None and conn._result.has_next:
                await conn.next_result()

    async def close(self, conn: MySQLConnection) -> None:
        """Send ``COM_QUIT`` and close the socket; abort instead when the peer is gone.

        Never raises for a dead connection; a cancellation aborts the socket and propagates.
        """
        if self.is_closed(conn):
            self.abort(conn)
            return
        try:
            await conn.ensure_closed()
        except asyncio.CancelledError:
            self.abort(conn)
            raise
        except Exception:  # the contract: closing a dead connection never raises
            self.abort(conn)

    # -- optional capabilities ------------------------------------------------------------------

    def is_closed(self, conn: MySQLConnection) -> bool:
        """Return ``True`` if ``conn``'s socket is known dead (no I/O)."""
        reader = conn._reader
        writer = conn._writer
        if reader is None or writer is None:
            return True
        if writer.transport.is_closing() or reader.exception() is not None:
            return True
        # The server closed (KILL, wait_timeout, shutdown) or sent an unsolicited error packet.
        return bool(getattr(reader, "eof_received", False) or reader.at_eof())

    def needs_reset(self, conn: MySQLConnection) -> bool:
        """Return ``False`` when a release may skip the reset task (``"rollback"`` policy only)."""
        if self._reset_policy != "rollback":
            return True
        if _pending_result(conn):
            return True
        status = conn.server_status
        return bool(status & SERVER_STATUS.SERVER_STATUS_IN_TRANS) or not (
            status & SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT
        )

    def abort(self, conn: MySQLConnection) -> None:
        """Close ``conn``'s socket now, without awaiting; works even when the loop is closed."""
        writer = conn._writer
        conn._writer = None
        conn._reader = None
        if conn._close_reason is None:
            conn._close_reason = "Connection aborted by the pool"
        if writer is None:
            return
        _abort_transport(writer.transport, conn.loop)

    # -- internals ------------------------------------------------------------------------------

    async def _finish_results(self, conn: MySQLConnection) -> None:
        result = conn._result
        if result is None:
            return
        if result.unbuffered_active:
            # Draining an unread server-side cursor could mean reading a huge result: discard.
            raise ConnectionBroken("an unbuffered result was left unread; discarding connection")
        while conn._result is not None and conn._result.has_next:
            await conn.next_result()
        conn._result = None

    async def _reset_clean(self, conn: MySQLConnection) -> None:
        if self._reset_unsupported:
            raise ConnectionBroken(
                f"{self.describe()} does not support COM_RESET_CONNECTION; "
                "closing the connection instead of resetting it"
            )
        conn._ensure_alive()
        conn._writer.write(self._reset_payload)
        try:
            if self._init_commands:
                # Arbitrary init commands may return result sets: use aiomysql's reader.
                conn._next_seq_id = 1
                await conn._read_ok_packet()
                conn._next_seq_id = 1
                await conn._read_query_result()
                while conn._result is not None and conn._result.has_next:
                    await conn.next_result()
            else:
                await _read_ok_replies(conn)
        except MySQLError as exc:
            if exc.args and exc.args[0] == _ER_UNKNOWN_COM_ERROR:
                self._reset_unsupported = True
                logger.warning(
                    "%s does not support COM_RESET_CONNECTION: connections are closed at "
                    'release instead of reset (use reset="rollback" to keep them)',
                    self.describe(),
                )
            raise
        conn._result = None
        # The session is back to the pool's settings: so is aiomysql's view of it (a borrower
        # may have called conn.autocommit() or conn.set_charset()).
        conn.autocommit_mode = self._autocommit
        conn._charset = self._charset
        conn._encoding = self._encoding

    def _connect_error(self, exc: Exception) -> ConnectError:
        target = self.describe()
        code = exc.args[0] if isinstance(exc, MySQLError) and exc.args else None
        reason = self._scrub(_reason(exc))
        cls: type[ConnectError]
        if isinstance(code, int) and code in _AUTH_ERRORS:
            cls = AuthenticationError
        elif caused_by_tls_error(exc):
            cls = TLSError
        else:
            cls = ConnectError
        return cls(f"cannot connect to {target}: {reason}", target=target)

    def _scrub(self, text: str) -> str:
        if self._password and len(self._password) >= 3:
            text = text.replace(self._password, "***")
        return text


async def _read_ok_replies(conn: MySQLConnection) -> None:
    """Read the OK replies to a pipelined reset: COM_RESET_CONNECTION's, then one per statement.

    The reset SQL holds only ``SET``/``USE`` statements, whose replies are OK or error packets,
    so a few lines parse them; this is the hot path of every release under ``"clean"``.
    """
    reader = conn._reader
    first = True
    while True:
        header = await reader.readexactly(4)
        body = await reader.readexactly(header[0] | header[1] << 8 | header[2] << 16)
        if body[:1] == b"\xff":
            raise_mysql_exception(body)
        if body[:1] != b"\x00":
            raise ConnectionBroken(f"unexpected reply to the session reset: {body[:1]!r}")
        # OK packet: 0x00, affected rows (lenenc), last insert id (lenenc), status (2 bytes).
        i = 1 + _LENENC_SIZE.get(body[1], 1)
        i += _LENENC_SIZE.get(body[i], 1)
        status = body[i] | body[i + 1] << 8
        if not first and not status & SERVER_STATUS.SERVER_MORE_RESULTS_EXISTS:
            conn.server_status = status
            return
        first = False


# Size of a length-encoded integer by its first byte (1 when the byte is the value itself).
_LENENC_SIZE = {0xFC: 3, 0xFD: 4, 0xFE: 9}


def _abort_transport(transport: asyncio.BaseTransport, loop: asyncio.AbstractEventLoop) -> None:
    # Marks the transport closing even when the loop is closed (then scheduling the
    # connection_lost callback raises RuntimeError, ignored: the socket is closed below).
    with contextlib.suppress(Exception):
        transport.abort()  # type: ignore[attr-defined]
    if not loop.is_closed():
        return
    # The loop is closed: no callback will ever run, so release the file descriptor here. An SSL
    # transport wraps the socket transport; reach the latter.
    inner: Any = transport
    protocol = getattr(inner, "_ssl_protocol", None)
    if protocol is not None:
        inner = getattr(protocol, "_transport", None) or inner
    sock = getattr(inner, "_sock", None)
    if sock is not None:
        with contextlib.suppress(Exception):
            sock.close()
        with contextlib.suppress(Exception):
            inner._sock = None  # nothing left for the transport's __del__ to warn about


def _reason(exc: BaseException) -> str:
    """One line naming the failure, following the chain to its root (OSError, SSL error)."""
    if isinstance(exc, MySQLError) and len(exc.args) >= 2:
        text = f"[{exc.args[0]}] {exc.args[1]}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return with_root_cause(text, exc)


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(name, value, "must be a non-empty string")


def _ssl_context(value: object) -> ssl_module.SSLContext | None:
    if value is None or value is False:
        return None
    if value is True:
        return ssl_module.create_default_context()
    if isinstance(value, ssl_module.SSLContext):
        return value
    raise ConfigError("ssl", value, "must be an ssl.SSLContext, True, False or None")


def _init_commands(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    commands = (value,) if isinstance(value, str) else tuple(value)
    for command in commands:
        if not isinstance(command, str) or not command.strip():
            raise ConfigError("init_command", command, "must be a non-empty SQL string")
    return tuple(c.strip().rstrip(";") for c in commands)


# -- DSN ----------------------------------------------------------------------------------------


def parse_dsn(dsn: str) -> dict[str, Any]:
    """Split a ``mysql://`` or ``mariadb://`` DSN into :class:`MySQLConnector` keyword arguments.

    ``mysql://user:password@host:port/db?charset=utf8mb4&time_zone=%2B00:00``. User and password
    are percent-decoded; IPv6 hosts go in brackets. Query parameters: ``charset``,
    ``collation``, ``autocommit`` (true/false), ``time_zone``, ``sql_mode``, ``init_command``
    (repeatable), ``unix_socket``, ``ssl`` (true/false) and ``ssl_ca`` (a CA file; implies TLS).

    Args:
        dsn: the connection string.

    Returns:
        The keyword arguments found (only those present in the DSN).

    Raises:
        ConfigError: the DSN is malformed; the message names the problem, never the password.
    """
    if not isinstance(dsn, str):
        raise ConfigError("dsn", dsn, "must be a string")
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("dsn", dsn, f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise ConfigError("dsn", dsn, "must start with mysql:// or mariadb://")
    out: dict[str, Any] = {}
    if parts.username:
        out["user"] = unquote(parts.username)
    if parts.password is not None:
        out["password"] = unquote(parts.password)
    if parts.hostname:
        out["host"] = parts.hostname
    if port is not None:
        out["port"] = port
    path = unquote(parts.path.lstrip("/"))
    if "/" in path:
        raise ConfigError("dsn", dsn, f"has more than a database name in its path ({path!r})")
    if path:
        out["db"] = path
    commands: list[str] = []
    ssl_ca: str | None = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _DSN_PARAMS:
            raise ConfigError(
                "dsn", dsn, f"unknown query parameter {key!r} (known: {', '.join(_DSN_PARAMS)})"
            )
        if key == "autocommit" or key == "ssl":
            out[key] = _parse_bool(key, value)
        elif key == "init_command":
            commands.append(value)
        elif key == "ssl_ca":
            ssl_ca = value
        else:
            out[key] = value
    if commands:
        out["init_command"] = commands
    if ssl_ca is not None:
        if out.get("ssl") is False:
            raise ConfigError("dsn", dsn, "has both ssl=false and ssl_ca")
        try:
            out["ssl"] = ssl_module.create_default_context(cafile=ssl_ca)
        except (OSError, ssl_module.SSLError) as exc:
            raise ConfigError("ssl_ca", ssl_ca, f"cannot be loaded ({exc})") from None
    return out


def _parse_bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on", "required"):
        return True
    if lowered in ("0", "false", "no", "off", "disabled"):
        return False
    raise ConfigError(key, value, "must be true or false")


# -- the pool -----------------------------------------------------------------------------------


class MySQLPool(Pool[MySQLConnection]):
    """A :class:`~poolkit.Pool` of aiomysql connections with a transaction helper.

    Built by :func:`create_pool`; everything else is the core pool.
    """

    @asynccontextmanager
    async def transaction(self, *, timeout: float | None = None) -> AsyncIterator[MySQLConnection]:
        """Acquire a connection and run the block in a transaction.

        ``BEGIN`` on entry, ``COMMIT`` when the block ends normally, ``ROLLBACK`` when it
        raises (bounded by the pool's ``reset_timeout``; a connection whose rollback fails is
        discarded). On cancellation the connection goes back to the pool, whose reset rolls the
        transaction back off the caller's path.

        Args:
            timeout: acquire timeout (the pool's ``acquire_timeout`` when ``None``).

        Yields:
            The connection, inside an open transaction.

        Example::

            async with pool.transaction() as conn:
                async with conn.cursor() as cur:
                    await cur.execute("UPDATE stock SET n = n - 1 WHERE id = %s", (42,))
        """
        conn = await self.acquire(timeout=timeout)
        discard = False
        try:
            await conn.begin()
            try:
                yield conn
            except Exception:
                try:
                    async with asyncio.timeout(self.config.reset_timeout):
                        await conn.rollback()
                except Exception:  # any failure: the connection is not reusable
                    discard = True
                raise
            await conn.commit()
        except BaseException:
            # Dead (or half-used) connections are dropped by the release itself.
            discard = discard or conn.closed
            raise
        finally:
            await self.release(conn, discard=discard)


def create_pool(
    dsn: str | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    user: str | None = None,
    password: str | None = None,
    db: str | None = None,
    unix_socket: str | None = None,
    ssl: ssl_module.SSLContext | bool | None = None,
    charset: str | None = None,
    collation: str | None = None,
    autocommit: bool | None = None,
    time_zone: str | None = None,
    sql_mode: str | None = None,
    init_command: str | Sequence[str] | None = None,
    reset: ResetPolicy = "clean",
    config: PoolConfig | None = None,
    environ: Mapping[str, str] | None = None,
    on_connect: Callable[[MySQLConnection], Any] | None = None,
    on_acquire: Callable[[MySQLConnection], Any] | None = None,
    on_release: Callable[[MySQLConnection], Any] | None = None,
    on_close: Callable[[MySQLConnection], Any] | None = None,
    on_event: Callable[[Any], None] | None = None,
    **options: Any,
) -> MySQLPool:
    """Create a pool of MySQL/MariaDB connections (not opened yet).

    The target comes from ``dsn``, else the ``MYSQL_DSN`` environment variable, else the
    keyword arguments (default ``127.0.0.1:3306``); keyword arguments override the DSN. The pool
    configuration comes from ``config``, else from ``MYSQL_POOL_*`` environment variables
    (``MYSQL_POOL_MAX_SIZE=20``); :class:`~poolkit.PoolConfig` fields given as keywords
    override both. Any other keyword must be an :class:`aiomysql.Connection` parameter
    (``program_name``, ``local_infile``, ``cursorclass`` ...) and is passed through.

    Args:
        dsn: ``mysql://user:password@host:port/db?charset=utf8mb4`` (or ``mariadb://``).
        host: server host.
        port: server port.
        user: user name.
        password: password (never shown).
        db: default database.
        unix_socket: Unix socket path.
        ssl: an :class:`ssl.SSLContext` or ``True`` for a default verifying one.
        charset: connection character set (default ``utf8mb4``).
        collation: connection collation.
        autocommit: session autocommit (default ``True``).
        time_zone: session time zone.
        sql_mode: session ``sql_mode``.
        init_command: SQL run on every new connection and after every ``"clean"`` reset.
        reset: ``"clean"`` (default: ``COM_RESET_CONNECTION`` then the session settings again),
            ``"rollback"`` (roll back only if a transaction may be open) or an async callable.
        config: a ready :class:`~poolkit.PoolConfig` (environment variables are then ignored).
        environ: the environment to read (``os.environ`` when ``None``).
        on_connect: hook run on each new connection (sync or async).
        on_acquire: hook run before a connection is handed out.
        on_release: hook run in the release task, before the reset.
        on_close: hook run before a connection is closed.
        on_event: callback receiving every :class:`~poolkit.PoolEvent`.
        **options: :class:`~poolkit.PoolConfig` fields and aiomysql connect parameters.

    Returns:
        A :class:`MySQLPool`; open it with ``await pool.open()`` or ``async with pool:``.

    Raises:
        ConfigError: an option is invalid or unknown; the message names it.

    Example::

        pool = create_pool("mysql://app:secret@127.0.0.1/shop", max_size=20)
        async with pool:
            async with pool.acquire() as conn:
                async with conn.cursor() as cur:
                    await cur.execute("SELECT 1")
    """
    env = os.environ if environ is None else environ
    pool_options, driver_options = PoolConfig.split_options(
        options, _DRIVER_PARAMS, driver="aiomysql.Connection"
    )

    if dsn is None and host is None and unix_socket is None:
        dsn = env.get("MYSQL_DSN") or None
    params: dict[str, Any] = parse_dsn(dsn) if dsn is not None else {}
    explicit = {
        "host": host,
        "port": port,
        "user": user,
        "password": password,
        "db": db,
        "unix_socket": unix_socket,
        "ssl": ssl,
        "charset": charset,
        "collation": collation,
        "autocommit": autocommit,
        "time_zone": time_zone,
        "sql_mode": sql_mode,
        "init_command": init_command,
    }
    params.update({k: v for k, v in explicit.items() if v is not None})

    cfg = config if config is not None else PoolConfig.from_env("MYSQL_POOL", env)
    if pool_options:
        cfg = cfg.replace(**pool_options)
    connector = MySQLConnector(
        reset=reset,
        connect_timeout=cfg.connect_timeout,
        connect_kwargs=driver_options,
        **params,
    )
    return MySQLPool(
        connector,
        cfg,
        on_connect=on_connect,
        on_acquire=on_acquire,
        on_release=on_release,
        on_close=on_close,
        on_event=on_event,
    )
