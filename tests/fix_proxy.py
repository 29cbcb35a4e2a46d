"""An in-process asyncio loopback TCP proxy, for testing network failures.

Loaded as a pytest plugin. A test points a pool at the proxy instead of the server,
then breaks the network between them on demand without touching the server::

    async def test_pool_heals(tcp_proxy, pg_dsn):
        proxy = await tcp_proxy("127.0.0.1", 5432)
        ...  # connect to proxy.host:proxy.port
        await proxy.stop()     # refuse new connections, drop current ones
        await proxy.start()    # listen again on the same port
        proxy.blackhole()      # hold every connection open, forward nothing
        await proxy.reset()    # RST every current connection

The model is psycopg's ``tests/fix_proxy.py``, rewritten on asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, NamedTuple, Protocol

import pytest

__all__ = ["DeafListener", "Endpoint", "Proxy", "ProxyFactory"]

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_CHUNK = 65536


def _check_loopback(host: str, what: str) -> None:
    if host not in _LOOPBACK and not host.startswith("127."):
        raise ValueError(f"{what} {host!r} is not a loopback address: tests stay on loopback")


def _set_linger_zero(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Pair:
    """One client connection and (once connected) its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter, blackholed: bool) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.blackholed = blackholed
        self.closed = False

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]

    def abort(self, *, rst: bool = False) -> None:
        self.closed = True
        for writer in self.writers():
            if rst:
                _set_linger_zero(writer)
            writer.transport.abort()

    def close(self) -> None:
        self.closed = True
        for writer in self.writers():
            writer.close()


