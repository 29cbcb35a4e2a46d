"""PostgreSQL over asyncpg: the connector, ``create_pool`` and ``PostgresPool``.

Design notes (why the code reaches into a few of asyncpg's private attributes):

* **Reset "clean" in one round trip.** ``DISCARD ALL`` would also drop asyncpg's own prepared
  statements (its statement cache would then fail on the next query), so the reset sends one
  multi-statement simple query that clears everything else ``DISCARD ALL`` clears, in order:
  ``ROLLBACK`` (only when a transaction is open), ``SET SESSION AUTHORIZATION DEFAULT`` (also
  resets ``SET ROLE``), ``RESET ALL``, ``CLOSE ALL``, ``UNLISTEN *``, ``DISCARD TEMP``,
  ``DISCARD SEQUENCES``, and last ``pg_advisory_unlock_all()`` together with a probe of
  ``pg_prepared_statements`` *created with SQL* (``from_sql``: asyncpg's statements are
  protocol-level, so they are never touched). Only when the probe finds a user ``PREPARE`` does
  a second round trip deallocate them. What ``on_connect`` set up (settings, role, ``LISTEN``)
  is captured once per connection and re-applied in the same query, so a reset returns the
  session to how it was right after connect.
* **Client-side state.** Callbacks registered with ``add_listener``, ``add_log_listener``,
  ``add_termination_listener`` and ``add_query_logger``, and a transaction object left started,
  live in the ``asyncpg.Connection`` (``_listeners``, ``_log_listeners``, ...; asyncpg's own
  pool clears the same slots in ``Connection._reset``). Every reset policy puts them back to
  what ``on_connect`` left, without I/O. ``test_postgres_reset.py`` pins that these slots exist.
* **needs_reset.** Under ``"rollback"`` a release costs no I/O at all when the protocol's last
  ``ReadyForQuery`` said "idle" (``is_in_transaction()``) and no callback was added.
* **abort.** ``Connection.terminate()`` schedules the transport's ``connection_lost`` with
  ``call_soon``, which raises once the event loop is closed and leaves the socket open. Then the
  socket transport (beneath an SSL transport, if any) is finished synchronously, which closes
  the file descriptor and leaves nothing for ``__del__`` to warn about.
* **PgBouncer.** In transaction pooling mode a session is not ours between transactions:
  named prepared statements break, and a session-level reset would act on whatever server
  session the pooler picked (releasing *another* client's advisory locks, say).
  ``pgbouncer=True`` turns off the statement cache and makes ``"clean"`` act as ``"rollback"``.
  ``pgbouncer=None`` (default) detects a pooler on the first connection: asyncpg's
  ``get_server_pid()`` comes from the ``BackendKeyData`` message, which a pooler forges, so it
  differs from ``pg_backend_pid()``. A detected pooler only turns the statement cache off: its
  pooling mode cannot be seen from the client, and in session mode a rollback-only reset would
  let one borrower's session state reach the next.
"""

from __future__ import annotations

import contextlib
import getpass
import inspect
import logging
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, quote, unquote

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - exercised only without the extra installed
    raise ImportError("poolkit.postgres requires `pip install poolkit[postgres]`") from exc

from poolkit import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    ConnectionBroken,
    Pool,
    PoolConfig,
    PoolEvent,
    TLSError,
)
from poolkit.backends._errors import caused_by_tls_error, causes, with_root_cause

__all__ = (
    "PostgresConnection",
    "PostgresConnector",
    "PostgresPool",
    "ResetPolicy",
    "create_pool",
    "redact_dsn",
)

logger = logging.getLogger("poolkit.postgres")

#: The connection type the pool hands out.
PostgresConnection: TypeAlias = asyncpg.Connection

#: ``"clean"`` (all session state, one round trip), ``"rollback"`` (only an open transaction,
#: no I/O otherwise) or an async callable taking the connection (run after the rollback).
ResetPolicy: TypeAlias = (
    Literal["clean", "rollback"] | Callable[[PostgresConnection], Awaitable[None]]
)

#: A hook run on each new connection, sync or async (type codecs, ``SET``, ``LISTEN``...).
ConnectHook: TypeAlias = Callable[[PostgresConnection], Awaitable[None] | None]

