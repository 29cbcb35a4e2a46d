"""A real websockets server on 127.0.0.1 for the WebSocket backend tests.

``WSServer`` runs ``websockets.asyncio.server.serve`` in the test's event loop, on a free port
(or a given one), plain or TLS, and counts what it sees server-side: handshakes, open
connections, connections per path, messages received. Tests drive failures from the server's
side:

* ``close_all(code)``: a normal closing handshake on every connection,
* ``stop_answering_pings()``: stop reading every connection (so no pong, no echo) while keeping
  the TCP connection open: a hung peer,
* ``reset_all()``: drop every TCP connection with an RST,
* ``stop()`` / ``restart()``: stop listening (dropping connections) and listen again on the
  same port.

The protocol it speaks (JSON text frames unless noted):

* ``{"subscribe": topic}``: the connection joins ``topic``; ``publish(topic, msg)`` sends to
  every member. With ``ack_subscriptions`` the server answers ``{"subscribed": topic}``.
* ``{"unsubscribe": topic}``: leaves; answered with ``{"unsubscribed": topic}``.
* ``{"burst": n, "size": s}``: the server sends ``n`` messages ``{"seq": i, "pad": "x" * s}``.
* anything else: echoed back unchanged (same frame type).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any, Self

from websockets.asyncio.server import Server, ServerConnection, serve

__all__ = ("WSServer",)


class WSServer:
    """A controllable websockets server on loopback (see the module docstring).

    Args:
        ssl_context: serve ``wss://`` with this server-side context (``None``: plain).
        port: the port to listen on (0: a free one, kept across ``restart()``).
        ack_subscriptions: answer ``{"subscribed": topic}`` to each subscription.
        token: when set, the handshake must carry ``?token=<token>`` (else HTTP 401).
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        port: int = 0,
        ack_subscriptions: bool = False,
        token: str | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.port = port
        self.ack_subscriptions = ack_subscriptions
        self.token = token
        self.handshakes = 0
        self.paths: Counter[str] = Counter()
        self.received: list[tuple[str, str | bytes]] = []
        self.active: set[ServerConnection] = set()
        self.topics: dict[str, set[ServerConnection]] = {}
        #: Subscribe requests received per topic, ever (grows with every resubscription).
        self.subscribe_requests: Counter[str] = Counter()
        self.deaf = False
        self._server: Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        """``"wss"`` when serving TLS, else ``"ws"``."""
        return "wss" if self.ssl_context is not None else "ws"

    @property
    def base_uri(self) -> str:
        """``ws://127.0.0.1:<port>`` (or ``wss://``)."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def uri(self, path: str = "/") -> str:
        """Return the full URI of ``path`` on this server."""
        return self.base_uri + path

    async def start(self) -> None:
        """Listen on ``port`` (a free one the first time when it is 0)."""
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            ssl=self.ssl_context,
            process_request=self._process_request if self.token is not None else None,
            ping_interval=None,
            compression=None,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection (close code 1001)."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close(close_connections=True)
        await server.wait_closed()
        await self._wait_handlers()

    async def restart(self) -> None:
        """Drop every connection with an RST, stop listening, and listen again on the same port."""
        self.reset_all()
        await self.stop()
        self.deaf = False
        await self.start()

    async def _wait_handlers(self) -> None:
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5.0)

    # -- failure controls -----------------------------------------------------------------------

    async def close_all(self, code: int = 1001, reason: str = "going away") -> None:
        """Close every open connection with a normal closing handshake."""
        conns = list(self.active)
        await asyncio.gather(*(c.close(code, reason) for c in conns), return_exceptions=True)

    def stop_answering_pings(self) -> None:
        """Stop reading every current and future connection: no pong, no echo, socket kept."""
        self.deaf = True
        for conn in self.active:
            conn.transport.pause_reading()

    def reset_all(self) -> None:
        """Drop every TCP connection at once with an RST (SO_LINGER 0, then abort)."""
        for conn in list(self.active):
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.transport.abort()

    # -- pushing --------------------------------------------------------------------------------

    async def publish(self, topic: str, message: Any) -> int:
        """Send ``message`` (JSON-encoded unless str/bytes) to ``topic``; return the recipients."""
        data = message if isinstance(message, str | bytes) else json.dumps(message)
        members = list(self.topics.get(topic, ()))
        for conn in members:
            with contextlib.suppress(Exception):
                await conn.send(data)
        return len(members)

    async def push_all(self, message: Any) -> None:
        """Send ``message`` to every open connection, subscribed or not."""
        data = message if isinstance(message, str | bytes) else json.dumps(message)
        for conn in list(self.active):
            with contextlib.suppress(Exception):
                await conn.send(data)

    def subscribers(self, topic: str) -> int:
        """Return how many connections are subscribed to ``topic``."""
        return len(self.topics.get(topic, ()))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true (re-evaluated on every server-side change)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    # -- internals ------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        if f"token={self.token}" not in request.path:
            return connection.respond(401, "bad token\n")
        return None

    def _notify(self) -> None:
        self._changed.set()

    async def _handle(self, conn: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        path = conn.request.path.split("?", 1)[0] if conn.request is not None else "?"
        self.handshakes += 1
        self.paths[path] += 1
        self.active.add(conn)
        if self.deaf:
            conn.transport.pause_reading()
        self._notify()
        try:
            async for message in conn:
                self.received.append((path, message))
                self._notify()
                await self._answer(conn, message)
        except Exception:
            pass
        finally:
            self.active.discard(conn)
            for members in self.topics.values():
                members.discard(conn)
            self._handlers.discard(task)
            self._notify()

    async def _answer(self, conn: ServerConnection, message: str | bytes) -> None:
        request: Any = None
        if isinstance(message, str) and message.startswith("{"):
            with contextlib.suppress(ValueError):
                request = json.loads(message)
        if isinstance(request, dict) and "subscribe" in request:
            topic = str(request["subscribe"])
            self.topics.setdefault(topic, set()).add(conn)
            self.subscribe_requests[topic] += 1
            if self.ack_subscriptions:
                await conn.send(json.dumps({"subscribed": topic}))
        elif isinstance(request, dict) and "unsubscribe" in request:
            topic = str(request["unsubscribe"])
            self.topics.get(topic, set()).discard(conn)
            await conn.send(json.dumps({"unsubscribed": topic}))
        elif isinstance(request, dict) and "burst" in request:
            pad = "x" * int(request.get("size", 0))
            for i in range(int(request["burst"])):
                await conn.send(json.dumps({"seq": i, "pad": pad}))
        else:
            await conn.send(message)


class ServerProcess:
    """A ``WSServer`` in a child process, for failures that must not touch the test's loop.

    A TLS handshake that the client aborts is reported by the *server's* event loop to its
    exception handler when loop debug is on (which the suite turns on and treats as a test
    failure). Running the server in its own process keeps such server-side reports out of the
    test, as they would be with a real remote server.

    Args:
        certfile: server certificate chain (PEM); with ``keyfile``, serve ``wss://``.
        keyfile: server private key (PEM).
        token: require ``?token=<token>`` in the handshake.
    """

    def __init__(
        self, *, certfile: str | None = None, keyfile: str | None = None, token: str | None = None
    ) -> None:
        self._args: list[str] = []
        if certfile is not None and keyfile is not None:
            self._args += ["--certfile", certfile, "--keyfile", keyfile]
        if token is not None:
            self._args += ["--token", token]
        self.scheme = "wss" if certfile is not None else "ws"
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def base_uri(self) -> str:
        """``ws://127.0.0.1:<port>`` (or ``wss://``)."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        import sys

        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            *self._args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        async with asyncio.timeout(20):
            line = await self._proc.stdout.readline()
        self.port = int(line.split()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        assert proc.stdin is not None
        proc.stdin.close()  # the child exits when its stdin closes
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _serve_until_stdin_closes(args: Any) -> None:
    import sys

    context = None
    if args.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
    server = WSServer(ssl_context=context, token=args.token)
    await server.start()
    sys.stdout.write(f"PORT {server.port}\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="a test websockets server on 127.0.0.1")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--token")
    asyncio.run(_serve_until_stdin_closes(parser.parse_args()))
