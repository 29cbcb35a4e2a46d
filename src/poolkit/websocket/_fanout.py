"""FanOut: one upstream WebSocket per stream, shared by many local subscribers.

Design notes
------------
* **A stream** is one (URI, subscription) pair. Its upstream is a pooled connection held for the
  stream's whole life by one reader task, which sends the subscription, then receives, decodes
  each message *once* and pushes a reference to it into every subscriber's queue. The
  subscription is the stream's identity: two ``subscribe()`` calls with equal subscription
  messages (compared as canonical JSON) share one upstream.
* **Delivery never waits.** Each subscriber owns a bounded queue (a deque and a counter) and an
  overflow policy applied synchronously by the reader: ``"drop_oldest"`` (default),
  ``"drop_newest"`` or ``"disconnect"``. A slow subscriber therefore costs the reader one
  comparison per message: it never slows the others, and its memory is bounded by its queue
  size (plus at most one :class:`Gap` marker per message it holds, see below).
* **Gaps are signalled in-band.** When the upstream is lost, every subscriber gets a
  :class:`Gap` object in its stream, at the point of the loss; messages after it come from a new
  upstream connection, opened with capped, jittered exponential backoff and re-subscribed.
  Gaps are never dropped by the overflow policy and consecutive gaps are merged.
* **Lifetime.** The first subscriber opens the stream (and waits until the subscription was
  sent, so that a bad URI fails its ``async with``); the last one to leave starts a ``linger``
  timer, after which the optional unsubscribe message is sent and the upstream closed (never
  returned to the pool: it still carries a subscription). ``close()`` ends everything and waits
  for every task it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias

from ..errors import ConfigError, PoolClosed, PoolError
from ._connection import WebSocketConnection
from ._uri import Endpoint, redact_message
from ._wspool import WebSocketPool

__all__ = (
    "FanOut",
    "Gap",
    "Overflow",
    "StreamStats",
    "SubscriberOverflow",
    "SubscriberStats",
    "Subscription",
)

logger = logging.getLogger("poolkit.websocket")

#: What a subscriber's full queue does with the next message: drop the oldest queued message,
#: drop the new one, or disconnect the subscriber (its iteration then raises
#: :class:`SubscriberOverflow`).
Overflow = Literal["drop_oldest", "drop_newest", "disconnect"]
_OVERFLOWS: Final = ("drop_oldest", "drop_newest", "disconnect")

#: A subscription: a message sent after each (re)connect (``dict``/``list`` JSON-encoded,
#: ``str``/``bytes`` as is), or an async callable doing the handshake itself (e.g. send, then
#: wait for the acknowledgement) on the connection.
SubscribeSpec: TypeAlias = (
    dict[str, Any] | list[Any] | str | bytes | Callable[[WebSocketConnection], Awaitable[None]]
)


@dataclass(frozen=True, slots=True)
class Gap:
    """Marker yielded by a stream where messages may be missing.

    The upstream connection was lost (closed by the server, failed a keepalive ping, reset):
    messages sent by the server between the last message before the ``Gap`` and the first one
    after it were not received. The hub reconnects and re-subscribes by itself; react to a
    ``Gap`` by re-synchronising state (e.g. fetch a snapshot). Consecutive losses while you were
    not reading are merged into one ``Gap``.

    Attributes:
        reason: what happened (redacted; no URI credentials).
        lost_at: ``time.time()`` when the (first merged) loss was detected.
        losses: how many upstream losses this marker stands for.
    """

    reason: str
    lost_at: float
    losses: int = 1


class SubscriberOverflow(PoolError):
    """Raised by a subscriber's iteration after its queue overflowed under ``"disconnect"``.

    The messages queued before the overflow are yielded first; then the subscriber is detached
    from the stream and its iteration raises this.
    """


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    """A snapshot of one subscriber.

    Attributes:
        delivered: messages yielded to the subscriber.
        dropped: messages dropped because its queue was full.
        gaps: :class:`Gap` markers yielded.
        queued: messages waiting in its queue now.
        max_queued: the most messages ever waiting in its queue (never above ``queue_size``).
        queue_size: the bound of its queue.
        overflow: its overflow policy.
    """

    delivered: int
    dropped: int
    gaps: int
    queued: int
    max_queued: int
    queue_size: int
    overflow: Overflow


@dataclass(frozen=True, slots=True)
class StreamStats:
    """A snapshot of one stream (one upstream connection shared by its subscribers).

    Attributes:
        uri: the redacted URI.
        subscription: a short description of the subscription (its canonical JSON, truncated).
        subscribers: current subscribers.
        connected: whether the upstream is connected and subscribed now.
        messages_in: messages received from the upstream.
        delivered: messages yielded to subscribers (one message to 10 subscribers counts 10).
        dropped: messages dropped by subscribers' overflow policies.
        reconnects: upstream connections re-opened after a loss.
        gaps: upstream losses signalled to subscribers.
        disconnected: subscribers detached by the ``"disconnect"`` policy.
        undecodable: upstream messages skipped because the decoder rejected them.
        queued: messages waiting in all subscribers' queues now.
    """

    uri: str
    subscription: str
    subscribers: int
    connected: bool
    messages_in: int
    delivered: int
    dropped: int
    reconnects: int
    gaps: int
    disconnected: int
    undecodable: int
    queued: int


class Subscription:
    """One local subscriber of a stream: an async context manager and an async iterator.

    Get it from :meth:`FanOut.subscribe`::

        async with hub.subscribe("/ws/btcusdt", subscribe={"subscribe": "trades"}) as stream:
            async for msg in stream:
                if isinstance(msg, Gap):
                    ...  # the upstream was lost and re-established: re-synchronise
                else:
                    ...

    Messages are shared between subscribers (decoded once): treat them as read-only. Iteration
    ends when the hub closes or the context exits; it raises :class:`SubscriberOverflow` after an
    overflow under ``"disconnect"``, and the stream's error if the upstream gave up
    (``max_reconnect_attempts``).
    """

    __slots__ = (
        "_count",
        "_entered",
        "_error",
        "_finished",
        "_hub",
        "_key",
        "_max_queued",
        "_overflow",
        "_queue",
        "_queue_size",
        "_spec",
        "_stream",
        "_timeout",
        "_waiter",
        "delivered",
        "dropped",
        "gaps",
    )

    def __init__(
        self,
        hub: FanOut,
        key: tuple[Endpoint, object],
        spec: _StreamSpec,
        *,
        queue_size: int,
        overflow: Overflow,
        timeout: float | None,
    ) -> None:
        self._hub = hub
        self._key = key
        self._spec = spec
        self._queue: deque[Any] = deque()
        self._count = 0  # messages in the queue (Gap markers are not counted)
        self._queue_size = queue_size
        self._overflow = overflow
        self._timeout = timeout
        self._waiter: asyncio.Future[None] | None = None
        self._stream: _Stream | None = None
        self._finished = False
        self._entered = False
        self._error: BaseException | None = None
        self._max_queued = 0
        self.delivered = 0
        self.dropped = 0
        self.gaps = 0

    # -- context manager ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Subscription can be entered only once")
        self._entered = True
        await self._hub._join(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()

    # -- iteration ------------------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        queue = self._queue
        while not queue:
            if self._finished:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        item = queue.popleft()
        if item.__class__ is Gap:
            self.gaps += 1
        else:
            self._count -= 1
            self.delivered += 1
            stream = self._stream
            if stream is not None:
                stream.delivered += 1
        return item

    async def get(self, timeout: float | None = None) -> Any:
        """Return the next message or :class:`Gap`, waiting up to ``timeout`` seconds.

        Raises:
            TimeoutError: nothing arrived within ``timeout``.
            StopAsyncIteration: the subscription ended (hub closed or context exited).
            SubscriberOverflow: the subscriber was disconnected by its overflow policy.
        """
        if timeout is None:
            return await self.__anext__()
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    # -- state ----------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """``True`` once the subscription ended (nothing more will be queued)."""
        return self._finished

    @property
    def queued(self) -> int:
        """Messages waiting in this subscriber's queue."""
        return self._count

    def stats(self) -> SubscriberStats:
        """Return a snapshot of this subscriber."""
        return SubscriberStats(
            delivered=self.delivered,
            dropped=self.dropped,
            gaps=self.gaps,
            queued=self._count,
            max_queued=self._max_queued,
            queue_size=self._queue_size,
            overflow=self._overflow,
        )

    def stream_stats(self) -> StreamStats | None:
        """Return a snapshot of the stream this subscriber reads (``None`` once detached)."""
        return self._stream.stats() if self._stream is not None else None

    def __repr__(self) -> str:
        uri = self._key[0].display
        state = "closed" if self._finished else "open"
        return (
            f"<Subscription {uri} {state} queued={self._count}/{self._queue_size} "
            f"delivered={self.delivered} dropped={self.dropped}>"
        )

    # -- called by the stream (synchronous, never blocks) ---------------------------------------

    def _push(self, message: Any) -> None:
        queue = self._queue
        if self._count >= self._queue_size:
            stream = self._stream
            policy = self._overflow
            if policy == "drop_oldest":
                oldest = queue.popleft()
                if oldest.__class__ is Gap:
                    # Keep the gap signal: drop the message after it instead.
                    queue.popleft()
                    queue.appendleft(oldest)
                queue.append(message)
            elif policy == "drop_newest":
                pass
            else:
                self.dropped += 1
                if stream is not None:
                    stream.dropped += 1
                    stream.disconnected += 1
                    stream.detach(self)
                self._finish(
                    SubscriberOverflow(
                        f"subscriber of {self._key[0].display} disconnected: its queue of "
                        f"{self._queue_size} messages overflowed (overflow='disconnect')"
                    )
                )
                return
            self.dropped += 1
            if stream is not None:
                stream.dropped += 1
        else:
            queue.append(message)
            self._count += 1
            self._max_queued = max(self._max_queued, self._count)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _push_gap(self, gap: Gap) -> None:
        queue = self._queue
        if queue and queue[-1].__class__ is Gap:
            last: Gap = queue[-1]
            queue[-1] = Gap(reason=gap.reason, lost_at=last.lost_at, losses=last.losses + 1)
        else:
            queue.append(gap)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self, error: BaseException | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        self._stream = None
        if error is not None:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _leave(self) -> None:
        stream = self._stream
        if stream is not None:
            stream.detach(self)
        self._finished = True
        self._stream = None
        self._queue.clear()
        self._count = 0


