"""WebSocketConnection: the object a borrower gets from a WebSocket pool.

It wraps one :class:`websockets.asyncio.client.ClientConnection` and adds what pooling needs:

* message encoding and decoding in one place (``send(dict)`` -> JSON text frame; see
  :data:`Decode` for what ``recv`` returns),
* counters of messages and bytes, shared by every connection to one URI so that they survive
  the connections themselves,
* the *cleanliness* test used at release and hand-out (:meth:`WebSocketConnection.is_clean`):
  a connection is reused only when it is open, nothing unread is buffered, and no send or
  receive was interrupted half-way,
* use-after-release detection when the connection came from :func:`create_pool`.

websockets buffers incoming frames in ``ws.recv_messages.frames`` (an ``Assembler`` holding a
``SimpleQueue`` with a ``queue`` deque) in every version with the new asyncio implementation
(13.0 to 17.x at least). Counting and discarding unread frames reads that buffer; the three
helpers at the bottom of this module are the only place that touches it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.protocol import State

from ..errors import ConfigError, ConnectionBroken, PoolUsageError
from ._uri import Endpoint

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

__all__ = (
    "Decode",
    "WebSocketClosed",
    "WebSocketConnection",
    "WireCounters",
    "check_decode",
    "compact_dumps",
)

#: How received messages are decoded.
#:
#: * ``"auto"`` (default): a text frame whose first non-blank character is ``{`` or ``[`` and
#:   that parses as JSON is returned decoded (a ``dict`` or a ``list``); any other text frame is
#:   returned as ``str`` (so ``"pong"`` or ``"42"`` stay strings); a binary frame as ``bytes``.
#: * ``"json"``: every frame, text or binary, is parsed as JSON; invalid JSON raises
#:   :class:`json.JSONDecodeError` (a ``ValueError``) from ``recv`` and the connection stays
#:   usable.
#: * ``"text"``: no decoding: ``str`` for text frames and ``bytes`` for binary frames
#:   (websockets' own behaviour).
#: * ``"bytes"``: every frame as ``bytes`` (no UTF-8 decoding; cheapest with a bytes-based JSON
#:   parser).
#: * a callable: called with the ``str`` (text frame) or ``bytes`` (binary frame).
Decode: TypeAlias = Literal["auto", "json", "text", "bytes"] | Callable[[str | bytes], Any]

_DECODE_MODES = ("auto", "json", "text", "bytes")


def check_decode(decode: object) -> None:
    """Raise :class:`ConfigError` unless ``decode`` is a valid :data:`Decode`."""
    if callable(decode) or decode in _DECODE_MODES:
        return
    raise ConfigError("decode", decode, 'must be "auto", "json", "text", "bytes" or a callable')


def compact_dumps(obj: Any) -> str:
    """Encode ``obj`` as compact JSON (the default encoder for :meth:`WebSocketConnection.send`)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class WebSocketClosed(ConnectionBroken):
    """Raised by ``send``/``recv`` when the WebSocket connection is closed.

    ``async for msg in conn`` simply ends after a normal closure (close code 1000 or 1001) and
    raises this after an abnormal one, like websockets itself. The websockets exception is
    chained as ``__cause__``.

    Attributes:
        code: the close code (``None`` if the TCP connection was lost without a close frame).
        reason: the close reason sent by the peer (may be empty).
        ok: ``True`` for a normal closure.
    """

    def __init__(self, message: str, *, code: int | None, reason: str, ok: bool) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.ok = ok


