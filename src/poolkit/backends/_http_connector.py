"""The :class:`~poolkit.Connector` of the HTTP backend, and the validation of its options."""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Mapping
from os import PathLike
from typing import TYPE_CHECKING

from yarl import URL

from poolkit import ConfigError, ConnectionBroken

from ._http_conn import ClientOptions, HTTPConnection
from ._http_util import HTTPCounters, Origin, TLSSettings, redact_url

if TYPE_CHECKING:
    import ssl

__all__ = ("HTTPConnector", "split_base_url", "validate_options")


def split_base_url(url: str | URL) -> tuple[Origin, URL, str | None]:
    """Validate a base URL: return its origin, its path as a base, and Basic credentials.

    Raises:
        ConfigError: not an absolute http(s) URL, or it has a query string or fragment.
    """
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (TypeError, ValueError):
        raise ConfigError("base_url", redact_url(str(url)), "is not a valid URL") from None
    origin = Origin.of(parsed)
    if parsed.raw_query_string or parsed.raw_fragment:
        raise ConfigError(
            "base_url",
            redact_url(parsed),
            "must not have a query string or fragment (pass params= per request)",
        )
    authorization = None
    if parsed.user is not None or parsed.password is not None:
        pair = f"{parsed.user or ''}:{parsed.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    path = parsed.path or "/"
    return origin, origin.url().with_path(path), authorization


def _status_matcher(expected: int | Collection[int] | None) -> Callable[[int], bool]:
    if expected is None:
        return lambda status: 200 <= status < 400
    if isinstance(expected, int) and not isinstance(expected, bool):
        if not 100 <= expected <= 599:
            raise ConfigError("health_status", expected, "must be an HTTP status (100-599)")
        return lambda status: status == expected
    try:
        allowed = frozenset(expected)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(
            "health_status", expected, "must be a status code or a collection of them"
        ) from None
    if not allowed or not all(isinstance(s, int) and 100 <= s <= 599 for s in allowed):
        raise ConfigError("health_status", expected, "must hold HTTP status codes (100-599)")
    return allowed.__contains__


def validate_options(
    *,
    request_timeout: object,
    read_timeout: object,
    connect_timeout: object,
    health_path: object,
    health_method: object,
    health_status: int | Collection[int] | None,
) -> Callable[[int], bool]:
    """Check the per-origin options; return the health status matcher."""
    for name, value in (
        ("request_timeout", request_timeout),
        ("read_timeout", read_timeout),
        ("connect_timeout", connect_timeout),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
        ):
            raise ConfigError(name, value, "must be a positive number of seconds or None")
    if health_path is not None and (
        not isinstance(health_path, str) or not health_path.startswith("/")
    ):
        raise ConfigError("health_path", health_path, 'must be a path starting with "/"')
    if not isinstance(health_method, str) or not health_method.isalpha():
        raise ConfigError("health_method", health_method, "must be an HTTP method name")
    return _status_matcher(health_status)


