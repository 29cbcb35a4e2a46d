"""A real aiohttp web server on loopback for the HTTP backend tests and benchmarks.

:class:`HTTPTestServer` listens on ``127.0.0.1:0`` (plain or TLS) and counts, server-side, every
TCP connection it accepts, so tests can prove how many physical connections a pool opened. Its
routes misbehave on demand (``Connection: close``, dropped requests, resets mid-response,
requests never answered), which lets the tests drive every failure path against real sockets.

Test modules wrap :func:`serve` (one server) or :func:`server_factory` (several) in their own
fixtures, the way the other backends' test servers are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

__all__ = (
    "SERVER_TLS_FAILURE",
    "HTTPTestServer",
    "ServerFactory",
    "forget_server_tls_failures",
    "serve",
    "server_factory",
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _CountingSite(web.BaseSite):
    """A site on ``127.0.0.1:0`` whose protocol factory counts accepted TCP connections."""

    def __init__(
        self, runner: web.BaseRunner, owner: HTTPTestServer, ssl_context: ssl.SSLContext | None
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._owner = owner

    @property
    def name(self) -> str:
        """The URL the site listens on."""
        return self._owner.url

    async def start(self) -> None:
        """Listen on a free loopback port."""
        await super().start()
        server = self._runner.server
        assert server is not None
        owner = self._owner

        def factory() -> asyncio.Protocol:
            owner.accepted += 1
            return server()

        loop = asyncio.get_running_loop()
        listener = await loop.create_server(factory, "127.0.0.1", 0, ssl=self._ssl_context)
        self._server = listener
        owner.port = listener.sockets[0].getsockname()[1]


class HTTPTestServer:
    """An aiohttp application on loopback that counts the TCP connections it accepts.

    Attributes:
        accepted: TCP connections accepted since :meth:`start` (server-side count).
        requests: Requests received, by path.
        port: The listening port (after :meth:`start`).
        health_status: Status code answered by ``/health``.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_timeout: float = 75.0,
    ) -> None:
        """Configure a stopped server.

        Args:
            ssl_context: Server TLS context; ``None`` serves plain HTTP.
            keepalive_timeout: Seconds the server keeps an idle connection open.
        """
        self.accepted = 0
        self.requests: Counter[str] = Counter()
        self.port = 0
        self.health_status = 200
        self._ssl_context = ssl_context
        self._keepalive_timeout = keepalive_timeout
        self._dropped: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._site: _CountingSite | None = None

    @property
    def scheme(self) -> str:
        """``"https"`` when serving TLS, else ``"http"``."""
        return "https" if self._ssl_context is not None else "http"

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:43121``."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url_for(self, path: str, *, host: str = "127.0.0.1") -> str:
        """Return the absolute URL of ``path`` on this server, addressed as ``host``."""
        return f"{self.scheme}://{host}:{self.port}{path}"

    @property
    def open_connections(self) -> int:
        """TCP connections the server holds open right now."""
        if self._runner is None or self._runner.server is None:
            return 0
        return len(self._runner.server.connections)

    async def start(self) -> None:
        """Start listening on ``127.0.0.1`` on a free port."""
        app = web.Application(middlewares=[self._count])
        app.router.add_route("*", "/ok", _ok)
        app.router.add_route("*", "/echo", _echo)
        app.router.add_route("*", "/nested/{tail:.*}", _echo)
        app.router.add_route("*", "/base/{tail:.*}", _echo)
        app.router.add_get("/json", _json)
        app.router.add_get("/status/{code}", _status)
        app.router.add_get("/set-cookie", _set_cookie)
        app.router.add_get("/close", _close)
        app.router.add_get("/bytes/{n}", _bytes)
        app.router.add_get("/stream/{chunks}", _stream)
        app.router.add_get("/slow", _slow)
        app.router.add_get("/never", _never)
        app.router.add_get("/reset-mid-body", _reset_mid_body)
        app.router.add_get("/partial-head", _partial_head)
        app.router.add_route("*", "/drop", _drop)
        app.router.add_route("*", "/drop-once/{key}", self._drop_once)
        app.router.add_get("/health", self._health)
        app.router.add_get("/redirect", _redirect)
        app.router.add_get("/redirect-away", _redirect_away)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=0.5,
            handler_cancellation=True,
            keepalive_timeout=self._keepalive_timeout,
        )
        await runner.setup()
        self._runner = runner
        self._site = _CountingSite(runner, self, self._ssl_context)
        await self._site.start()

    async def close(self) -> None:
        """Stop listening, close every connection and wait for the handlers (idempotent)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def reset_all(self) -> None:
        """Abort every open connection with a TCP RST, as a crashed server or a firewall would."""
        if self._runner is None or self._runner.server is None:
            return
        for handler in self._runner.server.connections:
            transport = handler.transport
            if transport is None:
                continue
            sock: Any = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()

    async def wait_connections(self, expected: int, timeout: float = 5.0) -> None:
        """Wait until the server holds exactly ``expected`` open connections.

        Raises:
            AssertionError: The count did not reach ``expected`` within ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.open_connections != expected:
            if loop.time() >= deadline:
                raise AssertionError(
                    f"server holds {self.open_connections} connections, expected {expected}"
                )
            await asyncio.sleep(0.01)

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        return await handler(request)

    async def _drop_once(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        if key not in self._dropped:
            self._dropped.add(key)
            return await _drop(request)
        return web.Response(text=f"second try of {key}")

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=self.health_status, text="health")