class WireCounters:
    """Mutable traffic counters shared by every connection to one URI.

    Attributes:
        messages_sent: messages sent through :meth:`WebSocketConnection.send`.
        messages_received: messages returned by ``recv``/``async for`` (or discarded unread).
        bytes_sent: payload bytes sent (UTF-8 size for text).
        bytes_received: payload bytes received (UTF-8 size for text).
        connects: physical connections opened.
        reconnects: connections opened to replace one that was lost (closed by the peer, failed
            a ping, or reset), as opposed to connections opened for more capacity.
        lost: connections found dead (by a ping, at release or at hand-out).
        dirty_discards: connections not reused because they were unclean at release or
            hand-out (unread messages buffered, an interrupted send/receive).
        unread_discarded: buffered messages thrown away by ``discard_pending()`` or by the
            ``idle_messages="discard"`` policy.
        ping_failures: health-check pings that failed (timeout or closed connection).
    """

    __slots__ = (
        "_replace_pending",
        "bytes_received",
        "bytes_sent",
        "connects",
        "dirty_discards",
        "lost",
        "messages_received",
        "messages_sent",
        "ping_failures",
        "reconnects",
        "unread_discarded",
    )

    def __init__(self) -> None:
        self.messages_sent = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.connects = 0
        self.reconnects = 0
        self.lost = 0
        self.dirty_discards = 0
        self.unread_discarded = 0
        self.ping_failures = 0
        self._replace_pending = 0

    def note_lost(self) -> None:
        """Record a connection found dead: the next successful connect counts as a reconnect."""
        self.lost += 1
        self._replace_pending += 1

    def note_connected(self) -> None:
        """Record a successful connect."""
        self.connects += 1
        if self._replace_pending:
            self._replace_pending -= 1
            self.reconnects += 1

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dict."""
        return {name: getattr(self, name) for name in self.__slots__ if not name.startswith("_")}


def _utf8_len(text: str) -> int:
    # str.isascii() is O(1) in CPython (a flag on compact strings): exact for ASCII JSON.
    return len(text) if text.isascii() else len(text.encode())


class WebSocketConnection:
    """A pooled WebSocket connection.

    Get one from a pool (``async with pool.acquire("/ws/btcusdt") as conn``); never construct
    it yourself. It is not safe to use from two tasks at once for receiving (websockets forbids
    concurrent ``recv``); sending from one task while another receives is fine.

    Example::

        async with pool.acquire("/ws/btcusdt") as conn:
            await conn.send({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1})
            async for msg in conn:
                ...

    Attributes:
        ws: the underlying :class:`websockets.asyncio.client.ClientConnection`, for what this
            wrapper does not cover. Reading or writing through it bypasses the counters and the
            cleanliness tracking: leave it as you found it before release.
        endpoint: the :class:`Endpoint` (URI) this connection belongs to.
        target: the redacted URI (safe to log).
        created_at: ``time.monotonic()`` when the connection was opened.
    """

    __slots__ = (
        "__weakref__",
        "_counters",
        "_decode",
        "_dumps",
        "_fate",
        "_hook_task",
        "_leased",
        "_loads",
        "_receiving",
        "_released",
        "_sending",
        "created_at",
        "endpoint",
        "target",
        "ws",
    )

    def __init__(
        self,
        ws: ClientConnection,
        *,
        endpoint: Endpoint,
        counters: WireCounters,
        decode: Decode = "auto",
        dumps: Callable[[Any], str | bytes] = compact_dumps,
        loads: Callable[[str | bytes], Any] = json.loads,
    ) -> None:
        self.ws = ws
        self.endpoint = endpoint
        self.target = endpoint.display
        self.created_at = time.monotonic()
        self._counters = counters
        self._decode = decode
        self._dumps = dumps
        self._loads = loads
        self._sending = False
        self._receiving = False
        # Lease state, maintained by WebSocketPool (a bare Pool leaves both untouched):
        # _leased: True from hand-out until the on_release hook finished (is_closed() then
        #   leaves cleanliness to reset()); _released: True from the borrower's release on
        #   (send/recv then raise, except from the task running the on_release hook).
        self._leased: bool | None = None
        self._released = False
        self._hook_task: asyncio.Task[Any] | None = None
        # Why the connection was found unusable ("lost" or "dirty"), counted once.
        self._fate: str | None = None

    # -- sending ------------------------------------------------------------------------------

    async def send(self, message: Any) -> None:
        """Send one message.

        ``str`` goes out as a text frame and ``bytes``/``bytearray``/``memoryview`` as a binary
        frame, unchanged. Anything else (``dict``, ``list``, numbers...) is encoded with the
        pool's ``dumps`` (compact ``json.dumps`` by default) and sent as a text frame.

        Raises:
            WebSocketClosed: the connection is closed.
            PoolUsageError: the connection was already released to its pool.
        """
        self._check_leased("send")
        if isinstance(message, str):
            data: str | bytes = message
            size = _utf8_len(message)
        elif isinstance(message, bytes | bytearray | memoryview):
            data = bytes(message)
            size = len(data)
        else:
            encoded = self._dumps(message)
            # A bytes-returning encoder (orjson) still means a JSON *text* frame.
            data = encoded.decode() if isinstance(encoded, bytes) else encoded
            size = _utf8_len(data)
        self._sending = True
        try:
            await self.ws.send(data)
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc
        finally:
            self._sending = False
        counters = self._counters
        counters.messages_sent += 1
        counters.bytes_sent += size

    # -- receiving ----------------------------------------------------------------------------

    async def recv(self, timeout: float | None = None, *, decode: Decode | None = None) -> Any:
        """Receive and decode the next message.

        Args:
            timeout: give up after this many seconds (``TimeoutError``); nothing is lost, the
                next call returns the next message.
            decode: override the pool's decoding for this call (see :data:`Decode`).

        Raises:
            WebSocketClosed: the connection is closed (normally or not).
            TimeoutError: ``timeout`` elapsed.
            PoolUsageError: the connection was already released to its pool.
        """
        self._check_leased("recv")
        mode = self._decode if decode is None else decode
        self._receiving = True
        try:
            if timeout is None:
                data = await self.ws.recv(False if mode == "bytes" else None)
            else:
                async with asyncio.timeout(timeout):
                    data = await self.ws.recv(False if mode == "bytes" else None)
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc
        finally:
            self._receiving = False
        counters = self._counters
        counters.messages_received += 1
        if isinstance(data, str):
            counters.bytes_received += _utf8_len(data)
        else:
            counters.bytes_received += len(data)
        return self._decode_data(data, mode)

    def _decode_data(self, data: str | bytes, mode: Decode) -> Any:
        if mode == "auto":
            if isinstance(data, str):
                head = data.lstrip()[:1]
                if head == "{" or head == "[":
                    try:
                        return self._loads(data)
                    except ValueError:
                        return data
            return data
        if mode == "json":
            return self._loads(data)
        if mode == "text" or mode == "bytes":
            return data
        assert callable(mode)
        return mode(data)

    async def __aiter__(self) -> AsyncIterator[Any]:
        """Yield decoded messages until the connection closes.

        Iteration ends quietly after a normal closure and raises :class:`WebSocketClosed` after
        an abnormal one.
        """
        while True:
            try:
                msg = await self.recv()
            except WebSocketClosed as exc:
                if exc.ok:
                    return
                raise
            yield msg

    # -- health -------------------------------------------------------------------------------

    async def ping(self) -> float:
        """Send a ping, wait for the pong and return the round-trip time in seconds.

        Unbounded: wrap it in ``asyncio.timeout()``. The pool's health check does the same,
        bounded by ``check_timeout``.

        Raises:
            WebSocketClosed: the connection is closed.
        """
        try:
            pong = await self.ws.ping()
            return float(await pong)
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from exc

    @property
    def closed(self) -> bool:
        """``True`` once the connection is closing or closed (no I/O)."""
        return self.ws.state is not State.OPEN

    @property
    def latency(self) -> float:
        """The last round-trip time measured by a ping, in seconds (0 before the first)."""
        return float(self.ws.latency)

    @property
    def pending(self) -> int:
        """Frames received but not read yet (0 means nothing unread is buffered)."""
        return buffered_frames(self.ws)

    def discard_pending(self) -> int:
        """Throw away every complete message buffered but not read; return how many.

        Call it from an ``on_release`` hook after unsubscribing, to make a connection that a
        stream kept busy reusable. A message still arriving in fragments is left alone (the
        connection then stays unclean).
        """
        dropped = discard_buffered(self.ws)
        if dropped:
            self._counters.unread_discarded += dropped
            self._counters.messages_received += dropped
        return dropped

    def is_clean(self) -> bool:
        """Return ``True`` if the connection can go to another borrower as it is.

        Clean means: open; no unread frame buffered; no send or receive interrupted half-way
        (e.g. by a cancellation). Checked without I/O at release (after ``on_release``) and when
        an idle connection is handed out; an unclean connection is closed, never reused.
        """
        return (
            self.ws.state is State.OPEN
            and not self._sending
            and not self._receiving
            and buffered_frames(self.ws) == 0
        )

    # -- internals ----------------------------------------------------------------------------

    def _mark(self, fate: Literal["lost", "dirty"]) -> None:
        """Count this connection once as lost (dead) or dirty (unclean) in the counters."""
        if self._fate is None:
            self._fate = fate
            if fate == "lost":
                self._counters.note_lost()
            else:
                self._counters.dirty_discards += 1

    def _check_leased(self, op: str) -> None:
        if self._released and asyncio.current_task() is not self._hook_task:
            raise PoolUsageError(
                f"cannot {op}() on a WebSocket connection to {self.target} after it was "
                "released to its pool"
            )

    def _closed_error(self, exc: ConnectionClosed) -> WebSocketClosed:
        frame = exc.rcvd or exc.sent
        code = frame.code if frame is not None else None
        reason = frame.reason if frame is not None else ""
        ok = isinstance(exc, ConnectionClosedOK)
        detail = f"close code {code}" if code is not None else "no close frame"
        if reason:
            detail += f", reason {reason[:120]!r}"
        return WebSocketClosed(
            f"WebSocket connection to {self.target} is closed ({detail})",
            code=code,
            reason=reason,
            ok=ok,
        )

    def __repr__(self) -> str:
        state = self.ws.state.name.lower()
        return f"<WebSocketConnection {self.target} {state} pending={self.pending}>"


# -- the only code that reads websockets' receive buffer ----------------------------------------


def buffered_frames(ws: ClientConnection) -> int:
    """Return the number of frames websockets received on ``ws`` that nobody read yet."""
    assembler = getattr(ws, "recv_messages", None)
    if assembler is None:  # before connection_made(): nothing can be buffered
        return 0
    return len(assembler.frames)


def discard_buffered(ws: ClientConnection) -> int:
    """Drop the complete messages buffered on ``ws``; return how many messages were dropped."""
    assembler = getattr(ws, "recv_messages", None)
    if assembler is None or assembler.get_in_progress:
        return 0
    queue = assembler.frames.queue
    last_fin = -1
    messages = 0
    for index, frame in enumerate(queue):
        if frame.fin:
            last_fin = index
            messages += 1
    for _ in range(last_fin + 1):
        queue.popleft()
    if messages:
        # Reading may have been paused by flow control (max_queue): let it resume.
        assembler.maybe_resume()
    return messages
