"""Request options, response objects and the verb methods shared by every HTTP request API.

:class:`HTTPResponse` is a fully read response (what ``await client.get(...)`` returns);
:class:`StreamResponse` wraps a response whose body is still on the wire (what
``async with client.stream(...)`` yields). Both show their URL redacted in ``repr``, and
:meth:`raise_for_status` raises :class:`HTTPStatusError`, whose message is redacted too.
"""

from __future__ import annotations

import codecs
import json as _json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypedDict, Unpack

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from poolkit import PoolError

from ._http_util import redact_url, scrub_exception

__all__ = (
    "HTTPResponse",
    "HTTPStatusError",
    "RequestMethods",
    "RequestOptions",
    "StreamResponse",
)


class RequestOptions(TypedDict, total=False):
    """Keyword arguments accepted by ``request()``, ``stream()`` and the verb methods.

    Attributes:
        params: query parameters added to the URL.
        data: the body: ``bytes``, ``str``, a form ``dict``, an ``aiohttp.FormData``, a file
            object or an async iterable of ``bytes`` (the last three cannot be retried).
        json: a JSON-serialisable body (exclusive with ``data``).
        headers: headers for this request only (never stored on the connection).
        cookies: cookies for this request only (nothing is stored between requests).
        allow_redirects: follow redirects to the same origin (default ``True``); a redirect to
            another origin raises :class:`~poolkit.http.CrossOriginError`.
        max_redirects: redirects followed at most (default 10).
        timeout: seconds for the whole request, body included (``None``: no total bound);
            default: the pool's ``request_timeout``.
        retry: override the pool's ``retry_idempotent`` for this request.
        raise_for_status: raise :class:`HTTPStatusError` for a 4xx/5xx status.
        compress: compress the body (``"deflate"``/``"gzip"``) or ``True`` for deflate.
        chunked: send the body with chunked transfer encoding.
        expect100: send ``Expect: 100-continue`` and wait for the server's go-ahead.
    """

    params: Mapping[str, Any] | Sequence[tuple[str, Any]] | str | None
    data: Any
    json: Any
    headers: Mapping[str, str] | None
    cookies: Mapping[str, str] | None
    allow_redirects: bool
    max_redirects: int
    timeout: float | aiohttp.ClientTimeout | None
    retry: bool
    raise_for_status: bool
    compress: str | bool | None
    chunked: bool | None
    expect100: bool


class HTTPStatusError(PoolError):
    """Raised by ``raise_for_status()`` for a response with a 4xx or 5xx status.

    The message shows the method, the redacted URL and the status; the response is attached.
    """

    def __init__(
        self, *, method: str, url: URL, status: int, reason: str, response: object
    ) -> None:
        shown = redact_url(url)
        super().__init__(f"{method} {shown} returned {status} {reason}".rstrip())
        #: The HTTP status code.
        self.status = status
        #: The request method.
        self.method = method
        #: The request URL, redacted.
        self.url = shown
        #: The :class:`HTTPResponse` or :class:`StreamResponse`.
        self.response = response


def _charset(headers: Mapping[str, str]) -> str | None:
    content_type = headers.get("Content-Type", "")
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip().strip('"')
            try:
                codecs.lookup(charset)
            except LookupError:
                return None
            return charset
    return None


