"""Pieces of the HTTP backend that do no I/O: origins, URL redaction, error scrubbing, TLS
settings and the per-origin counters.

Redaction rule (used for every URL poolkit shows: reprs, logs, error messages, stats keys): the
userinfo (``user:password@``) and the fragment are dropped, and every query *value* is replaced
by ``***`` while the names stay (``/search?token=***&page=***``), so a token passed in the query
string never reaches a log line or an exception message.
"""

from __future__ import annotations

import functools
import logging
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from typing import Final

from aiohttp import ClientResponseError, InvalidURL, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from poolkit import ConfigError

__all__ = (
    "HTTPCounters",
    "Origin",
    "TLSSettings",
    "redact_url",
    "resolve_url",
    "scrub_exception",
    "scrub_text",
)

logger = logging.getLogger("poolkit.http")

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})
# Anything that looks like an absolute URL inside a message.
_URL_IN_TEXT: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


@dataclass(frozen=True, slots=True)
class Origin:
    """The ``(scheme, host, port)`` triple a pool of connections is bound to.

    Attributes:
        scheme: ``"http"`` or ``"https"``.
        host: the host name or IP address, lower-case (IPv6 without brackets).
        port: the TCP port (the scheme's default when the URL has none).
    """

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str | URL) -> Origin:
        """Return the origin of an absolute ``http``/``https`` URL.

        Raises:
            ConfigError: ``url`` is not an absolute http(s) URL (the message shows it redacted).
        """
        parsed = url if isinstance(url, URL) else _parse(url)
        scheme = (parsed.scheme or "").lower()
        if scheme not in _DEFAULT_PORTS or not parsed.host:
            raise ConfigError(
                "url", redact_url(str(url)), "must be an absolute http:// or https:// URL"
            )
        port = parsed.explicit_port or _DEFAULT_PORTS[scheme]
        return cls(scheme, parsed.host.lower(), port)

    @property
    def is_tls(self) -> bool:
        """``True`` for ``https``."""
        return self.scheme == "https"

    def url(self) -> URL:
        """The origin as a URL with an empty path."""
        return URL.build(scheme=self.scheme, host=self.host, port=self.port)

    def matches(self, url: URL) -> bool:
        """Whether absolute ``url`` has this origin."""
        scheme = (url.scheme or "").lower()
        port = url.explicit_port or _DEFAULT_PORTS.get(scheme)
        return scheme == self.scheme and (url.host or "").lower() == self.host and port == self.port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if _DEFAULT_PORTS[self.scheme] == self.port:
            return f"{self.scheme}://{host}"
        return f"{self.scheme}://{host}:{self.port}"


def _parse(text: str) -> URL:
    try:
        return URL(text)
    except (ValueError, TypeError):
        raise ConfigError("url", _redact_unparsable(str(text)), "is not a valid URL") from None


def _redact_unparsable(text: str) -> str:
    # Drop anything between "://" and "@" (userinfo) and everything after "?" or "#".
    text = re.sub(r"(://)[^/@?#]*@", r"\1", text)
    return re.split(r"[?#]", text, maxsplit=1)[0] + ("?***" if "?" in text else "")


@functools.lru_cache(maxsize=512)
def _parse_cached(text: str) -> URL:
    return URL(text)


@functools.lru_cache(maxsize=512)
def _join_cached(base: URL, target: URL) -> URL:
    return base.join(target)


def resolve_url(base: URL, url: str | URL) -> URL:
    """Return ``url`` made absolute against ``base`` (RFC 3986 rules); memoised.

    Raises:
        ValueError: ``url`` is not a valid http(s) URL (the message shows it redacted).
    """
    try:
        target = url if isinstance(url, URL) else _parse_cached(url)
    except (TypeError, ValueError):
        raise ValueError(f"invalid URL: {redact_url(str(url))}") from None
    if target.absolute:
        return target
    if target.scheme:
        raise ValueError(f"unsupported URL: {redact_url(target)}")
    return _join_cached(base, target)


def redact_url(url: str | URL) -> str:
    """Return ``url`` without userinfo or fragment and with every query value masked.

    Example: ``https://bob:pw@api.example.com/v1/items?token=s3cr3t&page=2#top`` becomes
    ``https://api.example.com/v1/items?token=***&page=***``.
    """
    if isinstance(url, URL):
        parsed = url
    else:
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            return _redact_unparsable(str(url))
    if parsed.raw_user is not None or parsed.raw_password is not None:
        parsed = parsed.with_user(None)
    parsed = parsed.with_fragment(None)
    if not parsed.raw_query_string:
        return str(parsed)
    names = [name for name, _ in parsed.query.items()]
    base = str(parsed.with_query(None))
    return base + "?" + "&".join(f"{name}=***" for name in names)


