"""The wire layer of an HTTP connection: aiohttp's protocol with byte counters, and the
one-socket aiohttp connector a :class:`~poolkit.http.HTTPConnection` lends its socket through.

These are the only places the backend leans on aiohttp below its public client API: the
``ResponseHandler`` protocol class and ``BaseConnector._create_connection``, the hook aiohttp's
own ``UnixConnector`` and ``NamedPipeConnector`` implement (stable since aiohttp 1.x).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Any, Final, cast

import aiohttp
from aiohttp.client_proto import ResponseHandler

from ._http_util import HTTPCounters

if TYPE_CHECKING:
    from aiohttp.tracing import Trace

    from ._http_conn import HTTPConnection

__all__ = ("WireProtocol", "abort_protocol", "slot_connector")

# The pool reaps idle connections (max_idle_time); aiohttp's own keep-alive timer must not.
_NEVER: Final = 10 * 365 * 86400.0


class _CountingTransport(asyncio.Transport):
    """The transport aiohttp writes to: counts bytes sent, delegates everything else."""

    __slots__ = ("_counters", "_transport")

    def __init__(self, transport: asyncio.Transport, counters: HTTPCounters) -> None:
        super().__init__()
        self._transport = transport
        self._counters = counters

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._counters.bytes_sent += len(data)
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        chunks = list(list_of_data)
        self._counters.bytes_sent += sum(len(chunk) for chunk in chunks)
        self._transport.writelines(chunks)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()


class WireProtocol(ResponseHandler):
    """aiohttp's response protocol, counting bytes and responses on this one socket.

    Attributes:
        received: bytes received on this socket so far.
        served: responses received on this socket so far.
        fresh: opened inside a request (not an idle pooled socket).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, counters: HTTPCounters, *, fresh: bool
    ) -> None:
        super().__init__(loop)
        self._counters = counters
        self.received = 0
        self.served = 0
        self.fresh = fresh
        #: The event loop's own transport (``transport`` is the counting wrapper around it).
        self.raw_transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        self.raw_transport = raw
        super().connection_made(_CountingTransport(raw, self._counters))

    def data_received(self, data: bytes) -> None:
        size = len(data)
        if size:
            self.received += size
            self._counters.bytes_received += size
        _response_data_received(self, data)


_response_data_received = ResponseHandler.data_received


class _SlotConnector(aiohttp.BaseConnector):
    """An aiohttp connector with room for one socket, provided by its :class:`HTTPConnection`."""

    def __init__(self, owner: HTTPConnection) -> None:
        super().__init__(limit=1, keepalive_timeout=_NEVER, force_close=False)
        # Weak: the connection owns the session that owns this connector.
        self._owner = weakref.ref(owner)

    async def _create_connection(
        self, req: aiohttp.ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> ResponseHandler:
        owner = self._owner()
        if owner is None:  # pragma: no cover - the session outlived its connection
            raise aiohttp.ClientConnectionError("the pooled connection is gone")
        return await owner._provide(req.url)


def slot_connector(owner: HTTPConnection) -> aiohttp.BaseConnector:
    """An aiohttp connector with room for one socket, provided by ``owner._provide(url)``."""
    return _SlotConnector(owner)


def abort_protocol(proto: ResponseHandler) -> None:
    """Close ``proto``'s socket now, even when its event loop is already closed."""
    transport = proto.transport
    try:
        proto.abort()
    except RuntimeError:
        # The loop is closed: asyncio cannot schedule connection_lost(). Close the socket
        # ourselves (and tell the transport) so that nothing warns about it later.
        raw: Any = getattr(transport, "_transport", transport)
        inner: Any = getattr(getattr(raw, "_ssl_protocol", None), "_transport", None) or raw
        sock = getattr(inner, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
            with contextlib.suppress(AttributeError):
                inner._sock = None
        with contextlib.suppress(AttributeError):
            raw._closed = True  # an SSL app transport: its __del__ checks this flag
        proto.transport = None
