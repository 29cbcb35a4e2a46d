"""Parsing, validating and redacting the target URL of ``poolkit bench``.

A URL picks the backend by its scheme. Everything shown to the user goes through
:func:`redact_url` (or :func:`scrub`, for free text such as a driver's error message), so a
password or token in the URL never reaches the terminal, the JSON output or a log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ("BadURL", "Target", "parse_target", "redact_url", "scrub")

#: Scheme -> (backend, default port). The backend is also the name of the extra to install.
SCHEMES: Final[dict[str, tuple[str, int]]] = {
    "postgresql": ("postgres", 5432),
    "postgres": ("postgres", 5432),
    "mysql": ("mysql", 3306),
    "http": ("http", 80),
    "https": ("http", 443),
    "ws": ("websocket", 80),
    "wss": ("websocket", 443),
}

#: Query parameters whose values are secrets (compared case-insensitively).
_SECRET_PARAMS: Final = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "sslpassword",
        "token",
        "access_token",
        "auth",
        "auth_token",
        "api_key",
        "apikey",
        "key",
        "secret",
        "signature",
        "sig",
    }
)

REDACTED: Final = "***"


class BadURL(ValueError):
    """The target URL cannot be used; the message is safe to print (already redacted)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A validated benchmark target.

    Attributes:
        url: the URL as given (may contain credentials: never print it).
        backend: ``"postgres"``, ``"mysql"``, ``"http"`` or ``"websocket"``.
        scheme: the URL scheme, lower case.
        host: the host name or address.
        port: the port (the scheme's default if the URL has none).
        secrets: the credential strings found in the URL, for :func:`scrub`.
    """

    url: str
    backend: str
    scheme: str
    host: str
    port: int
    secrets: tuple[str, ...]

    @property
    def display(self) -> str:
        """The URL with every credential replaced by ``***``."""
        return redact_url(self.url)

    @property
    def is_database(self) -> bool:
        """Whether the target is a database server (it has a connection limit to read)."""
        return self.backend in ("postgres", "mysql")


def redact_url(url: str) -> str:
    """Return ``url`` with its password and secret query parameters replaced by ``***``.

    The user name stays (it helps to tell targets apart and is not a secret). A URL that cannot
    be parsed is reduced to its scheme, so nothing unparsed leaks.

    Example:
        >>> redact_url("postgresql://app:s3cret@db:5432/main?sslpassword=x")
        'postgresql://app:***@db:5432/main?sslpassword=***'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return _scheme_only(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostport}" if sep else f"{user}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, REDACTED if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _scheme_only(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return f"{scheme}://{REDACTED}"
    return REDACTED


def _secrets_of(url: str) -> tuple[str, ...]:
    found: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return ()
    if parts.password:
        found.append(parts.password)
        found.append(unquote(parts.password))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.lower() in _SECRET_PARAMS and value:
            found.append(value)
    # Longest first, so that a secret containing another is replaced whole.
    return tuple(sorted({s for s in found if s}, key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every occurrence of each secret in ``text`` with ``***``.

    Used on messages that come from drivers and servers, which may echo a DSN back.
    """
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def parse_target(url: str) -> Target:
    """Validate ``url`` and return the :class:`Target` it names.

    Raises:
        BadURL: the URL has no or an unsupported scheme, no host, or an invalid port. The
            message names the (redacted) URL and what is wrong with it.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url.strip())
    except ValueError as exc:
        raise BadURL(f"invalid URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        raise BadURL(
            f"invalid URL {shown!r}: expected scheme://host[:port]/..., with a scheme among "
            f"{', '.join(sorted(SCHEMES))}"
        )
    if scheme not in SCHEMES:
        raise BadURL(
            f"unsupported URL scheme {scheme!r} in {shown!r}: use one of "
            f"{', '.join(sorted(SCHEMES))}"
        )
    backend, default_port = SCHEMES[scheme]
    host = parts.hostname
    if not host:
        raise BadURL(f"invalid URL {shown!r}: no host")
    try:
        port = parts.port
    except ValueError:
        raise BadURL(f"invalid URL {shown!r}: the port must be a number from 0 to 65535") from None
    if port == 0:
        raise BadURL(f"invalid URL {shown!r}: port 0 cannot be connected to")
    return Target(
        url=url.strip(),
        backend=backend,
        scheme=scheme,
        host=host,
        port=port if port is not None else default_port,
        secrets=_secrets_of(url.strip()),
    )
