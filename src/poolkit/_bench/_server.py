"""A tiny HTTP/1.1 keep-alive server on asyncio streams, for ``poolkit bench`` with no URL.

It answers every request with a short ``200 OK`` and keeps the connection open until the client
closes it or sends ``Connection: close``. It exists so that the benchmark runs on a fresh machine
with nothing else installed or running; it is not a general-purpose server.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

__all__ = ("EmbeddedServer",)

_BODY = b"ok\n"
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    b"Connection: keep-alive\r\n\r\n%s" % (len(_BODY), _BODY)
)
_CLOSE_RESPONSE = _RESPONSE.replace(b"keep-alive", b"close")
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_MAX_HEAD = 16 * 1024


class EmbeddedServer:
    """An in-process HTTP/1.1 server bound to ``127.0.0.1`` on a free port.

    Use as an async context manager; :attr:`url` is valid inside the block. Leaving the block
    closes the listening socket and every open client connection.

    Example:
        >>> async def demo() -> None:
        ...     async with EmbeddedServer() as server:
        ...         print(server.url)  # doctest: +SKIP
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        #: Connections accepted so far (each is one TCP connect by a client).
        self.connections = 0
        #: Requests answered so far.
        self.requests = 0

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234/``."""
        return f"http://{self._host}:{self.port}/"

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._handle, self._host, 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every client connection; waits for the handlers to end."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away mid-request: nothing to answer
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    writer.write(_BAD_REQUEST)
                return  # clean EOF between requests: the client closed its connection
            if len(head) > _MAX_HEAD:
                writer.write(_BAD_REQUEST)
                return
            request_line, _, header_block = head.partition(b"\r\n")
            if request_line.count(b" ") != 2:
                writer.write(_BAD_REQUEST)
                return
            headers = _parse_headers(header_block)
            length = headers.get(b"content-length", b"0")
            if not length.isdigit():
                writer.write(_BAD_REQUEST)
                return
            if int(length):
                await reader.readexactly(int(length))
            self.requests += 1
            close = headers.get(b"connection", b"").lower() == b"close" or request_line.endswith(
                b"HTTP/1.0"
            )
            writer.write(_CLOSE_RESPONSE if close else _RESPONSE)
            await writer.drain()
            if close:
                return


def _parse_headers(block: bytes) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers
