"""WebSocket targets: resolving a path against ``base_uri`` and redacting secrets.

A pooled WebSocket is keyed by its full URI, and URIs often carry credentials: a password in
the user-info part (``wss://user:secret@host``) or an API token in the query string
(``?token=...``). The pool therefore never keys, names or reports a raw URI; it uses an
:class:`Endpoint`, whose ``repr``/``str``/``format`` show the redacted form while equality and
hashing use the real URI.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from ..errors import ConfigError

__all__ = ("Endpoint", "redact_message", "redact_uri", "resolve_uri", "uri_secrets")

_SCHEMES: Final = ("ws", "wss")

# Query parameters whose *name* matches this are masked in every displayed URI. Their values are
# kept out of reprs, logs, error messages and stats; other parameters (``stream=btcusdt``) stay
# readable because they are what tells two pooled URIs apart.
_SECRET_PARAM: Final = re.compile(
    r"(token|key|secret|pass|pwd|auth|sig|session|jwt|credential|code|bearer)", re.IGNORECASE
)
_MASK: Final = "***"


def resolve_uri(base_uri: str | None, uri_or_path: str) -> str:
    """Return the absolute ``ws://`` or ``wss://`` URI for ``uri_or_path``.

    A full URI is returned unchanged. A path starting with ``/`` replaces the path of
    ``base_uri`` (``wss://h/api`` + ``/ws/x`` -> ``wss://h/ws/x``); any other path is appended
    to it (``wss://h/api`` + ``ws/x`` -> ``wss://h/api/ws/x``). A query string in the path is
    kept; ``base_uri``'s own query string is dropped when a path is given.

    Raises:
        ConfigError: ``uri_or_path`` is not a string, uses another scheme, or is a path while
            no ``base_uri`` was configured.
    """
    if not isinstance(uri_or_path, str) or not uri_or_path:
        raise ConfigError("uri", uri_or_path, "must be a non-empty ws:// or wss:// URI or path")
    head = uri_or_path.split(":", 1)[0].lower() if "://" in uri_or_path else ""
    if head:
        if head not in _SCHEMES:
            raise ConfigError("uri", redact_uri(uri_or_path), "the scheme must be ws:// or wss://")
        check_uri(uri_or_path, field="uri")
        return uri_or_path
    if base_uri is None:
        raise ConfigError(
            "uri", redact_uri(uri_or_path), "a path needs base_uri (or pass a full ws:// URI)"
        )
    base = urlsplit(base_uri)
    path, _, query = uri_or_path.partition("?")
    joined = path if path.startswith("/") else base.path.rstrip("/") + "/" + path
    return urlunsplit((base.scheme, base.netloc, joined, query, ""))


def check_uri(uri: str, *, field: str) -> None:
    """Raise :class:`ConfigError` (naming ``field``) unless ``uri`` is a usable ws/wss URI."""
    if not isinstance(uri, str) or not uri:
        raise ConfigError(field, uri, "must be a non-empty ws:// or wss:// URI")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(field, redact_uri(uri), f"not a valid URI ({exc})") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise ConfigError(field, redact_uri(uri), "the scheme must be ws:// or wss://")
    if not parts.hostname:
        raise ConfigError(field, redact_uri(uri), "the URI has no host")
    if parts.fragment:
        raise ConfigError(field, redact_uri(uri), "a WebSocket URI cannot have a #fragment")
    del port


def redact_uri(uri: object) -> str:
    """Return ``uri`` with its password and secret-looking query values replaced by ``***``.

    The user name and the path are kept; the password in the user-info part and the value of
    every query parameter whose name contains ``token``, ``key``, ``secret``, ``pass``,
    ``auth``, ``sig``, ``session``, ``jwt``, ``credential``, ``code`` or ``bearer`` are
    masked. Anything that does not parse as a URI is shown as ``<unparsable URI>``.
    """
    if not isinstance(uri, str):
        return f"<{type(uri).__name__}>"
    try:
        parts = urlsplit(uri)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, sep, _password = userinfo.partition(":")
            netloc = f"{user}:{_MASK}@{hostport}" if sep else f"{user}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = "&".join(
                f"{quote(k, safe='')}={_MASK if _SECRET_PARAM.search(k) else quote(v, safe='/,:')}"
                for k, v in pairs
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<unparsable URI>"


def uri_secrets(uri: str) -> list[str]:
    """Return the secret strings carried by ``uri``, in every form a log line may show them.

    That is the password (raw and percent-decoded), the HTTP Basic credential websockets
    derives from the user-info part, and the values of secret-looking query parameters (raw
    and decoded). Used to scrub websockets' own debug log lines.
    """
    found: list[str] = []
    try:
        parts = urlsplit(uri)
    except ValueError:
        return found
    if parts.password:
        user = unquote(parts.username or "")
        password = unquote(parts.password)
        found += [parts.password, password]
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        found.append(basic)
    for raw in parts.query.split("&"):
        key, _, value = raw.partition("=")
        if value and _SECRET_PARAM.search(unquote(key)):
            found += [value, unquote(value)]
    return found


def redact_message(message: Any) -> Any:
    """Return a copy of a JSON-like message with secret-looking values masked.

    The value of every mapping key matching the same pattern as :func:`redact_uri`'s query
    parameters (``token``, ``key``, ``secret``, ``auth``, ``signature`` ...) becomes ``***``, at
    any depth. Used to describe subscriptions in stats and reprs.
    """
    if isinstance(message, dict):
        return {
            k: _MASK if isinstance(k, str) and _SECRET_PARAM.search(k) else redact_message(v)
            for k, v in message.items()
        }
    if isinstance(message, list | tuple):
        return [redact_message(v) for v in message]
    return message


class Endpoint:
    """A pooled WebSocket target: the real URI, shown redacted.

    Endpoints are the keys of the underlying :class:`~poolkit.KeyedPool`. Two endpoints are
    equal when their URIs are; ``repr()``, ``str()`` and f-strings show :attr:`display`, never
    the raw URI, so a key printed by the core (in a log, an error or a stats mapping) cannot
    leak a token.

    Attributes:
        uri: the absolute URI used to connect (may contain credentials: do not log it).
        display: the redacted URI (see :func:`redact_uri`).
    """

    __slots__ = ("display", "uri")

    def __init__(self, uri: str) -> None:
        check_uri(uri, field="uri")
        self.uri: Final = uri
        self.display: Final = redact_uri(uri)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Endpoint) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __repr__(self) -> str:
        return f"Endpoint({self.display!r})"

    def __str__(self) -> str:
        return self.display

    def __format__(self, spec: str) -> str:
        return format(self.display, spec)