@dataclass(frozen=True, slots=True)
class _StreamSpec:
    subscribe: SubscribeSpec | None
    unsubscribe: SubscribeSpec | None
    description: str


class _Stream:
    """One upstream connection and its subscribers (owned by a :class:`FanOut`)."""

    def __init__(self, hub: FanOut, key: tuple[Endpoint, object], spec: _StreamSpec) -> None:
        self.hub = hub
        self.key = key
        self.endpoint = key[0]
        self.spec = spec
        self.subscribers: list[Subscription] = []
        # The subscribers as a tuple, rebuilt lazily at the next dispatch after a change: the
        # reader may detach a subscriber ("disconnect") while iterating over it.
        self._snapshot: tuple[Subscription, ...] | None = ()
        self.conn: WebSocketConnection | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self.linger: asyncio.TimerHandle | None = None
        self.closing = False
        self.healthy = False
        self.undecodable = 0
        self.messages_in = 0
        self.delivered = 0
        self.dropped = 0
        self.reconnects = 0
        self.gaps = 0
        self.disconnected = 0

    # -- subscribers ----------------------------------------------------------------------------

    def attach(self, sub: Subscription) -> None:
        self.subscribers.append(sub)
        self._snapshot = None
        sub._stream = self
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None

    def detach(self, sub: Subscription) -> None:
        try:
            self.subscribers.remove(sub)
        except ValueError:
            return
        self._snapshot = None
        if not self.subscribers and not self.closing:
            self.hub._schedule_linger(self)

    # -- the reader -----------------------------------------------------------------------------

    async def run(self, first_timeout: float | None) -> None:
        hub = self.hub
        pool = hub.pool
        attempt = 0  # consecutive failed attempts since the last healthy upstream
        while True:
            timeout = hub._acquire_timeout if self.ready.done() else first_timeout
            try:
                conn = await pool.acquire(self.endpoint.uri, timeout=timeout)
            except (PoolError, OSError) as exc:
                if not self.ready.done():
                    self.ready.set_exception(exc)
                    return
                attempt += 1
                if not await self._backoff(attempt, exc):
                    return
                continue
            self.conn = conn
            self.healthy = False
            lost: BaseException
            try:
                async with asyncio.timeout(pool.config.connect_timeout):
                    await self._subscribe(conn)
                if self.ready.done():
                    self.reconnects += 1
                else:
                    self.ready.set_result(None)
                await self._pump(conn)
            except (PoolError, OSError) as exc:
                lost = exc
            except TimeoutError as exc:
                lost = PoolError(f"subscribing to {self.endpoint.display} timed out")
                lost.__cause__ = exc
            except BaseException:
                self.conn = None
                await _discard(pool, conn)
                raise
            self.conn = None
            await _discard(pool, conn)
            if not self.ready.done():
                # Subscribing failed on the very first connection: fail the first subscriber.
                self.ready.set_exception(lost)
                return
            self._signal_gap(_describe_loss(lost))
            attempt = 1 if self.healthy else attempt + 1
            if not await self._backoff(attempt, lost):
                return

    async def _subscribe(self, conn: WebSocketConnection) -> None:
        spec = self.spec.subscribe
        if spec is None:
            return
        if callable(spec):
            await spec(conn)
        else:
            await conn.send(spec)

    async def _pump(self, conn: WebSocketConnection) -> None:
        """Receive until the upstream fails (always ends with an exception)."""
        recv = conn.recv
        batch = 0
        while True:
            try:
                message = await recv()
            except ValueError:
                # The decoder rejected a message (decode="json"): skip it, keep the upstream.
                self.undecodable += 1
                continue
            self.healthy = True  # the next loss restarts the backoff from its initial delay
            self.messages_in += 1
            subs = self._snapshot
            if subs is None:
                subs = self._snapshot = tuple(self.subscribers)
            for sub in subs:
                sub._push(message)
            batch += 1
            if batch >= 32:
                # recv() returns buffered messages without suspending: let the subscribers
                # drain their queues now and then during a burst.
                batch = 0
                await asyncio.sleep(0)

    def _signal_gap(self, reason: str) -> None:
        self.gaps += 1
        gap = Gap(reason=reason, lost_at=time.time())
        for sub in tuple(self.subscribers):
            sub._push_gap(gap)

    async def _backoff(self, attempt: int, error: BaseException | None) -> bool:
        hub = self.hub
        limit = hub._max_reconnect_attempts
        if limit is not None and attempt > limit:
            failure = PoolError(
                f"upstream {self.endpoint.display} lost and not re-established after "
                f"{limit} attempt(s): {_describe_loss(error)}"
            )
            failure.__cause__ = error
            hub._fail_stream(self, failure)
            return False
        base = hub._initial_delay * (2 ** min(attempt - 1, 30))
        delay = min(hub._max_delay, base) * (0.5 + random.random() / 2)
        logger.debug(
            "fan-out: upstream %s lost (%s); reconnecting in %.3f s",
            self.endpoint.display,
            _describe_loss(error),
            delay,
        )
        await asyncio.sleep(delay)
        return True

    def stats(self) -> StreamStats:
        return StreamStats(
            uri=self.endpoint.display,
            subscription=self.spec.description,
            subscribers=len(self.subscribers),
            connected=self.conn is not None and not self.conn.closed and self.ready.done(),
            messages_in=self.messages_in,
            delivered=self.delivered,
            dropped=self.dropped,
            reconnects=self.reconnects,
            gaps=self.gaps,
            disconnected=self.disconnected,
            undecodable=self.undecodable,
            queued=sum(s._count for s in self.subscribers),
        )


