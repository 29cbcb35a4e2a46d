"""One pooled HTTP/1.1 keep-alive connection: :class:`HTTPConnection`.

Design note (why each pooled object owns an ``aiohttp.ClientSession``):

* **One object, one socket.** poolkit must guarantee "at most ``max_size`` TCP connections per
  origin", which aiohttp's ``TCPConnector(limit=...)`` does not: its ``limit`` counts borrowed
  connections only, and idle ones across hosts are unbounded. So each :class:`HTTPConnection` is
  a tiny aiohttp client of its own: a ``ClientSession`` over a private slot connector
  with ``limit=1``, which owns *exactly one* socket at a time. aiohttp still does everything it
  is good at (request building, the C response parser, decompression, chunked bodies,
  redirects); poolkit decides who uses which socket, for how long, and when it is closed.
* **We open the socket, not aiohttp.** ``connect()`` opens the TCP (and TLS) connection itself,
  through ``loop.create_connection`` with aiohttp's own ``ResponseHandler`` protocol, so that a
  refused connection, an untrusted certificate or a wrong host name fail *in the pool's connect
  phase* (as :class:`~poolkit.ConnectError` / :class:`~poolkit.TLSError`, within
  ``connect_timeout``), warm-up really opens ``min_size`` sockets, and the socket exists before
  the first request. The slot connector (``_http_wire.py``) hands that socket to aiohttp on
  first use (its ``_create_connection`` hook, the one aiohttp's ``UnixConnector`` overrides).
* **Byte-exact bookkeeping.** The protocol subclass counts bytes received, and wraps its
  transport to count bytes sent, so stats are wire-level and the retry rule below can be exact.
* **Dead sockets are never reused.** aiohttp closes the socket after ``Connection: close``, an
  unread body, an error or a timeout; the server's FIN closes it while idle. In every case
  ``is_alive()`` turns false at once, so the pool never hands the object out again
  (``is_closed``, checked without I/O before every reuse and by maintenance passes). Within one borrow, a request after such a close opens a fresh
  socket in the same slot (counted as ``http_reconnects``): still at most one per slot.
* **Safe retry.** aiohttp retries idempotent requests on *any* disconnect, even after part of
  the response arrived and even on a brand-new connection; we switch that off and retry
  ourselves, once, only if the method is idempotent, the body can be replayed, the socket was
  an idle pooled one (not opened for this request), and *not one byte* of response arrived.
* **Per-request cost.** A request runs exactly the code a plain ``ClientSession`` runs, plus a
  few attribute updates; see ``benchmarks/bench_http.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Unpack, cast

import aiohttp
from yarl import URL

from poolkit import ConnectError, ConnectionBroken, PoolError, PoolUsageError, TLSError

from ._http_response import HTTPResponse, RequestMethods, RequestOptions, StreamResponse
from ._http_util import (
    HTTPCounters,
    Origin,
    TLSSettings,
    redact_url,
    resolve_url,
    scrub_exception,
)
from ._http_wire import WireProtocol, abort_protocol, slot_connector

__all__ = ("ClientOptions", "CrossOriginError", "HTTPConnection")

logger = logging.getLogger("poolkit.http")

#: RFC 9110 section 9.2.2: methods whose repetition has the effect of one request.
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_OPTION_NAMES: Final = frozenset(RequestOptions.__annotations__)
_PASSED_THROUGH: Final = (
    "params",
    "data",
    "json",
    "headers",
    "cookies",
    "allow_redirects",
    "max_redirects",
    "compress",
    "chunked",
    "expect100",
)


class CrossOriginError(PoolError, ValueError):
    """Raised when a request (or a redirect) targets another origin than the connection's.

    A pooled connection is one socket to one origin. Use ``pool.acquire(url)`` or
    ``pool.request(method, absolute_url)`` for other origins, or ``allow_redirects=False``.
    """


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Per-pool request settings shared by the connections of every origin.

    Attributes:
        headers: default headers sent with every request (pool configuration, not borrower
            state).
        request_timeout: seconds for a whole request, body included (``None``: unbounded).
        read_timeout: seconds between two reads of the response (``None``: unbounded).
        connect_timeout: seconds to open a replacement socket inside a borrow.
        retry_idempotent: retry idempotent requests once when a pooled socket turns out dead.
    """

    headers: Mapping[str, str] = field(default_factory=dict)
    request_timeout: float | None = 30.0
    read_timeout: float | None = None
    connect_timeout: float | None = 10.0
    retry_idempotent: bool = True

    def timeout(self, total: float | None) -> aiohttp.ClientTimeout:
        """The aiohttp timeout of a request bounded by ``total`` seconds."""
        return aiohttp.ClientTimeout(
            total=total, connect=self.connect_timeout, sock_read=self.read_timeout
        )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _replayable(data: object) -> bool:
    """Whether a request body can be sent a second time unchanged."""
    return data is None or isinstance(data, bytes | bytearray | memoryview | str | dict | list)