class HTTPConnector:
    """The :class:`~poolkit.Connector` of :class:`HTTPConnection` objects to one origin.

    Implements every optional capability: ``is_closed`` (the socket is gone, no I/O),
    ``needs_reset`` (only when a request or a streaming response is still open), ``abort``,
    ``describe`` (the origin) and ``stats`` (request counters, added to ``PoolStats.extra``).

    Args:
        url: the origin, optionally with a base path (``https://api.example.com/v2/``) and
            credentials (``https://user:password@host``: sent as Basic auth to this origin
            only, never shown).
        ssl: ``None``/``True`` (verify with the system trust store), ``False`` (do not verify;
            logged once as a warning) or an :class:`ssl.SSLContext`.
        cafile: PEM file of the CA certificates to trust (e.g. a private CA).
        cadata: PEM/DER CA certificates to trust.
        headers: default headers of every request.
        request_timeout: seconds for a whole request, body included (``None``: unbounded).
        read_timeout: seconds between two reads of a response (``None``: unbounded).
        connect_timeout: seconds to open a replacement socket within a borrow.
        retry_idempotent: retry an idempotent request once when its pooled socket turns out
            to be dead before any response byte arrived.
        health_path: a path probed by ``check()`` (idle health checks, check on acquire);
            ``None``: the check only verifies that the socket is open (no I/O).
        health_method: the probe's method.
        health_status: the accepted status(es); default any 2xx or 3xx.
        tls: shared TLS settings (used by :class:`HTTPPool` instead of ``ssl``/``cafile``).
        counters: shared request counters (used by :class:`HTTPPool`).

    Raises:
        ConfigError: an invalid URL or option (the URL is shown redacted).
    """

    def __init__(
        self,
        url: str | URL,
        *,
        ssl: ssl.SSLContext | bool | None = None,
        cafile: str | PathLike[str] | None = None,
        cadata: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        request_timeout: float | None = 30.0,
        read_timeout: float | None = None,
        connect_timeout: float | None = 10.0,
        retry_idempotent: bool = True,
        health_path: str | None = None,
        health_method: str = "GET",
        health_status: int | Collection[int] | None = None,
        tls: TLSSettings | None = None,
        counters: HTTPCounters | None = None,
    ) -> None:
        origin, base, authorization = split_base_url(url)
        health_ok = validate_options(
            request_timeout=request_timeout,
            read_timeout=read_timeout,
            connect_timeout=connect_timeout,
            health_path=health_path,
            health_method=health_method,
            health_status=health_status,
        )
        self._origin = origin
        self._base = base
        self._tls = (
            tls
            if tls is not None
            else TLSSettings(ssl, cafile=cafile, cadata=cadata, owner=f"http {origin}")
        )
        default_headers = dict(headers or {})
        if authorization is not None:
            default_headers.setdefault("Authorization", authorization)
        self._options = ClientOptions(
            headers=default_headers,
            request_timeout=request_timeout,
            read_timeout=read_timeout,
            connect_timeout=connect_timeout,
            retry_idempotent=bool(retry_idempotent),
        )
        self._health_path = health_path
        self._health_method = health_method.upper()
        self._health_ok = health_ok
        self.counters = counters if counters is not None else HTTPCounters()

    @property
    def origin(self) -> Origin:
        """The origin of every connection this connector opens."""
        return self._origin

    @property
    def base_url(self) -> URL:
        """The URL relative request paths are resolved against."""
        return self._base

    def __repr__(self) -> str:
        return f"<HTTPConnector {self.describe()}>"

    # ------------------------------------------------------------------ Connector

    async def connect(self) -> HTTPConnection:
        """Open one keep-alive connection (TCP, and TLS for ``https``)."""
        return await HTTPConnection.open(
            self._origin,
            base=self._base,
            tls=self._tls,
            counters=self.counters,
            options=self._options,
        )

    async def check(self, conn: HTTPConnection) -> None:
        """Raise unless the socket is open (and the health probe, if any, passes)."""
        if not conn.is_alive():
            raise ConnectionBroken(f"connection to {self._origin} was closed")
        if self._health_path is None:
            return
        status = await conn.probe(self._health_method, self._health_path)
        if not self._health_ok(status):
            raise ConnectionBroken(
                f"health check {self._health_method} {self._health_path} on {self._origin} "
                f"returned {status}"
            )
        if not conn.is_alive():
            raise ConnectionBroken(f"connection to {self._origin} was closed by the probe")

    async def reset(self, conn: HTTPConnection) -> None:
        """Close what the borrower left open; raise if the socket did not survive."""
        await conn.reset()

    async def close(self, conn: HTTPConnection) -> None:
        """Close the connection gracefully."""
        await conn.aclose()

    def is_closed(self, conn: HTTPConnection) -> bool:
        """Whether the socket is gone (server FIN, ``Connection: close``, error): no I/O."""
        return not conn.is_alive()

    def needs_reset(self, conn: HTTPConnection) -> bool:
        """Whether a release must run :meth:`reset` (a request or stream still open)."""
        return conn.busy

    def abort(self, conn: HTTPConnection) -> None:
        """Close the socket now (works on a closed event loop; never raises)."""
        conn.abort()

    def describe(self) -> str:
        """The origin and base path (no credentials, no query)."""
        path = self._base.path
        return str(self._origin) + ("" if path == "/" else path)

    def stats(self) -> dict[str, float]:
        """Request counters of this origin (``http_requests``, ``http_responses_2xx`` ...)."""
        return self.counters.as_dict()