_SCHEMES = ("postgresql", "postgres")
# asyncpg.connect() parameters passed through; "timeout" comes from connect_timeout.
_DRIVER_PARAMS = frozenset(inspect.signature(asyncpg.connect).parameters) - {
    "dsn",
    "loop",
    "timeout",
}
_ENV_DSN_VARIABLES = ("POSTGRES_DSN", "DATABASE_URL")

# The client-side callback sets of an asyncpg.Connection (see the module notes).
_CALLBACK_SETS = ("_log_listeners", "_termination_listeners", "_query_loggers")

# Releases the advisory locks and probes for statements created with SQL PREPARE in one
# statement (one fewer for the server to parse and for asyncpg to read): UNION ALL runs its
# branches in order, so the unlock always runs, and the status is "SELECT 1" without user
# statements, "SELECT 2" with some. The function rather than the pg_prepared_statements view:
# half the cost (no view expansion).
_UNLOCK_AND_PROBE = (
    "SELECT pg_catalog.pg_advisory_unlock_all()::text UNION ALL "
    "(SELECT name FROM pg_catalog.pg_prepared_statement() WHERE from_sql LIMIT 1)"
)
_CLEAN_STATUS = "SELECT 1"
_DEALLOCATE_USER_PREPARED = (
    "DO $poolkit$DECLARE n text; BEGIN "
    "FOR n IN SELECT name FROM pg_catalog.pg_prepared_statement() WHERE from_sql LOOP "
    "EXECUTE 'DEALLOCATE ' || pg_catalog.quote_ident(n); END LOOP; END$poolkit$"
)
_CHECK_SQL = "SELECT 1"


class _NotShown:
    """Stands for a value an error message must not show (it may be a misspelt password)."""

    def __repr__(self) -> str:
        return "<not shown>"


_NOT_SHOWN = _NotShown()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    if "\\" in value:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("'", "''") + "'"


def _clean_sql(settings: Sequence[tuple[str, str]], channels: Sequence[str]) -> str:
    """The "clean" reset query (without the leading ROLLBACK); its last statement is the probe."""
    parts = ["SET SESSION AUTHORIZATION DEFAULT", "RESET ALL"]
    if settings:
        parts.append(
            "SELECT "
            + ", ".join(
                f"pg_catalog.set_config({_quote_literal(name)}, {_quote_literal(value)}, false)"
                for name, value in settings
            )
        )
    parts += ["CLOSE ALL", "UNLISTEN *"]
    parts += [f"LISTEN {_quote_ident(channel)}" for channel in channels]
    parts += ["DISCARD TEMP", "DISCARD SEQUENCES", _UNLOCK_AND_PROBE]
    return ";\n".join(parts)


@dataclass(frozen=True, slots=True)
class _Baseline:
    """A connection's state right after connect + ``on_connect``: what a reset goes back to."""

    listeners: Mapping[str, frozenset[Any]] = field(default_factory=dict)
    callbacks: tuple[frozenset[Any], ...] = (frozenset(), frozenset(), frozenset())
    # None: not a standard PostgreSQL server (CockroachDB, Redshift...): use asyncpg's query.
    clean_sql: str | None = _clean_sql((), ())

    def client_changed(self, conn: PostgresConnection) -> bool:
        """Whether a borrower left client-side state behind (no I/O)."""
        if getattr(conn, "_top_xact", None) is not None:
            return True
        if self is _DEFAULT_BASELINE or self is _NONSTANDARD_BASELINE:
            # Nothing registered at connect (the usual case): any callback is the borrower's.
            return bool(
                getattr(conn, "_listeners", None)
                or getattr(conn, "_log_listeners", None)
                or getattr(conn, "_termination_listeners", None)
                or getattr(conn, "_query_loggers", None)
            )
        listeners: dict[str, set[Any]] = getattr(conn, "_listeners", {})
        if listeners != self.listeners:
            return True
        return any(
            getattr(conn, name, frozenset()) != base
            for name, base in zip(_CALLBACK_SETS, self.callbacks, strict=True)
        )

    def restore_client(self, conn: PostgresConnection) -> None:
        """Put the client-side callbacks back to the baseline and forget a started transaction."""
        with contextlib.suppress(AttributeError):
            setattr(conn, "_top_xact", None)  # noqa: B010 - a private slot, not in the stubs
        listeners: dict[str, set[Any]] | None = getattr(conn, "_listeners", None)
        if listeners is not None and listeners != self.listeners:
            listeners.clear()
            listeners.update({channel: set(cbs) for channel, cbs in self.listeners.items()})
        for name, base in zip(_CALLBACK_SETS, self.callbacks, strict=True):
            current: set[Any] | None = getattr(conn, name, None)
            if current is not None and current != base:
                current.clear()
                current.update(base)


