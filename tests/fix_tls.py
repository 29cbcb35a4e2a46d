"""TLS fixtures: a throwaway CA (trustme) and contexts/files for servers and clients.

Loaded as a pytest plugin. The server certificate is valid for ``localhost``,
``127.0.0.1`` and ``::1``.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

__all__ = ["TLSFiles"]

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TLSFiles:
    """Paths of PEM files for servers that take files (PostgreSQL, MariaDB, pgbouncer).

    Attributes:
        cert: Server certificate chain.
        key: Server private key (mode 0600).
        ca: CA certificate that clients must trust.
    """

    cert: Path
    key: Path
    ca: Path


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throwaway certificate authority for the test session."""
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_server_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    """A server certificate issued by ``tls_ca`` for localhost, 127.0.0.1 and ::1."""
    return tls_ca.issue_cert(*SERVER_NAMES)


@pytest.fixture
def tls_server_context(tls_server_cert: trustme.LeafCert) -> ssl.SSLContext:
    """Server-side SSLContext presenting ``tls_server_cert`` (new per test: contexts mutate)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_server_cert.configure_cert(ctx)
    return ctx


@pytest.fixture
def tls_client_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """Client-side SSLContext that trusts ``tls_ca`` and verifies host names."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    tls_ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def tls_untrusted_client_context() -> ssl.SSLContext:
    """Client-side SSLContext trusting an unrelated CA: handshakes with our servers fail."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    trustme.CA().configure_trust(ctx)
    return ctx


@pytest.fixture(scope="session")
def tls_cert_files(
    tls_ca: trustme.CA,
    tls_server_cert: trustme.LeafCert,
    tmp_path_factory: pytest.TempPathFactory,
) -> TLSFiles:
    """PEM files of the server certificate, its key and the CA, in a session temp dir."""
    directory = tmp_path_factory.mktemp("tls")
    files = TLSFiles(
        cert=directory / "server.crt", key=directory / "server.key", ca=directory / "ca.crt"
    )
    tls_server_cert.cert_chain_pems[0].write_to_path(str(files.cert))
    for pem in tls_server_cert.cert_chain_pems[1:]:
        pem.write_to_path(str(files.cert), append=True)
    files.key.touch(mode=0o600)
    os.chmod(files.key, 0o600)
    tls_server_cert.private_key_pem.write_to_path(str(files.key))
    tls_ca.cert_pem.write_to_path(str(files.ca))
    return files
