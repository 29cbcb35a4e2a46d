"""WebSocketConnector: the :class:`~poolkit.Connector` for one WebSocket URI (websockets).

The connector does I/O and holds no policy: the pool decides when to connect, check, reset and
close, and bounds each call with its own timeout.

* ``connect`` opens a websockets ``ClientConnection`` (TLS verified by default for ``wss://``)
  and maps failures to :class:`~poolkit.ConnectError`, :class:`~poolkit.TLSError` (certificate
  or handshake) and :class:`~poolkit.AuthenticationError` (HTTP 401/403 on the upgrade).
* ``check`` is a ping/pong round trip. It also enforces the ``idle_messages`` policy: a message
  that arrived on an idle connection is stale for the next borrower.
* ``reset`` does no I/O: it refuses (so the pool closes the connection) anything that is not
  :meth:`~WebSocketConnection.is_clean` after the ``on_release`` hook ran.
* ``is_closed``/``needs_reset``/``abort``/``describe`` are the optional synchronous
  capabilities.
"""

from __future__ import annotations

import json
import logging
import ssl as ssl_module
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..errors import AuthenticationError, ConfigError, ConnectError, ConnectionBroken, TLSError
from ._connection import (
    Decode,
    WebSocketConnection,
    WireCounters,
    check_decode,
    compact_dumps,
)
from ._uri import Endpoint, check_uri, uri_secrets

__all__ = ("IdleMessages", "RedactingLogger", "WebSocketConnector")

#: What to do with messages that arrive while a connection sits idle in the pool:
#: ``"close"`` (default) closes the connection (nothing stale reaches the next borrower);
#: ``"discard"`` drops the messages, counts them, and keeps the connection.
IdleMessages = Literal["close", "discard"]

_AUTH_STATUSES: Final = (401, 403)