_DEFAULT_BASELINE = _Baseline()
_NONSTANDARD_BASELINE = _Baseline(clean_sql=None)


def _is_standard_server(conn: PostgresConnection) -> bool:
    settings = conn.get_settings()
    return not any(
        hasattr(settings, marker) for marker in ("crdb_version", "padb_revision", "crate_version")
    )


class PostgresConnector:
    """Opens, checks, resets and closes asyncpg connections for a :class:`~poolkit.Pool`.

    Most code calls :func:`create_pool`; build a connector directly to share one between pools
    or to pass it to a :class:`~poolkit.KeyedPool` factory.

    Args:
        dsn: ``postgresql://user:password@host:port/database?sslmode=...`` (anything
            :func:`asyncpg.connect` accepts, including several hosts). ``None``: only the keyword
            arguments and libpq's ``PG*`` environment variables.
        reset: what a release does. ``"clean"`` (default): roll back, then clear every piece of
            session state in one round trip, keeping asyncpg's statement cache. ``"rollback"``:
            roll back an open transaction, no I/O otherwise. An async callable: roll back if
            needed, then call it with the connection.
        pgbouncer: ``True``: the target is PgBouncer in transaction mode (statement cache off
            unless ``statement_cache_size`` is given, ``"clean"`` acts as ``"rollback"``).
            ``False``: a direct connection (or session pooling). ``None`` (default): detect a
            pooler on the first connection and, if there is one, turn the statement cache off.
        on_connect: run on each new connection (sync or async) before first use, e.g. to set
            type codecs. What it sets up (settings, role, listeners) survives every reset.
        connect_timeout: asyncpg's own connect timeout (the pool bounds the whole connect with
            its ``connect_timeout`` as well).
        close_timeout: bound on a graceful close; the connection is then aborted.
        **connect_kwargs: :func:`asyncpg.connect` parameters (``host``, ``port``, ``user``,
            ``password``, ``database``, ``ssl``, ``server_settings``, ``command_timeout``,
            ``statement_cache_size``, ``record_class``, ...). They override the DSN's parts.

    Raises:
        ConfigError: an option is invalid; the message names it (never a password).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        reset: ResetPolicy = "clean",
        pgbouncer: bool | None = None,
        on_connect: ConnectHook | None = None,
        connect_timeout: float | None = None,
        close_timeout: float = 5.0,
        **connect_kwargs: Any,
    ) -> None:
        if dsn is not None:
            _check_dsn(dsn, "dsn")
        if not (reset in ("clean", "rollback") or (callable(reset) and not isinstance(reset, str))):
            raise ConfigError("reset", reset, 'must be "clean", "rollback" or an async callable')
        if pgbouncer not in (True, False, None):
            raise ConfigError("pgbouncer", pgbouncer, "must be True, False or None (detect)")
        if on_connect is not None and not callable(on_connect):
            raise ConfigError("on_connect", on_connect, "must be a callable")
        for name, value in (("connect_timeout", connect_timeout), ("close_timeout", close_timeout)):
            if value is None and name == "connect_timeout":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(name, value, "must be a positive number of seconds")
        for key in connect_kwargs:
            if key not in _DRIVER_PARAMS:
                raise ConfigError(key, _NOT_SHOWN, "is not an asyncpg.connect() parameter")
        settings = connect_kwargs.get("server_settings")
        if settings is not None and not (
            isinstance(settings, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in settings.items())
        ):
            raise ConfigError("server_settings", _NOT_SHOWN, "must be a mapping of str to str")
        if settings is not None:
            connect_kwargs["server_settings"] = dict(settings)

        self._dsn = dsn
        self._reset_policy: ResetPolicy = reset
        self._pgbouncer = pgbouncer
        # Whether connections go through a pooler: known from the option, or detected.
        self._pooler: bool | None = pgbouncer
        self._on_connect = on_connect
        self._connect_timeout = connect_timeout
        self._close_timeout = float(close_timeout)
        self._kwargs = connect_kwargs
        self._explicit_cache_size = "statement_cache_size" in connect_kwargs
        self._custom_baselines = False  # whether _baselines ever held an entry
        # A release needs I/O only for an open transaction (see needs_reset).
        self._rollback_only = reset == "rollback" or (reset == "clean" and pgbouncer is True)
        self._baselines: weakref.WeakKeyDictionary[PostgresConnection, _Baseline] = (
            weakref.WeakKeyDictionary()
        )
        self._target = _describe_target(dsn, connect_kwargs, os.environ)
        self._secrets = _secrets(dsn, connect_kwargs, os.environ)

    # -- configuration views ------------------------------------------------------------------

    @property
    def reset_policy(self) -> ResetPolicy:
        """The reset policy given at construction."""
        return self._reset_policy

    @property
    def pgbouncer(self) -> bool | None:
        """The ``pgbouncer`` option: ``True`` (transaction pooling), ``False`` or ``None``."""
        return self._pgbouncer

    @property
    def behind_pooler(self) -> bool | None:
        """Whether connections go through a pooler (``None`` until the first one told)."""
        return self._pooler

    def describe(self) -> str:
        """Return the redacted target, e.g. ``postgresql://app@db.internal:5432/shop``."""
        return self._target

    def __repr__(self) -> str:
        policy = self._reset_policy if isinstance(self._reset_policy, str) else "custom"
        bouncer = {True: "yes", False: "no", None: "auto"}[self._pgbouncer]
        return f"<PostgresConnector {self._target} reset={policy} pgbouncer={bouncer}>"

    # -- Connector protocol ---------------------------------------------------------------------

    async def connect(self) -> PostgresConnection:
        """Open one connection, detect a pooler if asked to, and run ``on_connect``.

        Returns:
            A connected :class:`asyncpg.Connection`.

        Raises:
            AuthenticationError: the server refused the credentials.
            TLSError: the TLS handshake or certificate verification failed, or TLS was required
                and the server refused it.
            ConnectError: any other failure; the driver's exception is chained.
            TimeoutError: asyncpg's own ``connect_timeout`` ran out.
        """
        conn = await self._open()
        try:
            if self._pooler is None:
                behind_pooler = await _behind_a_pooler(conn)
                if self._pooler is None:
                    self._pooler = behind_pooler
                    if behind_pooler:
                        logger.info(
                            "%s: a connection pooler (PgBouncer?) forwards this connection: "
                            "statement cache off. In transaction pooling mode pass "
                            "pgbouncer=True (no session-level reset); pgbouncer=False keeps "
                            "the cache",
                            self._target,
                        )
                if behind_pooler and not self._explicit_cache_size:
                    # Opened with the statement cache on: open it again without.
                    await self._close_quietly(conn)
                    conn = await self._open()
            if self._on_connect is not None:
                result = self._on_connect(conn)
                if result is not None:
                    await result
            baseline = await self._baseline(conn)
            if baseline is not _DEFAULT_BASELINE:  # (absent means default)
                self._baselines[conn] = baseline
                self._custom_baselines = True
        except BaseException:
            self.abort(conn)
            raise
        return conn

    async def check(self, conn: PostgresConnection) -> None:
        """Raise if ``conn`` is dead: its local state first (free), then ``SELECT 1``.

        Raises:
            ConnectionBroken: the connection is closed.
            Exception: the driver's error if the round trip fails.
        """
        if conn.is_closed():
            raise ConnectionBroken(f"connection to {self._target} is closed")
        await conn.execute(_CHECK_SQL)

    async def reset(self, conn: PostgresConnection) -> None:
        """Clear what the last borrower left behind, according to the reset policy.

        Raises:
            ConnectionBroken: the connection is closed.
            Exception: the driver's error if the reset fails (the pool then closes ``conn``).
        """
        if conn.is_closed():
            raise ConnectionBroken(f"connection to {self._target} is closed")
        baseline = self._baseline_of(conn)
        if baseline.client_changed(conn):
            baseline.restore_client(conn)
        policy = self._reset_policy
        if policy == "clean" and self._pgbouncer is not True:
            await self._clean(conn, baseline)
            return
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        if callable(policy):
            await policy(conn)

    def needs_reset(self, conn: PostgresConnection) -> bool:
        """Whether a released ``conn`` needs :meth:`reset` (no I/O).

        Always under ``"clean"`` and custom policies; under ``"rollback"`` (and behind
        PgBouncer) only when a transaction is open or a borrower added callbacks.
        """
        if self._rollback_only:
            if conn.is_closed() or conn.is_in_transaction():
                return True
            return self._baseline_of(conn).client_changed(conn)
        return True

    def _baseline_of(self, conn: PostgresConnection) -> _Baseline:
        # (A WeakKeyDictionary lookup is Python code: skipped while every connection has the
        # default baseline, which is not stored.)
        if self._custom_baselines:
            return self._baselines.get(conn, _DEFAULT_BASELINE)
        return _DEFAULT_BASELINE

    async def close(self, conn: PostgresConnection) -> None:
        """Close ``conn`` gracefully (bounded by ``close_timeout``), else abort it; never raises
        an :class:`Exception` (a cancellation still propagates, after aborting)."""
        self._baselines.pop(conn, None)
        if conn.is_closed():
            self.abort(conn)
            return
        try:
            await conn.close(timeout=self._close_timeout)
        except Exception as exc:
            logger.debug("%s: graceful close failed (%r); aborting", self._target, exc)
            self.abort(conn)
        except BaseException:
            self.abort(conn)
            raise

    def is_closed(self, conn: PostgresConnection) -> bool:
        """Whether ``conn`` is known to be dead (no I/O)."""
        return conn.is_closed()

    def abort(self, conn: PostgresConnection) -> None:
        """Close ``conn``'s transport now, without awaiting; works after the loop closed."""
        self._baselines.pop(conn, None)
        try:
            conn.terminate()
        except Exception:
            # The event loop is closed (asyncio cannot schedule connection_lost): finish the
            # transport by hand so that the socket is closed now.
            _close_transport_without_loop(getattr(conn, "_transport", None))

    # -- internals --------------------------------------------------------------------------------

    async def _open(self) -> PostgresConnection:
        kwargs = dict(self._kwargs)
        if self._pooler and not self._explicit_cache_size:
            kwargs["statement_cache_size"] = 0
        if self._connect_timeout is not None:
            kwargs["timeout"] = self._connect_timeout
        try:
            conn: PostgresConnection = await asyncpg.connect(self._dsn, **kwargs)
        except TimeoutError:
            raise
        except Exception as exc:
            raise self._connect_error(exc) from exc
        return conn

    async def _close_quietly(self, conn: PostgresConnection) -> None:
        try:
            await conn.close(timeout=self._close_timeout)
        except Exception:
            self.abort(conn)

    async def _baseline(self, conn: PostgresConnection) -> _Baseline:
        standard = _is_standard_server(conn)
        listeners: dict[str, set[Any]] = getattr(conn, "_listeners", {})
        callbacks = tuple(frozenset(getattr(conn, name, ())) for name in _CALLBACK_SETS)
        if self._on_connect is None and not listeners and not any(callbacks):
            return _DEFAULT_BASELINE if standard else _NONSTANDARD_BASELINE
        clean: str | None = None
        if standard and self._pgbouncer is not True:
            settings: list[tuple[str, str]] = []
            if self._on_connect is not None:
                rows = await conn.fetch(
                    "SELECT name, setting FROM pg_catalog.pg_settings WHERE source = 'session' "
                    "UNION ALL SELECT 'role', pg_catalog.current_setting('role') "
                    "WHERE pg_catalog.current_setting('role') <> 'none'"
                )
                settings = [(str(r[0]), str(r[1])) for r in rows]
            clean = _clean_sql(settings, sorted(listeners))
        return _Baseline(
            listeners={channel: frozenset(cbs) for channel, cbs in listeners.items()},
            callbacks=(callbacks[0], callbacks[1], callbacks[2]),
            clean_sql=clean,
        )

    async def _clean(self, conn: PostgresConnection, baseline: _Baseline) -> None:
        in_transaction = conn.is_in_transaction()
        if baseline.clean_sql is None:
            # Not a standard server: asyncpg's capability-aware reset query.
            if in_transaction:
                await conn.execute("ROLLBACK")
            query = conn.get_reset_query()
            if query:
                await conn.execute(query)
            return
        sql = ("ROLLBACK;\n" + baseline.clean_sql) if in_transaction else baseline.clean_sql
        status = await conn.execute(sql)
        if status != _CLEAN_STATUS:
            # The probe found statements created with SQL PREPARE: deallocate them.
            await conn.execute(_DEALLOCATE_USER_PREPARED)

    def _connect_error(self, exc: Exception) -> ConnectError:
        target = self._target
        reason = self._scrub(_reason(exc))
        cls: type[ConnectError]
        if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
            cls = AuthenticationError  # 28000 (and 28P01: InvalidPasswordError)
        elif _caused_by_tls(exc):
            cls = TLSError
        else:
            cls = ConnectError
        return cls(f"cannot connect to {target}: {reason}", target=target)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