def _abort_with_rst(request: web.Request) -> None:
    transport = request.transport
    assert transport is not None
    sock: Any = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _hang_until_cancelled() -> web.StreamResponse:
    # handler_cancellation=True: the handler is cancelled when its connection goes away.
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")  # pragma: no cover


async def _ok(request: web.Request) -> web.StreamResponse:
    await request.read()
    return web.Response(text="ok")


async def _echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "cookie": request.headers.get("Cookie"),
            "body": body.decode("utf-8", "replace"),
        }
    )


async def _json(request: web.Request) -> web.StreamResponse:
    return web.json_response({"hello": "world", "n": [1, 2, 3]})


async def _status(request: web.Request) -> web.StreamResponse:
    code = int(request.match_info["code"])
    return web.Response(status=code, text=f"status {code}")


async def _set_cookie(request: web.Request) -> web.StreamResponse:
    response = web.Response(text="cookie set")
    response.set_cookie("session", "borrower-a-secret", path="/")
    return response


async def _close(request: web.Request) -> web.StreamResponse:
    response = web.Response(text="closing", headers={"Connection": "close"})
    response.force_close()
    return response


async def _bytes(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"x" * int(request.match_info["n"]))


async def _stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for i in range(int(request.match_info["chunks"])):
        await response.write(f"chunk{i};".encode())
    await response.write_eof()
    return response


async def _slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(float(request.query.get("delay", "0.2")))
    return web.Response(text="slow")


async def _never(request: web.Request) -> web.StreamResponse:
    return await _hang_until_cancelled()


async def _reset_mid_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Length": "100000"})
    await response.prepare(request)
    await response.write(b"y" * 1000)
    await asyncio.sleep(0.05)  # let the client see the head and the first bytes
    _abort_with_rst(request)
    return await _hang_until_cancelled()


async def _partial_head(request: web.Request) -> web.StreamResponse:
    transport = request.transport
    assert transport is not None
    transport.write(b"HTTP/1.1 200 OK\r\nContent-Le")
    await asyncio.sleep(0.05)
    _abort_with_rst(request)
    return await _hang_until_cancelled()


async def _drop(request: web.Request) -> web.StreamResponse:
    # Close the connection without sending a byte: what a server does to a keep-alive
    # connection it decided to drop just as a request arrived on it.
    transport = request.transport
    assert transport is not None
    transport.close()
    return await _hang_until_cancelled()


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/ok")


async def _redirect_away(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.query["to"])


@contextlib.asynccontextmanager
async def serve(
    *, ssl_context: ssl.SSLContext | None = None, keepalive_timeout: float = 75.0
) -> AsyncIterator[HTTPTestServer]:
    """Run an :class:`HTTPTestServer` for the duration of the block.

    Test modules wrap it in their own fixtures (``http_server``, ``https_server`` ...).
    """
    server = HTTPTestServer(ssl_context=ssl_context, keepalive_timeout=keepalive_timeout)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


class ServerFactory(Protocol):
    """``await make(ssl_context=..., keepalive_timeout=...)``: start a server for this test."""

    async def __call__(
        self, *, ssl_context: ssl.SSLContext | None = None, keepalive_timeout: float = 75.0
    ) -> HTTPTestServer:
        """Start an :class:`HTTPTestServer`; it is closed when the factory's block ends."""
        ...


@contextlib.asynccontextmanager
async def server_factory() -> AsyncIterator[ServerFactory]:
    """A factory of started servers, all closed when the block ends."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            *, ssl_context: ssl.SSLContext | None = None, keepalive_timeout: float = 75.0
        ) -> HTTPTestServer:
            return await stack.enter_async_context(
                serve(ssl_context=ssl_context, keepalive_timeout=keepalive_timeout)
            )

        yield make


#: What asyncio (in debug mode) reports for every incoming TLS handshake that failed.
SERVER_TLS_FAILURE = "Error on transport creation for incoming connection"


def forget_server_tls_failures(errors: list[dict[str, Any]]) -> None:
    """Drop the server-side reports of TLS handshakes the client rejected from ``errors``.

    ``errors`` is what ``tests/conftest.py``'s autouse fixture collected from the loop's
    exception handler; a test that makes the client reject a certificate calls this (through
    a fixture) so that only *unexpected* loop errors fail it.
    """
    errors[:] = [error for error in errors if error.get("message") != SERVER_TLS_FAILURE]