class HTTPConnection(RequestMethods):
    """One keep-alive HTTP/1.1 connection to one origin, with the request methods.

    Made by :class:`~poolkit.http.HTTPConnector`; the pool owns it. Borrowers normally use it
    through a :class:`~poolkit.http.HTTPClient`, which refuses use after release.

    Nothing a borrower sends is stored on the connection: there is no cookie jar
    (``Set-Cookie`` is ignored), and per-request headers, cookies and credentials are used for
    that request only.
    """

    __slots__ = (
        "__weakref__",
        "_base",
        "_busy",
        "_closed",
        "_connector",
        "_counters",
        "_opened",
        "_options",
        "_origin",
        "_prepared",
        "_proto",
        "_session",
        "_streams",
        "_tls",
    )

    def __init__(
        self,
        origin: Origin,
        *,
        base: URL | None = None,
        tls: TLSSettings | None = None,
        counters: HTTPCounters | None = None,
        options: ClientOptions | None = None,
    ) -> None:
        """Prepare an unopened connection; use :meth:`open` instead.

        Args:
            origin: where the connection goes.
            base: the URL relative request paths are resolved against (default: the origin).
            tls: certificate verification settings (default: the system trust store).
            counters: the origin's request counters (shared by its connections).
            options: per-pool request settings.
        """
        self._origin = origin
        self._base = base if base is not None else origin.url().with_path("/")
        self._tls = tls
        self._counters = counters if counters is not None else HTTPCounters()
        self._options = options if options is not None else ClientOptions()
        self._proto: WireProtocol | None = None
        self._prepared = False
        self._session: aiohttp.ClientSession | None = None
        self._connector: aiohttp.BaseConnector | None = None
        self._opened = 0
        self._busy = 0
        self._streams: set[aiohttp.ClientResponse] = set()
        self._closed = False

    @classmethod
    async def open(
        cls,
        origin: Origin,
        *,
        base: URL | None = None,
        tls: TLSSettings | None = None,
        counters: HTTPCounters | None = None,
        options: ClientOptions | None = None,
    ) -> HTTPConnection:
        """Open the TCP (and TLS) connection and return the ready connection.

        Raises:
            TLSError: the handshake failed or the certificate did not verify.
            ConnectError: the TCP connection could not be opened.
        """
        conn = cls(origin, base=base, tls=tls, counters=counters, options=options)
        proto = await conn._open_protocol(fresh=False)
        # No await from here on: the socket is owned by the session or aborted.
        conn._proto = proto
        conn._prepared = True
        conn._opened = 1
        connector = slot_connector(conn)
        conn._connector = connector
        options = conn._options
        session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=True,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers=options.headers or None,
            timeout=options.timeout(options.request_timeout),
            trust_env=False,
        )
        # aiohttp retries idempotent requests after any disconnect; we do it ourselves, safely.
        if hasattr(session, "_retry_connection"):
            session._retry_connection = False
        conn._session = session
        return conn

    # ------------------------------------------------------------------ state (no I/O)

    @property
    def origin(self) -> Origin:
        """The origin this connection talks to."""
        return self._origin

    @property
    def sockets_opened(self) -> int:
        """Physical connections this pooled connection has opened (1 + reconnects)."""
        return self._opened

    @property
    def local_address(self) -> tuple[Any, ...] | None:
        """The local ``(host, port, ...)`` of the current socket (``None`` once it is gone)."""
        proto = self._proto
        transport = proto.transport if proto is not None else None
        if transport is None:
            return None
        address = transport.get_extra_info("sockname")
        return tuple(address) if address is not None else None

    @property
    def responses(self) -> int:
        """Responses received on the current socket."""
        return self._proto.served if self._proto is not None else 0

    def is_alive(self) -> bool:
        """Whether the socket is open and may carry another request (no I/O)."""
        proto = self._proto
        if proto is None or self._closed or proto.transport is None:
            return False
        raw = proto.raw_transport
        return raw is not None and not raw.is_closing()

    @property
    def busy(self) -> bool:
        """Whether a request or an unreleased streaming response is using the connection."""
        return self._busy > 0 or bool(self._streams)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self.is_alive() else "dead")
        return (
            f"<HTTPConnection {self._origin} {state} responses={self.responses} "
            f"sockets_opened={self._opened}>"
        )

    # ------------------------------------------------------------------ sockets

    async def _open_protocol(self, *, fresh: bool) -> WireProtocol:
        loop = asyncio.get_running_loop()
        origin = self._origin
        context: ssl.SSLContext | None = None
        if origin.is_tls:
            tls = self._tls
            if tls is None:
                tls = self._tls = TLSSettings()
            context = tls.context
        counters = self._counters
        extra: dict[str, Any] = {}
        if isinstance(loop, asyncio.BaseEventLoop) and not _is_ip(origin.host):
            # RFC 8305 for names with IPv4 and IPv6 addresses (uvloop has no such option).
            extra["happy_eyeballs_delay"] = 0.25
        try:
            _, proto = await loop.create_connection(
                lambda: WireProtocol(loop, counters, fresh=fresh),
                origin.host,
                origin.port,
                ssl=context,
                server_hostname=origin.host if context is not None else None,
                **extra,
            )
        except ssl.SSLCertVerificationError as exc:
            raise TLSError(
                f"TLS certificate of {origin} did not verify: {exc.verify_message or exc}",
                target=str(origin),
            ) from exc
        except ssl.SSLError as exc:
            raise TLSError(
                f"TLS handshake with {origin} failed: {exc.reason or exc}", target=str(origin)
            ) from exc
        except OSError as exc:
            raise ConnectError(
                f"cannot connect to {origin}: {str(exc) or type(exc).__name__}", target=str(origin)
            ) from exc
        return proto

    async def _provide(self, url: URL) -> WireProtocol:
        """Hand aiohttp the socket for a request to ``url`` (called by the slot connector)."""
        if not self._origin.matches(url):
            raise CrossOriginError(
                f"{redact_url(url)} is not on origin {self._origin}: a pooled connection only "
                "talks to its own origin (was it a redirect? pass allow_redirects=False)"
            )
        proto = self._proto
        if self._prepared:
            self._prepared = False
            if proto is not None and proto.is_connected():
                return proto
        elif proto is not None and proto.is_connected():  # pragma: no cover - invariant guard
            raise PoolUsageError(
                f"connection to {self._origin} asked for a second socket while one is open"
            )
        if self._closed:
            raise ConnectionBroken(f"connection to {self._origin} is closed")
        proto = await self._open_protocol(fresh=True)
        self._proto = proto
        self._opened += 1
        self._counters.reconnects += 1
        return proto

    # ------------------------------------------------------------------ requests

    def _resolve(self, url: str | URL) -> URL:
        """Make ``url`` absolute (against the base URL) and check that it is on our origin."""
        target = resolve_url(self._base, url)
        if not self._origin.matches(target):
            raise CrossOriginError(
                f"{redact_url(target)} is not on origin {self._origin}: acquire a "
                "connection for that origin instead"
            )
        return target

    def _aiohttp_options(self, options: RequestOptions) -> dict[str, Any]:
        if not options:
            return {}
        unknown = options.keys() - _OPTION_NAMES
        if unknown:
            names = ", ".join(sorted(unknown))
            raise TypeError(
                f"unsupported request option(s): {names} (TLS, proxy and auth settings belong "
                "to the pool: they cannot change per request on a pooled connection)"
            )
        given = cast(dict[str, Any], options)
        kwargs: dict[str, Any] = {name: given[name] for name in _PASSED_THROUGH if name in given}
        if "timeout" in options:
            timeout = options["timeout"]
            kwargs["timeout"] = (
                timeout
                if isinstance(timeout, aiohttp.ClientTimeout)
                else self._options.timeout(timeout)
            )
        return kwargs

    async def _send(
        self, method: str, target: URL, options: RequestOptions, *, probe: bool = False
    ) -> aiohttp.ClientResponse:
        """Send one request to ``target`` (absolute, on our origin); return it, head read.

        On success the caller owns one ``_busy`` count and must release the response.
        """
        session = self._session
        if self._closed or session is None:
            raise ConnectionBroken(f"connection to {self._origin} is closed")
        if not method.isupper():
            method = method.upper()
        kwargs = self._aiohttp_options(options) if options else {}
        counters = self._counters
        if not probe:
            counters.requests += 1
        self._busy += 1
        retried = False
        try:
            while True:
                proto = self._proto
                mark = proto.received if proto is not None else 0
                try:
                    response = await session.request(method, target, **kwargs)
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    # Retry only if the request went out on the socket we had before it (an
                    # idle pooled one, not one opened for it: aiohttp would have asked
                    # _provide() for a new one) and not one byte of response came back.
                    if (
                        not retried
                        and proto is not None
                        and proto is self._proto
                        and (proto.served > 0 or not proto.fresh)
                        and proto.received == mark
                        and not self._closed
                        and not isinstance(exc, aiohttp.ClientConnectorError)
                        and method in IDEMPOTENT_METHODS
                        and options.get("retry", self._options.retry_idempotent)
                        and _replayable(kwargs.get("data"))
                    ):
                        retried = True
                        counters.retries += 1
                        logger.debug(
                            "%s %s: the pooled connection was closed before any response "
                            "byte (%s); retrying once on a new connection",
                            method,
                            redact_url(target),
                            type(exc).__name__,
                        )
                        continue
                    raise
                served = self._proto
                if served is not None:
                    served.served += 1
                if not probe:
                    status_class = response.status // 100
                    counters.responses[status_class if 0 < status_class < 6 else 0] += 1
                return response
        except BaseException as exc:
            self._busy -= 1
            if not isinstance(exc, asyncio.CancelledError) and not probe:
                counters.errors += 1
            scrub_exception(exc)
            raise

    async def request(
        self, method: str, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> HTTPResponse:
        """Send a request and read the whole response (see :class:`RequestOptions`).

        Raises:
            CrossOriginError: ``url`` (or a redirect) is on another origin.
            HTTPStatusError: the status is 4xx/5xx and ``raise_for_status=True``.
            aiohttp.ClientError: the request failed on the wire (message redacted).
            TimeoutError: the request timed out.
        """
        return await self._fetch(method, self._resolve(url), kwargs)

    async def _fetch(self, method: str, target: URL, kwargs: RequestOptions) -> HTTPResponse:
        """:meth:`request` for a resolved ``target`` already checked to be on our origin."""
        response = await self._send(method, target, kwargs)
        try:
            body = await response.read()
        except BaseException as exc:
            response.close()
            if not isinstance(exc, asyncio.CancelledError):
                self._counters.errors += 1
            scrub_exception(exc)
            raise
        finally:
            response.release()
            self._busy -= 1
        version = response.version
        result = HTTPResponse(
            response.method,
            response.url,
            response.status,
            response.reason or "",
            response.headers,
            body,
            (version.major, version.minor) if version is not None else (1, 1),
        )
        if kwargs.get("raise_for_status"):
            result.raise_for_status()
        return result

    def stream(
        self, method: str, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> _StreamContext:
        """Send a request and read the body inside the block (see :class:`StreamResponse`)."""
        return _StreamContext(self, method, self._resolve(url), kwargs)

    async def probe(self, method: str, path: str) -> int:
        """Send a health-check request and return its status (not counted as a request).

        The body is read and dropped; redirects are not followed; no retry.
        """
        response = await self._send(
            method, self._resolve(path), {"allow_redirects": False, "retry": False}, probe=True
        )
        try:
            await response.read()
        except BaseException:
            response.close()
            raise
        finally:
            response.release()
            self._busy -= 1
        return response.status

    # ------------------------------------------------------------------ pool hooks

    async def reset(self) -> None:
        """Make the connection safe for the next borrower, or raise to have it discarded.

        Closes streaming responses the borrower left open and aborts requests still in flight
        (a task that outlived its borrow); a connection whose socket is gone is refused.

        Raises:
            ConnectionBroken: the socket is closed (or had to be closed).
        """
        if self._streams:
            for response in list(self._streams):
                response.close()
            self._streams.clear()
        if self._busy and self._proto is not None:
            # A task still uses the connection after the borrow ended: cut it off (and do
            # not let its request be retried on this connection).
            self._closed = True
            abort_protocol(self._proto)
        if not self.is_alive():
            raise ConnectionBroken(f"connection to {self._origin} was closed")

    async def aclose(self) -> None:
        """Close the socket gracefully (TLS close_notify included); idempotent."""
        self._closed = True
        waiters: list[asyncio.Future[None]] = []
        proto = self._proto
        if self._prepared and proto is not None:
            # Never handed to aiohttp: the session does not know about it.
            self._prepared = False
            if proto.is_connected():
                closed = proto.closed
                proto.close()
                if closed is not None:
                    waiters.append(closed)
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        if waiters:
            await asyncio.gather(*waiters, return_exceptions=True)

    def abort(self) -> None:
        """Close the socket now, without awaiting; never raises, works on a closed loop."""
        self._closed = True
        self._prepared = False
        if self._proto is not None:
            abort_protocol(self._proto)
        connector = self._connector
        if connector is not None:
            # Marks the connector (hence the session) closed, synchronously: no "Unclosed
            # client session" warning later. It closes nothing more: our socket is gone.
            with contextlib.suppress(Exception):
                connector._close()
        self._session = None


class _StreamContext:
    """``async with conn.stream(...) as response``: releases the response on exit."""

    __slots__ = ("_conn", "_method", "_options", "_response", "_url")

    def __init__(
        self, conn: HTTPConnection, method: str, target: URL, options: RequestOptions
    ) -> None:
        self._conn = conn
        self._method = method.upper()
        self._url = target
        self._options = options
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> StreamResponse:
        if self._response is not None:
            raise PoolUsageError("this stream() context is already in use")
        conn = self._conn
        response = await conn._send(self._method, self._url, self._options)
        conn._busy -= 1
        conn._streams.add(response)
        self._response = response
        wrapped = StreamResponse(response, self._method)
        if self._options.get("raise_for_status") and response.status >= 400:
            self._finish()
            wrapped.raise_for_status()
        return wrapped

    def _finish(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            self._conn._streams.discard(response)
            # Read to the end: the socket goes back for reuse; otherwise aiohttp closes it.
            response.release()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish()
        if exc is not None:
            scrub_exception(exc)