async def _behind_a_pooler(conn: PostgresConnection) -> bool:
    """Whether ``conn`` goes through a pooler: its BackendKeyData pid is not the backend's.

    A simple-protocol query (no prepared statement), so it also works in transaction pooling.
    """
    status = await conn.execute(
        f"SELECT 1 WHERE pg_catalog.pg_backend_pid() = {int(conn.get_server_pid())}"
    )
    return status != "SELECT 1"


def _close_transport_without_loop(transport: Any) -> None:
    """Close a transport's socket synchronously (its event loop is closed)."""
    if transport is None:
        return
    inner = transport
    for _ in range(3):  # an SSL transport wraps the socket transport
        below = getattr(getattr(inner, "_ssl_protocol", None), "_transport", None)
        if below is None:
            break
        inner = below
    finish = getattr(inner, "_call_connection_lost", None)
    if finish is not None and getattr(inner, "_sock", None) is not None:
        # asyncio's socket transports: closes the socket and drops every reference. The
        # protocol's connection_lost may complain about the closed loop; the socket is closed
        # in a ``finally`` regardless.
        with contextlib.suppress(Exception):
            finish(None)
    sock = getattr(inner, "_sock", None)
    if sock is not None:
        with contextlib.suppress(Exception):
            sock.close()
        with contextlib.suppress(Exception):
            inner._sock = None


