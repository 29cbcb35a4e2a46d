"""Error-chain helpers shared by the database backends (connect failures and TLS detection)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

__all__ = ("causes", "caused_by_tls_error", "with_root_cause")


def causes(exc: BaseException, limit: int = 6) -> Iterator[BaseException]:
    """``exc`` and then what caused it (``__cause__``, else ``__context__``), ``limit`` deep."""
    seen: BaseException | None = exc
    for _ in range(limit):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def with_root_cause(text: str, exc: BaseException) -> str:
    """``text``, followed by the OSError or SSL error at the root of ``exc``'s chain, if any."""
    for cause in list(causes(exc))[1:]:
        if isinstance(cause, OSError | ssl.SSLError):
            detail = str(cause) or type(cause).__name__
            return f"{text} ({type(cause).__name__}: {detail})"
    return text


def caused_by_tls_error(exc: BaseException) -> bool:
    """Whether an SSL or certificate error is in ``exc``'s chain."""
    return any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in causes(exc))