def scrub_text(text: str) -> str:
    """Redact every URL that appears inside ``text`` (see :func:`redact_url`)."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _scrub_value(value: object) -> object:
    if isinstance(value, URL):
        return URL(redact_url(value), encoded=True)
    if isinstance(value, str):
        return scrub_text(value)
    return value


def _safe_request_info(info: RequestInfo) -> RequestInfo:
    headers: CIMultiDict[str] = CIMultiDict(
        (name, "***" if name.lower() in _SECRET_HEADERS else value)
        for name, value in info.headers.items()
    )
    return RequestInfo(
        URL(redact_url(info.url), encoded=True),
        info.method,
        CIMultiDictProxy(headers),
        URL(redact_url(info.real_url), encoded=True),
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def scrub_exception(exc: BaseException) -> BaseException:
    """Remove secrets from ``exc`` and every exception chained to it, in place.

    aiohttp puts the full request URL (query string and userinfo included) in several messages
    (``ClientResponseError``, ``ConnectionTimeoutError``, ``InvalidURL`` ...). The exceptions keep
    their types, so ``except aiohttp.ClientError`` still works; only their text changes.

    Returns:
        ``exc`` itself, for ``raise scrub_exception(exc)``.
    """
    for current in _chain(exc):
        if isinstance(current, ClientResponseError):
            current.request_info = _safe_request_info(current.request_info)
            current.history = ()
            current.args = (current.request_info, ())
            continue
        if isinstance(current, InvalidURL):
            current._url = _scrub_value(current._url)  # type: ignore[assignment]
        try:
            current.args = tuple(_scrub_value(arg) for arg in current.args)
        except (AttributeError, TypeError):  # pragma: no cover - exotic exception types
            pass
    return exc


class HTTPCounters:
    """Request counters of one origin, bumped synchronously by connections and clients.

    ``responses[n]`` counts responses of status class ``n``xx (1 to 5); ``responses[0]`` any
    status outside 100-599.
    """

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "errors",
        "reconnects",
        "requests",
        "responses",
        "retries",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.responses = [0, 0, 0, 0, 0, 0]
        self.errors = 0
        self.retries = 0
        self.reconnects = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    def count_status(self, status: int) -> None:
        """Count one response of status ``status``."""
        cls = status // 100
        self.responses[cls if 1 <= cls <= 5 else 0] += 1

    def as_dict(self) -> dict[str, float]:
        """The counters under the names used in ``PoolStats.extra``."""
        return {
            "http_requests": self.requests,
            "http_responses_1xx": self.responses[1],
            "http_responses_2xx": self.responses[2],
            "http_responses_3xx": self.responses[3],
            "http_responses_4xx": self.responses[4],
            "http_responses_5xx": self.responses[5],
            "http_responses_other": self.responses[0],
            "http_errors": self.errors,
            "http_retries": self.retries,
            "http_reconnects": self.reconnects,
            "http_bytes_sent": self.bytes_sent,
            "http_bytes_received": self.bytes_received,
        }


class TLSSettings:
    """How ``https`` connections verify the server; one instance is shared by a whole pool.

    The :class:`ssl.SSLContext` is built on first use (loading the system trust store costs a
    few milliseconds) and then shared by every connection.

    Args:
        ssl: ``None``/``True``: verify against the system trust store (or ``cafile``/``cadata``);
            an :class:`ssl.SSLContext`: use it as is; ``False``: do not verify certificates or
            host names (logged once as a warning).
        cafile: a PEM file of CA certificates to trust instead of the system store.
        cadata: PEM (``str``) or DER (``bytes``) CA certificates to trust.
        owner: the name shown in the warning when verification is off.

    Raises:
        ConfigError: ``ssl`` is not a bool, ``None`` or an ``SSLContext``, or a CA is given
            together with ``ssl=False`` or an ``SSLContext``.
    """

    __slots__ = ("_cadata", "_cafile", "_context", "verify")

    def __init__(
        self,
        ssl: ssl.SSLContext | bool | None = None,
        *,
        cafile: str | PathLike[str] | None = None,
        cadata: str | bytes | None = None,
        owner: str = "http pool",
    ) -> None:
        self._cafile = cafile
        self._cadata = cadata
        self._context: _SSLContext | None = None
        if isinstance(ssl, _SSLContext):
            if cafile is not None or cadata is not None:
                raise ConfigError(
                    "cafile",
                    cafile if cafile is not None else "<cadata>",
                    "cannot be combined with an SSLContext: load the CA into the context instead",
                )
            self._context = ssl
            self.verify = ssl.verify_mode != _CERT_NONE
        elif ssl is None or ssl is True:
            self.verify = True
        elif ssl is False:
            if cafile is not None or cadata is not None:
                raise ConfigError(
                    "ssl", ssl, "is False (no verification) but a CA (cafile/cadata) was given"
                )
            self.verify = False
        else:
            raise ConfigError("ssl", ssl, "must be None, True, False or an ssl.SSLContext")
        if self.verify and self._context is None and (cafile is not None or cadata is not None):
            self._context = self._build()  # a bad CA file fails now, not at the first connect
        if not self.verify:
            logger.warning(
                "%s: TLS certificate verification is DISABLED (ssl=False): https connections "
                "can be intercepted; use cafile= or an SSLContext for private CAs instead",
                owner,
            )

    @property
    def context(self) -> ssl.SSLContext:
        """The client context (built on first use)."""
        context = self._context
        if context is None:
            context = self._context = self._build()
        return context

    def _build(self) -> ssl.SSLContext:
        if not self.verify:
            context = _create_default_context()
            context.check_hostname = False
            context.verify_mode = _CERT_NONE
        else:
            try:
                context = _create_default_context(cafile=self._cafile, cadata=self._cadata)
            except (OSError, ValueError) as exc:
                # The path is no secret, but the PEM data might be: do not echo it.
                shown = self._cafile if self._cafile is not None else "<cadata>"
                raise ConfigError("cafile", shown, f"cannot be loaded: {exc}") from None
        context.set_alpn_protocols(["http/1.1"])
        return context


_SSLContext = ssl.SSLContext
_CERT_NONE = ssl.CERT_NONE
_create_default_context = ssl.create_default_context