class HTTPResponse:
    """A response whose body has been read completely; the connection is already free.

    Attributes:
        method: the request method.
        url: the final URL (after redirects). It is shown redacted in ``repr``.
        status: the status code.
        reason: the reason phrase.
        headers: the response headers (case-insensitive, read-only).
        body: the body, decompressed.
    """

    __slots__ = ("_version", "body", "headers", "method", "reason", "status", "url")

    def __init__(
        self,
        method: str,
        url: URL,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        body: bytes,
        version: tuple[int, int] = (1, 1),
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self._version = version

    def __repr__(self) -> str:
        return (
            f"<HTTPResponse {self.method} {redact_url(self.url)} [{self.status} {self.reason}] "
            f"{len(self.body)} bytes>"
        )

    @property
    def version(self) -> str:
        """The HTTP version of the response, e.g. ``"1.1"``."""
        return "{}.{}".format(*self._version)

    @property
    def ok(self) -> bool:
        """``True`` when the status is below 400."""
        return self.status < 400

    @property
    def content_type(self) -> str:
        """The media type of the body, e.g. ``"application/json"`` (no parameters)."""
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()

    @property
    def charset(self) -> str | None:
        """The ``charset`` parameter of ``Content-Type``, if any (and known to Python)."""
        return _charset(self.headers)

    def text(self, encoding: str | None = None, errors: str = "strict") -> str:
        """Decode the body with ``encoding`` (default: the response charset, else UTF-8)."""
        return self.body.decode(encoding or self.charset or "utf-8", errors)

    def json(self, *, loads: Callable[[str], Any] = _json.loads) -> Any:
        """Parse the body as JSON (whatever the ``Content-Type``)."""
        return loads(self.text())

    def raise_for_status(self) -> HTTPResponse:
        """Return the response, or raise :class:`HTTPStatusError` for a 4xx/5xx status."""
        if self.status >= 400:
            raise HTTPStatusError(
                method=self.method,
                url=self.url,
                status=self.status,
                reason=self.reason,
                response=self,
            )
        return self


class StreamResponse:
    """A response whose body is read on demand, valid inside its ``stream()`` block.

    Leaving the block releases the connection: kept alive if the body was read to the end,
    closed (and replaced later) otherwise.

    Attributes:
        method: the request method.
        url: the final URL (shown redacted in ``repr``).
        status: the status code.
        reason: the reason phrase.
        headers: the response headers.
    """

    __slots__ = ("_response", "headers", "method", "reason", "status", "url")

    def __init__(self, response: aiohttp.ClientResponse, method: str) -> None:
        self._response = response
        self.method = method
        self.url: URL = response.url
        self.status: int = response.status
        self.reason: str = response.reason or ""
        self.headers: CIMultiDictProxy[str] = response.headers

    def __repr__(self) -> str:
        return (
            f"<StreamResponse {self.method} {redact_url(self.url)} [{self.status} {self.reason}]>"
        )

    @property
    def ok(self) -> bool:
        """``True`` when the status is below 400."""
        return self.status < 400

    @property
    def content(self) -> aiohttp.StreamReader:
        """aiohttp's body stream (``read(n)``, ``readline()``, ``iter_chunked(n)`` ...)."""
        return self._response.content

    async def read(self) -> bytes:
        """Read the rest of the body."""
        try:
            return await self._response.read()
        except Exception as exc:
            scrub_exception(exc)
            raise

    async def text(self, encoding: str | None = None, errors: str = "strict") -> str:
        """Read the rest of the body and decode it (default: response charset, else UTF-8)."""
        body = await self.read()
        return body.decode(encoding or _charset(self.headers) or "utf-8", errors)

    async def json(self, *, loads: Callable[[str], Any] = _json.loads) -> Any:
        """Read the rest of the body and parse it as JSON."""
        return loads(await self.text())

    async def iter_chunks(self, size: int = 65536) -> AsyncIterator[bytes]:
        """Yield the body in chunks of at most ``size`` bytes."""
        try:
            async for chunk in self._response.content.iter_chunked(size):
                yield chunk
        except Exception as exc:
            scrub_exception(exc)
            raise

    def raise_for_status(self) -> StreamResponse:
        """Return the response, or raise :class:`HTTPStatusError` for a 4xx/5xx status."""
        if self.status >= 400:
            raise HTTPStatusError(
                method=self.method,
                url=self.url,
                status=self.status,
                reason=self.reason,
                response=self,
            )
        return self


class RequestMethods:
    """The verb methods, built on :meth:`request`; subclasses implement ``request``/``stream``.

    ``get()``, ``post()`` ... return the coroutine of ``request()`` itself (one coroutine frame
    less per request): ``await client.get("/x")`` as usual.
    """

    __slots__ = ()

    async def request(
        self, method: str, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> HTTPResponse:
        """Send a request and read the whole response.

        Args:
            method: the HTTP method.
            url: a path (resolved against the base URL) or an absolute URL of the same origin.
            **kwargs: see :class:`RequestOptions`.

        Returns:
            The response, body included; the connection is free again when this returns.
        """
        raise NotImplementedError  # pragma: no cover

    def stream(
        self, method: str, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """Send a request; the block reads the body from the wire (see :class:`StreamResponse`).

        Example::

            async with client.stream("GET", "/export.csv") as response:
                async for chunk in response.iter_chunks():
                    ...
        """
        raise NotImplementedError  # pragma: no cover

    def get(
        self, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> Coroutine[Any, Any, HTTPResponse]:
        """Send a ``GET`` request (see :meth:`request`)."""
        return self.request("GET", url, **kwargs)

    def head(
        self, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> Coroutine[Any, Any, HTTPResponse]:
        """Send a ``HEAD`` request (see :meth:`request`); redirects are not followed by default."""
        kwargs.setdefault("allow_redirects", False)
        return self.request("HEAD", url, **kwargs)

    def options(
        self, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> Coroutine[Any, Any, HTTPResponse]:
        """Send an ``OPTIONS`` request (see :meth:`request`)."""
        return self.request("OPTIONS", url, **kwargs)

    def post(
        self, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> Coroutine[Any, Any, HTTPResponse]:
        """Send a ``POST`` request (see :meth:`request`); never retried."""
        return self.request("POST", url, **kwargs)

    def put(
        self, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> Coroutine[Any, Any, HTTPResponse]:
        """Send a ``PUT`` request (see :meth:`request`)."""
        return self.request("PUT", url, **kwargs)

    def patch(
        self, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> Coroutine[Any, Any, HTTPResponse]:
        """Send a ``PATCH`` request (see :meth:`request`); never retried."""
        return self.request("PATCH", url, **kwargs)

    def delete(
        self, url: str | URL = "", **kwargs: Unpack[RequestOptions]
    ) -> Coroutine[Any, Any, HTTPResponse]:
        """Send a ``DELETE`` request (see :meth:`request`)."""
        return self.request("DELETE", url, **kwargs)