class WebSocketConnector:
    """Opens, checks, resets and closes WebSocket connections to one URI.

    Most users never build one: :func:`~poolkit.websocket.create_pool` makes one per URI. Use
    it directly to pool a single URI with a plain :class:`~poolkit.Pool`::

        pool = poolkit.Pool(WebSocketConnector("wss://example.com/feed"), max_size=4)

    Args:
        uri: the ``ws://`` or ``wss://`` URI (or an :class:`Endpoint`). It may carry credentials
            (user-info, ``?token=``); they are never shown (see :func:`redact_uri`).
        ssl: the TLS context for ``wss://``. ``None`` means a default, *verifying* context
            (system CAs, hostname check). Pass your own to trust a private CA; there is no
            switch to turn verification off. Rejected for ``ws://``.
        headers: extra HTTP headers for the opening handshake (e.g. ``Authorization``); never
            logged or shown.
        decode: how received messages are decoded (see :data:`Decode`).
        dumps: encoder for non-``str``/``bytes`` messages passed to ``send`` (compact JSON).
        loads: JSON decoder used by ``decode="auto"``/``"json"`` (e.g. ``orjson.loads``).
        idle_messages: policy for messages arriving on an idle connection (see
            :data:`IdleMessages`).
        ping_interval: websockets' keepalive ping interval while the connection is open
            (in use or idle); ``None`` disables keepalive.
        ping_timeout: websockets' keepalive pong timeout; the connection is closed when it
            expires.
        close_timeout: bound on websockets' closing handshake before the TCP connection is
            dropped.
        open_timeout: bound on the opening handshake (the pool's ``connect_timeout`` also
            applies).
        max_message_size: largest incoming message in bytes (``None``: no limit).
        max_queue: websockets' receive buffer high-water mark, in frames; reading pauses above
            it (back-pressure towards the server).
        compression: ``"deflate"`` (default) or ``None``.
        subprotocols: subprotocols to offer, in order of preference.
        origin: value of the ``Origin`` header.
        connect_kwargs: any other keyword argument for ``websockets.asyncio.client.connect``
            (e.g. ``proxy``, ``user_agent_header``).
        counters: traffic counters to update (shared per URI by :func:`create_pool`); a new
            set by default.

    Raises:
        ConfigError: a bad URI, decode mode, policy or TLS combination.
    """

    def __init__(
        self,
        uri: str | Endpoint,
        *,
        ssl: ssl_module.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        decode: Decode = "auto",
        dumps: Callable[[Any], str | bytes] = compact_dumps,
        loads: Callable[[str | bytes], Any] = json.loads,
        idle_messages: IdleMessages = "close",
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 5.0,
        open_timeout: float | None = 10.0,
        max_message_size: int | None = 2**20,
        max_queue: int | None = 16,
        compression: str | None = "deflate",
        subprotocols: Sequence[str] | None = None,
        origin: str | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
        counters: WireCounters | None = None,
    ) -> None:
        self.endpoint: Final = uri if isinstance(uri, Endpoint) else Endpoint(uri)
        secure = self.endpoint.uri.lower().startswith("wss:")
        if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
            raise ConfigError("ssl", ssl, "must be an ssl.SSLContext or None")
        if ssl is not None and not secure:
            raise ConfigError("ssl", ssl, "an SSL context needs a wss:// URI")
        check_decode(decode)
        if idle_messages not in ("close", "discard"):
            raise ConfigError("idle_messages", idle_messages, 'must be "close" or "discard"')
        if origin is not None:
            check_uri(origin.replace("http", "ws", 1), field="origin")
        self._decode: Decode = decode
        self._dumps = dumps
        self._loads = loads
        self.idle_messages: IdleMessages = idle_messages
        self.counters: Final = counters if counters is not None else WireCounters()
        kwargs: dict[str, Any] = {
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "close_timeout": close_timeout,
            "open_timeout": open_timeout,
            "max_size": max_message_size,
            "max_queue": max_queue,
            "compression": compression,
        }
        if secure:
            kwargs["ssl"] = ssl if ssl is not None else ssl_module.create_default_context()
        if headers:
            kwargs["additional_headers"] = dict(headers)
        if subprotocols:
            kwargs["subprotocols"] = list(subprotocols)
        if origin is not None:
            kwargs["origin"] = origin
        secrets = uri_secrets(self.endpoint.uri) + [str(v) for v in (headers or {}).values()]
        secrets = sorted({x for x in secrets if len(x) >= 3}, key=len, reverse=True)
        if secrets:
            # websockets logs the request line and headers at DEBUG: scrub what we know is secret.
            kwargs["logger"] = RedactingLogger(logging.getLogger("websockets.client"), secrets)
        if connect_kwargs:
            kwargs.update(connect_kwargs)
        self._kwargs = kwargs

    # -- Connector ------------------------------------------------------------------------------

    async def connect(self) -> WebSocketConnection:
        """Open one WebSocket connection.

        Raises:
            TLSError: the TLS handshake or certificate verification failed.
            AuthenticationError: the server answered the upgrade with HTTP 401 or 403.
            ConnectError: any other failure (refused, reset, bad handshake, timeout).
        """
        target = self.endpoint.display
        try:
            ws = await ws_connect(self.endpoint.uri, **self._kwargs)
        except ssl_module.SSLCertVerificationError as exc:
            raise TLSError(
                f"TLS certificate verification failed for {target}: "
                f"{exc.verify_message or exc.reason}",
                target=target,
            ) from exc
        except ssl_module.SSLError as exc:
            raise TLSError(
                f"TLS handshake with {target} failed: {exc.reason or type(exc).__name__}",
                target=target,
            ) from exc
        except InvalidStatus as exc:
            status = exc.response.status_code
            cls = AuthenticationError if status in _AUTH_STATUSES else ConnectError
            raise cls(
                f"{target} rejected the WebSocket upgrade with HTTP {status}", target=target
            ) from exc
        except InvalidURI:
            # websockets' message repeats the raw URI: do not chain it.
            raise ConnectError(f"invalid WebSocket URI {target}", target=target) from None
        except InvalidHandshake as exc:
            raise ConnectError(
                f"WebSocket handshake with {target} failed: {type(exc).__name__}", target=target
            ) from exc
        except TimeoutError as exc:
            raise ConnectError(
                f"timed out opening a WebSocket connection to {target}", target=target
            ) from exc
        except OSError as exc:
            raise ConnectError(
                f"cannot connect to {target}: {exc.strerror or exc}", target=target
            ) from exc
        self.counters.note_connected()
        return WebSocketConnection(
            ws,
            endpoint=self.endpoint,
            counters=self.counters,
            decode=self._decode,
            dumps=self._dumps,
            loads=self._loads,
        )

    async def check(self, conn: WebSocketConnection) -> None:
        """Ping ``conn`` and wait for the pong (the pool bounds this with ``check_timeout``).

        Raises:
            ConnectionBroken: the connection is closed, failed the ping, or (with
                ``idle_messages="close"``) received messages while idle.
        """
        if conn.closed:
            conn._mark("lost")
            raise ConnectionBroken(f"WebSocket connection to {conn.target} is closed")
        self._settle_idle(conn)
        if not conn.is_clean():
            conn._mark("dirty")
            raise ConnectionBroken(
                f"WebSocket connection to {conn.target} received {conn.pending} unread "
                "frame(s) while idle"
            )
        try:
            pong = await conn.ws.ping()
            await pong
        except ConnectionClosed as exc:
            self.counters.ping_failures += 1
            conn._mark("lost")
            raise ConnectionBroken(
                f"WebSocket connection to {conn.target} closed during a ping"
            ) from exc
        except BaseException:
            # Cancelled by the pool's check_timeout (or by the pool closing): the pong never
            # came in time; the pool discards the connection.
            self.counters.ping_failures += 1
            conn._mark("lost")
            raise

    async def reset(self, conn: WebSocketConnection) -> None:
        """Refuse an unclean connection so that the pool closes it (no I/O).

        Raises:
            ConnectionBroken: ``conn`` is closed, holds unread messages, or a send/receive was
                interrupted.
        """
        self._refuse_unclean(conn, "at release")

    async def close(self, conn: WebSocketConnection) -> None:
        """Close ``conn`` with a normal closing handshake; never raises for a dead connection."""
        conn._released = True
        try:
            await conn.ws.close()
        except Exception:
            pass

    # -- optional capabilities --------------------------------------------------------------------

    def is_closed(self, conn: WebSocketConnection) -> bool:
        """Return ``True`` if ``conn`` must not be handed out; no I/O.

        A closed connection always qualifies. An idle one also qualifies when it is not
        :meth:`~WebSocketConnection.is_clean` (e.g. a message arrived while it was idle under
        ``idle_messages="close"``). A connection still leased is judged on closure only: its
        cleanliness is decided by :meth:`reset`, after the ``on_release`` hook had a chance to
        unsubscribe and :meth:`~WebSocketConnection.discard_pending`.
        """
        if conn.closed:
            conn._mark("lost")
            return True
        if conn._leased:
            return False
        self._settle_idle(conn)
        if not conn.is_clean():
            conn._mark("dirty")
            return True
        return False

    def needs_reset(self, conn: WebSocketConnection) -> bool:
        """Return ``True`` unless ``conn`` is clean (then the release skips the reset task)."""
        return not conn.is_clean()

    def abort(self, conn: WebSocketConnection) -> None:
        """Drop the TCP connection now, without a closing handshake; never raises."""
        conn._released = True
        abort_transport(conn)

    def describe(self) -> str:
        """Return the redacted URI."""
        return self.endpoint.display

    def stats(self) -> dict[str, float]:
        """Return the traffic counters (the core puts them in ``PoolStats.extra``)."""
        return {name: float(value) for name, value in self.counters.as_dict().items()}

    def __repr__(self) -> str:
        return f"WebSocketConnector({self.endpoint.display!r})"

    # -- internals ------------------------------------------------------------------------------

    def _settle_idle(self, conn: WebSocketConnection) -> None:
        if self.idle_messages == "discard" and conn.pending:
            conn.discard_pending()

    def _refuse_unclean(self, conn: WebSocketConnection, when: str) -> None:
        if conn.is_clean():
            return
        if conn.closed:
            conn._mark("lost")
            raise ConnectionBroken(f"WebSocket connection to {conn.target} is closed")
        conn._mark("dirty")
        raise ConnectionBroken(
            f"WebSocket connection to {conn.target} is not reusable {when}: "
            f"{conn.pending} unread frame(s) buffered or a send/receive was interrupted"
        )


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter that replaces known secret strings in every message by ``***``.

    Given to websockets as its connection logger when the URI or the headers carry
    credentials: websockets logs the request line (with the query string) and every request
    header (``Authorization``) at DEBUG level.
    """

    def __init__(self, logger: logging.Logger, secrets: Sequence[str]) -> None:
        super().__init__(logger, {})
        self._secrets = tuple(secrets)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Format the message, scrub the secrets, then log it."""
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join([str(msg), *map(str, args)])
        for secret in self._secrets:
            text = text.replace(secret, "***")
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, "%s", text, **kwargs)


def abort_transport(conn: WebSocketConnection) -> None:
    """Close ``conn``'s socket at once; works even when its event loop is closed."""
    transport = getattr(conn.ws, "transport", None)
    if transport is None:
        return
    try:
        transport.abort()
        return
    except Exception:
        pass
    # The loop is closed: abort() could not schedule connection_lost(). Close the socket
    # itself so that nothing leaks (and no ResourceWarning fires at garbage collection).
    sock = transport.get_extra_info("socket")
    raw = getattr(sock, "_sock", sock)
    try:
        raw.close()
    except Exception:
        pass
