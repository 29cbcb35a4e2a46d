"""What a borrower holds: :class:`HTTPClient` (a connection for the length of a borrow) and
:class:`ClientLease` (what ``HTTPPool.acquire()`` returns)."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Unpack

from yarl import URL

from poolkit import AcquireContext, PoolUsageError

from ._http_conn import HTTPConnection
from ._http_response import HTTPResponse, RequestMethods, RequestOptions, StreamResponse
from ._http_util import redact_url, resolve_url

__all__ = ("ClientLease", "HTTPClient")


class HTTPClient(RequestMethods):
    """A borrowed connection: requests go over one keep-alive socket until the borrow ends.

    Relative URLs resolve against the URL given to ``acquire()`` (default: the pool's base
    URL); absolute URLs must be on the same origin. After the borrow ends every method raises
    :class:`~poolkit.PoolUsageError`.
    """

    __slots__ = ("_base", "_conn")

    def __init__(self, conn: HTTPConnection, base: URL) -> None:
        """Bind a client to ``conn`` (done by :class:`HTTPPool`)."""
        self._conn: HTTPConnection | None = conn
        self._base = base

    @property
    def connection(self) -> HTTPConnection:
        """The pooled connection (raises once released)."""
        return self._live()

    @property
    def base_url(self) -> URL:
        """The URL relative paths resolve against."""
        return self._base

    @property
    def released(self) -> bool:
        """Whether the borrow has ended."""
        return self._conn is None

    def __repr__(self) -> str:
        state = "released" if self._conn is None else repr(self._conn)
        return f"<HTTPClient base={redact_url(self._base)} {state}>"

    def _live(self) -> HTTPConnection:
        conn = self._conn
        if conn is None:
            raise PoolUsageError(
                "this HTTP client was released to its pool and cannot be used any more; "
                "acquire a new one"
            )
        return conn

    def _detach(self) -> HTTPConnection | None:
        conn, self._conn = self._conn, None
        return conn

    async def request(
        self, method: str, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> HTTPResponse:
        """Send a request on this connection and read the whole response.

        See :class:`RequestOptions` for the options and :class:`HTTPConnection` for errors.
        """
        conn = self._live()
        return await conn._fetch(method, conn._resolve(resolve_url(self._base, url)), kwargs)

    def stream(
        self, method: str, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """Send a request; read the body inside the block (see :class:`StreamResponse`)."""
        return self._live().stream(method, resolve_url(self._base, url), **kwargs)


class ClientLease:
    """What :meth:`HTTPPool.acquire` returns: ``async with`` it, or await it.

    ``async with pool.acquire() as client`` releases on exit; ``client = await
    pool.acquire()`` leaves it to ``await pool.release(client)``.
    """

    __slots__ = ("_base", "_client", "_context")

    def __init__(self, context: AcquireContext[HTTPConnection], base: URL) -> None:
        self._context = context
        self._base = base
        self._client: HTTPClient | None = None

    def __await__(self) -> Generator[Any, None, HTTPClient]:
        conn = yield from self._context.__await__()
        return HTTPClient(conn, self._base)

    async def __aenter__(self) -> HTTPClient:
        conn = await self._context.__aenter__()
        self._client = HTTPClient(conn, self._base)
        return self._client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            client._detach()
        await self._context.__aexit__(exc_type, exc, tb)