async def _discard(pool: WebSocketPool, conn: WebSocketConnection) -> None:
    # The upstream carries a subscription: never give it back for reuse.
    if conn.closed:
        conn._mark("lost")  # counted in the pool's lost/reconnects like any dropped connection
    with contextlib.suppress(PoolError):
        await pool.release(conn, discard=True)


def _describe_loss(error: BaseException | None) -> str:
    if error is None:
        return "upstream closed normally"
    text = str(error) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _canonical(spec: SubscribeSpec | None) -> object:
    """The identity of a subscription: equal messages share one upstream."""
    if spec is None:
        return None
    if callable(spec):
        return ("callable", id(spec), spec)
    if isinstance(spec, str):
        return ("str", spec)
    if isinstance(spec, bytes):
        return ("bytes", spec)
    try:
        return ("json", json.dumps(spec, sort_keys=True, separators=(",", ":")))
    except (TypeError, ValueError):
        raise ConfigError(
            "subscribe", type(spec).__name__, "must be JSON-serialisable, str, bytes or callable"
        ) from None


def _describe_spec(spec: SubscribeSpec | None) -> str:
    if spec is None:
        return "-"
    if callable(spec):
        return f"<{getattr(spec, '__qualname__', type(spec).__name__)}>"
    if isinstance(spec, bytes):
        return f"<{len(spec)} bytes>"
    if isinstance(spec, str):
        try:
            parsed = json.loads(spec)
        except ValueError:
            # Free text may carry a token: show its size only.
            return f"<text, {len(spec)} chars>"
        spec = parsed
    text = json.dumps(redact_message(spec), sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


class FanOut:
    """A hub sharing one upstream WebSocket per stream among many local subscribers.

    Example::

        pool = create_pool("wss://stream.example.com")
        async with FanOut(pool) as hub:
            async with hub.subscribe("/ws/btcusdt", subscribe={"subscribe": "trades"}) as s:
                async for msg in s:
                    ...

    Args:
        pool: the :class:`WebSocketPool` upstream connections are borrowed from (each stream
            holds one connection while it has subscribers; the pool's caps apply).
        queue_size: default bound of each subscriber's queue, in messages.
        overflow: default overflow policy (see :data:`Overflow`).
        linger: seconds the upstream stays open after its last subscriber left (0: close at
            once), so that a quick re-subscribe does not reconnect.
        reconnect_initial_delay: first backoff delay after an upstream loss (default: the
            pool's ``reconnect_initial_delay``).
        reconnect_max_delay: cap of the backoff (default: the pool's ``reconnect_max_delay``).
        max_reconnect_attempts: give up after this many consecutive failed attempts and end
            every subscriber's iteration with the error (``None``: retry forever).
        acquire_timeout: bound on obtaining an upstream connection, per attempt (default: the
            pool's ``acquire_timeout``).

    Raises:
        ConfigError: an invalid value.
    """

    def __init__(
        self,
        pool: WebSocketPool,
        *,
        queue_size: int = 1000,
        overflow: Overflow = "drop_oldest",
        linger: float = 5.0,
        reconnect_initial_delay: float | None = None,
        reconnect_max_delay: float | None = None,
        max_reconnect_attempts: int | None = None,
        acquire_timeout: float | None = None,
    ) -> None:
        if not isinstance(pool, WebSocketPool):
            raise ConfigError("pool", type(pool).__name__, "must be a WebSocketPool")
        _check_queue(queue_size, overflow)
        _check_seconds("linger", linger, allow_zero=True)
        cfg = pool.config
        initial = (
            cfg.reconnect_initial_delay
            if reconnect_initial_delay is None
            else (reconnect_initial_delay)
        )
        maximum = cfg.reconnect_max_delay if reconnect_max_delay is None else reconnect_max_delay
        _check_seconds("reconnect_initial_delay", initial)
        _check_seconds("reconnect_max_delay", maximum)
        if maximum < initial:
            raise ConfigError(
                "reconnect_max_delay",
                maximum,
                f"must be at least reconnect_initial_delay ({initial})",
            )
        if max_reconnect_attempts is not None and (
            isinstance(max_reconnect_attempts, bool)
            or not isinstance(max_reconnect_attempts, int)
            or max_reconnect_attempts < 1
        ):
            raise ConfigError(
                "max_reconnect_attempts", max_reconnect_attempts, "must be an integer >= 1 or None"
            )
        if acquire_timeout is not None:
            _check_seconds("acquire_timeout", acquire_timeout)
        self.pool: Final = pool
        self._queue_size = queue_size
        self._overflow: Overflow = overflow
        self._linger = float(linger)
        self._initial_delay = float(initial)
        self._max_delay = float(maximum)
        self._max_reconnect_attempts = max_reconnect_attempts
        self._acquire_timeout = acquire_timeout
        self._streams: dict[tuple[Endpoint, object], _Stream] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- public API -----------------------------------------------------------------------------

    def subscribe(
        self,
        uri_or_path: str,
        subscribe: SubscribeSpec | None = None,
        *,
        unsubscribe: SubscribeSpec | None = None,
        queue_size: int | None = None,
        overflow: Overflow | None = None,
        timeout: float | None = None,
    ) -> Subscription:
        """Subscribe to a stream: ``async with hub.subscribe(...) as stream``.

        Entering joins the stream with the same URI and subscription, or opens it: then it
        waits until the upstream is connected and the subscription sent (bounded by
        ``timeout``, default the pool's ``acquire_timeout``), and raises if that fails.

        Args:
            uri_or_path: a path joined to the pool's ``base_uri``, or a full URI.
            subscribe: the subscription, sent after every (re)connect (see
                :data:`SubscribeSpec`); ``None`` for servers that stream without being asked.
            unsubscribe: sent (best effort) before the upstream closes after the last
                subscriber left and the linger time passed.
            queue_size: this subscriber's queue bound (default: the hub's).
            overflow: this subscriber's overflow policy (default: the hub's).
            timeout: bound on opening the stream (first subscriber only).

        Raises:
            ConfigError: a bad URI, subscription, queue size or policy (at once).
            PoolClosed: the hub is closed (when entering).
            ConnectError, PoolTimeout: the upstream could not be opened (when entering).
        """
        endpoint = self.pool.endpoint(uri_or_path)
        size = self._queue_size if queue_size is None else queue_size
        policy = self._overflow if overflow is None else overflow
        _check_queue(size, policy)
        if timeout is not None:
            _check_seconds("timeout", timeout)
        key = (endpoint, _canonical(subscribe))
        spec = _StreamSpec(subscribe, unsubscribe, _describe_spec(subscribe))
        return Subscription(self, key, spec, queue_size=size, overflow=policy, timeout=timeout)

    def stats(self) -> list[StreamStats]:
        """Return a snapshot of every open stream."""
        return [stream.stats() for stream in self._streams.values()]

    @property
    def closed(self) -> bool:
        """``True`` once :meth:`close` has begun."""
        return self._closed

    async def close(self) -> None:
        """Close every stream and end every subscriber's iteration (idempotent).

        Upstream connections are closed (never returned to the pool); every task the hub
        started is finished when this returns. The pool itself stays open.
        """
        self._closed = True
        streams = list(self._streams.values())
        self._streams.clear()
        upstreams = [s.conn for s in streams if s.conn is not None]
        for stream in streams:
            self._stop(stream)
        await self._wait_tasks()
        if upstreams:
            # The readers gave their connections back for closing: wait (bounded) until they
            # are closed, so that nothing of the hub outlives close().
            waits = [asyncio.ensure_future(conn.ws.wait_closed()) for conn in upstreams]
            _done, pending = await asyncio.wait(waits, timeout=self.pool.config.close_timeout)
            for fut in pending:
                fut.cancel()
            if pending:
                await asyncio.wait(pending)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        subs = sum(len(s.subscribers) for s in self._streams.values())
        state = "closed" if self._closed else "open"
        return f"<FanOut {state} streams={len(self._streams)} subscribers={subs}>"

    # -- internals ------------------------------------------------------------------------------

    async def _join(self, sub: Subscription) -> None:
        if self._closed:
            raise PoolClosed("the fan-out hub is closed")
        stream = self._streams.get(sub._key)
        if stream is None or stream.closing:
            stream = _Stream(self, sub._key, sub._spec)
            self._streams[sub._key] = stream
            stream.task = self._spawn(stream.run(sub._timeout), stream)
        stream.attach(sub)
        if stream.ready.done() and stream.ready.exception() is None:
            return
        try:
            # Bounded by the reader: acquire (timeout) then subscribe (connect_timeout).
            await asyncio.shield(stream.ready)
        except BaseException:
            sub._leave()
            raise

    def _spawn(self, coro: Any, stream: _Stream) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(
            coro, name=f"poolkit fan-out {stream.endpoint.display}"
        )
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._reaped(t, stream))
        return task

    def _reaped(self, task: asyncio.Task[Any], stream: _Stream) -> None:
        self._tasks.discard(task)
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            # A bug, or a decode callable raising something other than ValueError: say so, and
            # hand the error to the subscribers rather than ending their iteration quietly.
            logger.error("fan-out: reader of %s failed", stream.endpoint.display, exc_info=failure)
        if task is stream.task:
            # The reader ended (closed, gave up, or failed to open): forget the stream.
            if self._streams.get(stream.key) is stream:
                del self._streams[stream.key]
            if not stream.ready.done():
                stream.ready.set_exception(failure or PoolClosed("the fan-out hub is closed"))
            if not stream.ready.cancelled():
                stream.ready.exception()  # retrieved: no "exception never retrieved" noise
            for sub in list(stream.subscribers):
                sub._finish(failure)
            stream.subscribers.clear()
            stream._snapshot = ()

    def _schedule_linger(self, stream: _Stream) -> None:
        if self._closed or stream.closing:
            return
        if self._linger == 0:
            self._begin_close(stream)
            return
        loop = asyncio.get_running_loop()
        stream.linger = loop.call_later(self._linger, self._linger_expired, stream)

    def _linger_expired(self, stream: _Stream) -> None:
        stream.linger = None
        if not stream.subscribers and not stream.closing:
            self._begin_close(stream)

    def _begin_close(self, stream: _Stream) -> None:
        stream.closing = True
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]
        unsubscribe = stream.spec.unsubscribe
        conn = stream.conn
        if unsubscribe is not None and conn is not None and not conn.closed:
            task = asyncio.get_running_loop().create_task(
                self._unsubscribe_then_stop(stream),
                name=f"poolkit fan-out unsubscribe {stream.endpoint.display}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._stop(stream)

    async def _unsubscribe_then_stop(self, stream: _Stream) -> None:
        conn = stream.conn
        spec = stream.spec.unsubscribe
        try:
            if conn is not None and spec is not None:
                async with asyncio.timeout(self.pool.config.close_timeout):
                    if callable(spec):
                        await spec(conn)
                    else:
                        await conn.send(spec)
        except Exception as exc:
            logger.debug("fan-out: unsubscribe from %s failed: %r", stream.endpoint.display, exc)
        finally:
            self._stop(stream)

    def _stop(self, stream: _Stream) -> None:
        stream.closing = True
        if stream.linger is not None:
            stream.linger.cancel()
            stream.linger = None
        for sub in list(stream.subscribers):
            sub._finish()
        stream.subscribers.clear()
        stream._snapshot = ()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()

    def _fail_stream(self, stream: _Stream, error: BaseException) -> None:
        stream.closing = True
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]
        for sub in list(stream.subscribers):
            sub._finish(error)
        stream.subscribers.clear()
        stream._snapshot = ()

    async def _wait_tasks(self) -> None:
        while self._tasks:
            pending = list(self._tasks)
            await asyncio.wait(pending)


def _check_queue(queue_size: object, overflow: object) -> None:
    if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
        raise ConfigError("queue_size", queue_size, "must be an integer >= 1")
    if overflow not in _OVERFLOWS:
        raise ConfigError(
            "overflow", overflow, 'must be "drop_oldest", "drop_newest" or "disconnect"'
        )


def _check_seconds(name: str, value: object, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(name, value, "must be a number of seconds")
    if value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        raise ConfigError(name, value, "must be >= 0" if allow_zero else "must be > 0")