# -- errors -----------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """One line naming the failure, following the chain to its root OSError or SSL error."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return with_root_cause(text, exc)


def _caused_by_tls(exc: BaseException) -> bool:
    if caused_by_tls_error(exc):
        return True
    # asyncpg: TLS required and the server said no (never a silent downgrade).
    return any(
        isinstance(e, ConnectionError)
        and ("rejected SSL upgrade" in str(e) or "during SSL exchange" in str(e))
        for e in causes(exc)
    )


# -- DSN and target ---------------------------------------------------------------------------


def _check_dsn(dsn: object, field_name: str) -> str:
    if not isinstance(dsn, str):
        raise ConfigError(field_name, dsn, "must be a string")
    scheme = dsn.split("://", 1)[0].lower() if "://" in dsn else ""
    if scheme not in _SCHEMES:
        raise ConfigError(field_name, dsn, "must start with postgresql:// or postgres://")
    return dsn


def _split_dsn(dsn: str) -> tuple[str | None, str | None, str, str, dict[str, str]]:
    """``(user, password, hosts, database, query)`` of a DSN; hosts may list several."""
    rest = dsn.split("://", 1)[1]
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    user: str | None = None
    password: str | None = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        raw_user, sep, raw_password = userinfo.partition(":")
        user = unquote(raw_user) or None
        password = unquote(raw_password) if sep else None
    query = dict(parse_qsl(query_text, keep_blank_values=True))
    return user, password, unquote(netloc), unquote(path), query


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` without its password (in the user info or the query string).

    Only the ``sslmode`` and ``target_session_attrs`` query parameters are kept.

    Args:
        dsn: a ``postgresql://`` DSN.

    Returns:
        ``postgresql://user@host:port/database`` (plus the kept parameters).
    """
    try:
        user, _password, hosts, database, query = _split_dsn(dsn)
    except (ValueError, IndexError):
        return "postgresql://<unparsable DSN>"
    scheme = dsn.split("://", 1)[0]
    auth = quote(user, safe="") + "@" if user else ""
    kept = {k: v for k, v in query.items() if k in ("sslmode", "target_session_attrs")}
    if "host" in query and not hosts:
        kept["host"] = query["host"]
    suffix = "?" + "&".join(f"{k}={quote(v, safe='/,')}" for k, v in kept.items()) if kept else ""
    return f"{scheme}://{auth}{hosts}/{quote(database, safe='')}{suffix}"


def _describe_target(dsn: str | None, kwargs: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    """The target asyncpg will connect to, as best known without connecting; no password."""
    user: str | None = None
    netloc = database = ""
    query: dict[str, str] = {}
    if dsn is not None:
        with contextlib.suppress(ValueError, IndexError):
            user, _password, netloc, database, query = _split_dsn(dsn)
    user = kwargs.get("user") or user or environ.get("PGUSER") or _os_user()
    entries: list[tuple[str, str | None]] = []
    host = kwargs.get("host")
    if host is not None:
        entries = [(str(h), None) for h in ([host] if isinstance(host, str) else host)]
    elif netloc:
        entries = [_split_host_port(part) for part in netloc.split(",") if part]
    else:
        fallback = query.get("host") or environ.get("PGHOST") or "localhost"
        entries = [(h, None) for h in fallback.split(",")]
    port = kwargs.get("port")
    default_port = query.get("port") or environ.get("PGPORT") or "5432"
    shown: list[str] = []
    for name, entry_port in entries:
        if name.startswith("/"):
            shown.append(name)  # a Unix socket directory
            continue
        bracketed = f"[{name}]" if ":" in name else name
        shown.append(f"{bracketed}:{port if port is not None else entry_port or default_port}")
    database = (
        kwargs.get("database") or database or query.get("dbname") or environ.get("PGDATABASE")
    ) or user
    text = f"postgresql://{quote(str(user), safe='')}@{','.join(shown)}/{quote(str(database), safe='')}"
    sslmode = query.get("sslmode")
    return f"{text}?sslmode={sslmode}" if sslmode else text


def _split_host_port(part: str) -> tuple[str, str | None]:
    if part.startswith("["):
        host, _, rest = part[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") and rest[1:] else None
    host, sep, port = part.rpartition(":")
    if sep and port.isdigit():
        return host, port
    return part, None


def _secrets(dsn: str | None, kwargs: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Every password that could show up in a driver message (scrubbed from our messages)."""
    found: list[str] = []
    if dsn is not None:
        with contextlib.suppress(ValueError, IndexError):
            _user, password, _hosts, _db, query = _split_dsn(dsn)
            found += [p for p in (password, query.get("password")) if p]
    if isinstance(kwargs.get("password"), str):
        found.append(kwargs["password"])
    if environ.get("PGPASSWORD"):
        found.append(environ["PGPASSWORD"])
    # Longest first, and the percent-encoded forms too (a DSN echoed back verbatim).
    variants = {v for p in found if len(p) >= 3 for v in (p, quote(p, safe=""))}
    return sorted(variants, key=len, reverse=True)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no user name on this system
        return "postgres"


# -- the pool -----------------------------------------------------------------------------------


class PostgresPool(Pool[PostgresConnection]):
    """A :class:`~poolkit.Pool` of asyncpg connections with a transaction helper.

    Built by :func:`create_pool`; everything else is the core pool.
    """

    @asynccontextmanager
    async def transaction(
        self,
        *,
        timeout: float | None = None,
        isolation: Literal["serializable", "repeatable_read", "read_committed", "read_uncommitted"]
        | None = None,
        readonly: bool = False,
        deferrable: bool = False,
    ) -> AsyncIterator[PostgresConnection]:
        """Acquire a connection and run the block in a transaction.

        ``BEGIN`` on entry, ``COMMIT`` when the block ends normally. When it raises (or is
        cancelled), the exception propagates at once and the connection goes back to the pool,
        whose reset rolls the transaction back off the caller's path, bounded by
        ``reset_timeout`` (a connection whose rollback fails is closed).

        Args:
            timeout: acquire timeout (the pool's ``acquire_timeout`` when ``None``).
            isolation: transaction isolation level (the server's default when ``None``).
            readonly: start a read-only transaction.
            deferrable: start a deferrable transaction (with ``serializable`` and
                ``readonly``).

        Yields:
            The connection, inside an open transaction.

        Example::

            async with pool.transaction() as conn:
                await conn.execute("UPDATE stock SET n = n - 1 WHERE id = $1", 42)
        """
        async with self.acquire(timeout=timeout) as conn:
            tx = conn.transaction(isolation=isolation, readonly=readonly, deferrable=deferrable)
            await tx.start()
            yield conn
            await tx.commit()


def create_pool(
    dsn: str | None = None,
    *,
    reset: ResetPolicy = "clean",
    pgbouncer: bool | None = None,
    server_settings: Mapping[str, str] | None = None,
    config: PoolConfig | None = None,
    environ: Mapping[str, str] | None = None,
    on_connect: ConnectHook | None = None,
    on_acquire: Callable[[PostgresConnection], Any] | None = None,
    on_release: Callable[[PostgresConnection], Any] | None = None,
    on_close: Callable[[PostgresConnection], Any] | None = None,
    on_event: Callable[[PoolEvent], None] | None = None,
    **options: Any,
) -> PostgresPool:
    """Create a pool of PostgreSQL connections (not opened yet).

    The target comes from ``dsn``; when neither ``dsn`` nor ``host`` is given, from the
    ``POSTGRES_DSN`` environment variable, else ``DATABASE_URL``. Keyword arguments override
    the DSN's parts; libpq's variables (``PGHOST``, ``PGUSER``, ``PGPASSWORD``...) fill in what
    is still missing. The pool configuration comes from ``config``, else from ``POSTGRES_POOL_*``
    environment variables (``POSTGRES_POOL_MAX_SIZE=20``); :class:`~poolkit.PoolConfig` fields
    given as keywords override both. Any other keyword must be an :func:`asyncpg.connect`
    parameter (``host``, ``port``, ``user``, ``password``, ``database``, ``ssl``,
    ``command_timeout``, ``statement_cache_size``, ``record_class``...) and is passed through.

    Args:
        dsn: ``postgresql://user:password@host:port/database?sslmode=verify-full``.
        reset: ``"clean"`` (default), ``"rollback"`` or an async callable; see
            :class:`PostgresConnector`.
        pgbouncer: ``True`` behind PgBouncer in transaction mode, ``False`` for a direct
            connection, ``None`` (default) to detect a pooler on the first connection (which
            then only turns the statement cache off).
        server_settings: session settings sent when connecting (``{"application_name": "api",
            "search_path": "app"}``); a ``"clean"`` reset returns to them.
        config: a ready :class:`~poolkit.PoolConfig` (``POSTGRES_POOL_*`` is then ignored).
        environ: the environment to read (``os.environ`` when ``None``).
        on_connect: hook run on each new connection before first use (type codecs, ``SET``);
            what it sets up survives resets.
        on_acquire: hook run before a connection is handed out.
        on_release: hook run in the release task, before the reset.
        on_close: hook run before a connection is closed.
        on_event: callback receiving every :class:`~poolkit.PoolEvent`.
        **options: :class:`~poolkit.PoolConfig` fields and :func:`asyncpg.connect` parameters.

    Returns:
        A :class:`PostgresPool`; open it with ``await pool.open()`` or ``async with pool:``.

    Raises:
        ConfigError: an option is invalid or unknown; the message names it.

    Example::

        pool = create_pool("postgresql://app:secret@127.0.0.1/shop", max_size=20)
        async with pool:
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    """
    env = os.environ if environ is None else environ
    pool_options, driver_options = PoolConfig.split_options(
        options,
        _DRIVER_PARAMS,
        driver="asyncpg.connect()",
        refused={"timeout": "use connect_timeout (a PoolConfig field)"},
    )
    if server_settings is not None:
        driver_options["server_settings"] = server_settings

    if dsn is None and "host" not in driver_options:
        for variable in _ENV_DSN_VARIABLES:
            value = env.get(variable)
            if value:
                dsn = _check_dsn(_normalise_scheme(value), variable)
                break
    elif dsn is not None:
        dsn = _check_dsn(_normalise_scheme(dsn), "dsn")

    cfg = config if config is not None else PoolConfig.from_env("POSTGRES_POOL", env)
    if pool_options:
        cfg = cfg.replace(**pool_options)
    connector = PostgresConnector(
        dsn,
        reset=reset,
        pgbouncer=pgbouncer,
        on_connect=on_connect,
        connect_timeout=cfg.connect_timeout,
        close_timeout=cfg.close_timeout,
        **driver_options,
    )
    return PostgresPool(
        connector,
        cfg,
        on_acquire=on_acquire,
        on_release=on_release,
        on_close=on_close,
        on_event=on_event,
    )


def _normalise_scheme(dsn: str) -> str:
    """Accept SQLAlchemy-style ``postgresql+asyncpg://`` URLs (common in ``DATABASE_URL``)."""
    if not isinstance(dsn, str) or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    base = scheme.split("+", 1)[0]
    return f"{base}://{rest}" if base.lower() in _SCHEMES else dsn