class Proxy:
    """A loopback TCP proxy that forwards to one target and can break on demand.

    Attributes:
        host: Address the proxy listens on (always loopback).
        port: Port the proxy listens on (kept across :meth:`stop`/:meth:`start`).
        target_host: Host connections are forwarded to.
        target_port: Port connections are forwarded to.
        connection_count: Client connections accepted since creation.
    """

    def __init__(
        self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        """Create a stopped proxy; call :meth:`start` to listen.

        Args:
            target_host: Loopback host to forward to.
            target_port: Port to forward to.
            host: Loopback address to listen on.
            port: Port to listen on; 0 picks a free one at the first start.
        """
        _check_loopback(host, "proxy listen host")
        _check_loopback(target_host, "proxy target host")
        self.host = host
        self.port = port
        self.target_host = target_host
        self.target_port = target_port
        self.connection_count = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._blackhole = False
        self._delay = 0.0

    def __repr__(self) -> str:
        """Return a one-line state dump."""
        state = "listening" if self.listening else "stopped"
        mode = "blackhole" if self._blackhole else f"slow({self._delay})" if self._delay else "ok"
        return (
            f"<Proxy {self.host}:{self.port} -> {self.target_host}:{self.target_port} "
            f"{state} {mode} active={self.active} accepted={self.connection_count}>"
        )

    @property
    def listening(self) -> bool:
        """True while the proxy accepts new connections."""
        return self._server is not None

    @property
    def active(self) -> int:
        """Number of client connections currently open through the proxy."""
        return len(self._pairs)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to."""
        return self.host, self.port

    async def start(self) -> None:
        """Listen (again) on :attr:`port`; no-op if already listening."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and drop every connection: later connects are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._drop_all(rst=False)
        if server is not None:
            await server.wait_closed()

    async def reset(self) -> None:
        """Abort every current connection with a TCP RST (SO_LINGER 0); keep listening."""
        await self._drop_all(rst=True)

    async def close(self) -> None:
        """Stop the proxy and release every socket and task it owns (idempotent)."""
        await self.stop()

    def blackhole(self) -> None:
        """Stop forwarding: bytes on current and new connections are read and discarded.

        Connections stay open (nothing is closed); new connections are accepted but never
        connected upstream. :meth:`restore` resumes forwarding for *new* connections.
        """
        self._blackhole = True
        for pair in self._pairs:
            pair.blackholed = True

    def slow(self, delay: float) -> None:
        """Delay every forwarded chunk (both directions) by ``delay`` seconds; 0 disables.

        Args:
            delay: Seconds to wait before forwarding each chunk read.
        """
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay!r}")
        self._delay = delay

    def restore(self) -> None:
        """Forward normally again (no blackhole, no delay) for new connections."""
        self._blackhole = False
        self._delay = 0.0

    def retarget(self, target_host: str, target_port: int) -> None:
        """Forward *new* connections to another target (e.g. to simulate a failover).

        Args:
            target_host: Loopback host to forward to.
            target_port: Port to forward to.
        """
        _check_loopback(target_host, "proxy target host")
        self.target_host = target_host
        self.target_port = target_port

    async def _drop_all(self, *, rst: bool) -> None:
        pairs, self._pairs = self._pairs, set()
        for pair in pairs:
            pair.abort(rst=rst)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Let the transports run connection_lost() so their sockets are really closed.
        await asyncio.sleep(0)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connection_count += 1
        pair = _Pair(writer, self._blackhole)
        self._pairs.add(pair)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if pair.blackholed:
                self._spawn(self._discard(pair, reader))
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except (OSError, asyncio.CancelledError):
                # Target down: behave like a proxy whose backend refused: close the client.
                # Cancelled (the proxy is stopping or resetting): same, and end quietly: this
                # task belongs to the proxy, and an error here would reach the loop's handler.
                self._pairs.discard(pair)
                pair.close()
                return
            pair.upstream = up_writer
            if pair.closed:  # dropped while connecting upstream
                pair.abort()
                return
            self._spawn(self._pump(pair, reader, up_writer))
            self._spawn(self._pump(pair, up_reader, writer))
        finally:
            self._tasks.discard(task)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _discard(self, pair: _Pair, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(_CHUNK):
                pass
        self._finish(pair)

    async def _pump(
        self, pair: _Pair, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if self._delay:
                    await asyncio.sleep(self._delay)
                if pair.blackholed:
                    continue
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        # One side ended: close both (graceful, flushing what is buffered).
        self._finish(pair)

    def _finish(self, pair: _Pair) -> None:
        if pair in self._pairs:
            self._pairs.discard(pair)
            pair.close()


class ProxyFactory(Protocol):
    """Type of the ``tcp_proxy`` fixture: ``await tcp_proxy(host, port) -> Proxy``."""

    async def __call__(self, target_host: str, target_port: int, *, port: int = 0) -> Proxy:
        """Start a proxy to ``target_host:target_port``; closed at test teardown."""
        ...


@pytest.fixture
async def tcp_proxy() -> AsyncIterator[ProxyFactory]:
    """Factory of started loopback proxies, all closed (no socket or task left) at teardown.

    Usage: ``proxy = await tcp_proxy("127.0.0.1", 5432)``.
    """
    proxies: list[Proxy] = []

    async def make(target_host: str, target_port: int, *, port: int = 0) -> Proxy:
        proxy = Proxy(target_host, target_port, port=port)
        proxies.append(proxy)
        await proxy.start()
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            await proxy.close()


class Endpoint(NamedTuple):
    """A loopback ``host``/``port`` pair."""

    host: str
    port: int


class DeafListener:
    """A loopback socket that listens but never accepts or answers.

    Attributes:
        host: Listening address.
        port: Listening port.
    """

    def __init__(self, *, fill_backlog: bool = False) -> None:
        """Listen on a free loopback port.

        Args:
            fill_backlog: Also fill the accept queue, so that the kernel drops further
                SYNs and even the TCP connect hangs (instead of the protocol handshake).
        """
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._fillers: list[socket.socket] = []
        try:
            self._sock.bind(("127.0.0.1", 0))
            self._sock.listen(0 if fill_backlog else 16)
            self.host: str = "127.0.0.1"
            self.port: int = self._sock.getsockname()[1]
            if fill_backlog:
                self._fill()
        except BaseException:
            self.close()
            raise

    def _fill(self) -> None:
        # Connect until one connect does not complete: the accept queue is then full.
        for _ in range(16):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(0.2)
            try:
                sock.connect((self.host, self.port))
            except OSError:  # timed out: SYN dropped, queue full
                sock.close()
                return
            self._fillers.append(sock)
        raise RuntimeError("could not fill the listen backlog of the deaf listener")

    @property
    def endpoint(self) -> Endpoint:
        """``(host, port)`` to connect to."""
        return Endpoint(self.host, self.port)

    def close(self) -> None:
        """Close the listener and its filler connections."""
        for sock in self._fillers:
            sock.close()
        self._fillers.clear()
        self._sock.close()


@pytest.fixture
def deaf_listener() -> Iterator[DeafListener]:
    """A listener whose TCP connects succeed but which never sends or reads a byte.

    A client's protocol handshake on it hangs: tests connect timeouts.
    """
    listener = DeafListener()
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def syn_drop_listener() -> Iterator[DeafListener]:
    """A listener with a full accept queue: the kernel drops SYNs, so TCP connects hang."""
    listener = DeafListener(fill_backlog=True)
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def refused_port() -> Endpoint:
    """A loopback port with nothing listening: connects fail with ECONNREFUSED at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return Endpoint("127.0.0.1", port)
