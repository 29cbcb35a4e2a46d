"""A minimal HTTP/1.1 keep-alive client on asyncio streams, pooled through :class:`poolkit.Pool`.

``poolkit bench`` with no URL must run with no extra installed, so it cannot use aiohttp. This
module is the smallest client that can measure what pooling buys on an HTTP server: one request
at a time per connection, ``Content-Length`` or chunked bodies, keep-alive by default. It
implements the :class:`~poolkit.Connector` protocol (plus the optional ``is_closed``,
``needs_reset``, ``abort`` and ``describe`` capabilities).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module

__all__ = ("HTTPStreamConnection", "HTTPStreamConnector", "ProtocolError")

_MAX_HEAD = 64 * 1024


class ProtocolError(ConnectionError):
    """The server's response was not valid HTTP/1.1 (the connection is unusable afterwards)."""


class HTTPStreamConnection:
    """One keep-alive HTTP/1.1 connection: send a request, read the whole response."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host_header: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._host_header = host_header
        self._broken = False

    @property
    def closed(self) -> bool:
        """Whether the connection can no longer carry a request."""
        return self._broken or self._writer.is_closing() or self._reader.at_eof()

    async def request(self, path: str = "/", method: str = "GET") -> int:
        """Send one request and read the full response; return the status code.

        Raises:
            ProtocolError: the response could not be parsed.
            ConnectionError: the connection was closed by the server.
        """
        self._writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\n"
            "User-Agent: poolkit-bench\r\nAccept: */*\r\n\r\n".encode("latin-1")
        )
        try:
            await self._writer.drain()
            return await self._read_response(head_only=method == "HEAD")
        except BaseException:
            # Anything but a complete response leaves the stream mid-message.
            self._broken = True
            raise

    async def _read_response(self, *, head_only: bool) -> int:
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError("the server closed the connection") from exc
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError("response head too large") from exc
        status_line, _, header_block = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in header_block.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get(b"connection", b"").lower() == b"close" or parts[0] == b"HTTP/1.0":
            self._broken = True  # usable for this response only
        if head_only or status in (204, 304) or 100 <= status < 200:
            return status
        if headers.get(b"transfer-encoding", b"").lower().endswith(b"chunked"):
            await self._read_chunked()
        elif b"content-length" in headers:
            length = headers[b"content-length"]
            if not length.isdigit():
                raise ProtocolError(f"invalid Content-Length: {length[:20]!r}")
            await self._reader.readexactly(int(length))
        else:
            await self._reader.read()  # delimited by EOF
            self._broken = True
        return status

    async def _read_chunked(self) -> None:
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise ProtocolError(f"invalid chunk size: {size_line[:20]!r}") from exc
            if size == 0:
                # Trailers, then the empty line.
                while await self._reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return
            await self._reader.readexactly(size + 2)

    def abort(self) -> None:
        """Close the transport now, without a graceful shutdown."""
        self._broken = True
        transport = self._writer.transport
        # abort() schedules a callback: it raises RuntimeError if the loop is already closed,
        # and then the socket is closed with the transport's garbage collection anyway.
        with contextlib.suppress(RuntimeError):
            transport.abort()

    async def aclose(self) -> None:
        """Close the connection gracefully (never raises for a dead connection)."""
        self._broken = True
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class HTTPStreamConnector:
    """Connector for :class:`HTTPStreamConnection` (``http://`` or ``https://``).

    Args:
        host: server host name or address.
        port: server port.
        tls: an SSL context for ``https://`` (``None`` for plain HTTP).
        path: the path each benchmark request asks for.
    """

    def __init__(
        self, host: str, port: int, *, tls: ssl_module.SSLContext | None = None, path: str = "/"
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self._tls = tls

    async def connect(self) -> HTTPStreamConnection:
        """Open one TCP (and TLS) connection to the server."""
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=self._tls, limit=_MAX_HEAD
        )
        default = 443 if self._tls is not None else 80
        host_header = self.host if self.port == default else f"{self.host}:{self.port}"
        if ":" in self.host:  # an IPv6 literal
            host_header = f"[{self.host}]" + ("" if self.port == default else f":{self.port}")
        return HTTPStreamConnection(reader, writer, host_header)

    async def check(self, conn: HTTPStreamConnection) -> None:
        """Raise if the server closed the connection (no round trip needed for HTTP)."""
        if conn.closed:
            raise ConnectionError("the connection was closed")

    async def reset(self, conn: HTTPStreamConnection) -> None:
        """Nothing to reset: HTTP/1.1 keeps no session state on a connection."""
        if conn.closed:
            raise ConnectionError("the connection was closed")

    async def close(self, conn: HTTPStreamConnection) -> None:
        """Close ``conn`` gracefully."""
        await conn.aclose()

    def is_closed(self, conn: HTTPStreamConnection) -> bool:
        """Whether ``conn`` is known dead, without I/O."""
        return conn.closed

    def needs_reset(self, conn: HTTPStreamConnection) -> bool:
        """Only a connection left mid-response (closed) needs attention; it is then discarded."""
        return conn.closed

    def abort(self, conn: HTTPStreamConnection) -> None:
        """Close ``conn``'s transport at once."""
        conn.abort()

    def describe(self) -> str:
        """The target, e.g. ``http://127.0.0.1:8080``."""
        scheme = "https" if self._tls is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"
