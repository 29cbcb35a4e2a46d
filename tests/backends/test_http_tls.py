"""TLS in the HTTP backend, against a real TLS aiohttp server with a throwaway CA (trustme)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from backends.http_server import (
    HTTPTestServer,
    ServerFactory,
    forget_server_tls_failures,
    serve,
    server_factory,
)
from fix_proxy import DeafListener
from fix_servers import FdTracker
from fix_tls import TLSFiles
from poolkit.http import ConfigError, PoolTimeout, TLSError, create_pool


@pytest.fixture
async def http_server() -> AsyncIterator[HTTPTestServer]:
    """A plain-HTTP test server on 127.0.0.1, closed at teardown."""
    async with serve() as server:
        yield server


@pytest.fixture
async def https_server(tls_server_context: ssl.SSLContext) -> AsyncIterator[HTTPTestServer]:
    """A TLS test server whose certificate comes from the ``tls_ca`` fixture's CA."""
    async with serve(ssl_context=tls_server_context) as server:
        yield server


@pytest.fixture
def server_tls_failures_expected(
    _loop_errors_fail_the_test: list[dict[str, Any]],
) -> Iterator[None]:
    """The client will reject the server's certificate: ignore the server's handshake reports."""
    yield
    forget_server_tls_failures(_loop_errors_fail_the_test)


@pytest.fixture
async def http_server_factory() -> AsyncIterator[ServerFactory]:
    """Start test servers with custom settings; all closed at teardown."""
    async with server_factory() as make:
        yield make


@pytest.fixture
async def wrong_name_server(
    tls_ca: trustme.CA, http_server_factory: ServerFactory
) -> HTTPTestServer:
    """A TLS server whose certificate (from the trusted test CA) names another host."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("other.example").configure_cert(context)
    return await http_server_factory(ssl_context=context)


async def test_given_ca_file_verifies_and_sockets_are_reused(
    no_fd_leak: FdTracker, https_server: HTTPTestServer, tls_cert_files: TLSFiles
) -> None:
    """With the CA given as a file, https works and 200 requests use at most max_size sockets."""
    async with create_pool(https_server.url, cafile=tls_cert_files.ca, max_size=4) as pool:

        async def worker() -> None:
            for _ in range(10):
                assert (await pool.get("/ok")).text() == "ok"

        await asyncio.gather(*(worker() for _ in range(20)))
        assert https_server.accepted <= 4
        assert pool.stats().extra["http_responses_2xx"] == 200
    await https_server.wait_connections(0)


async def test_given_ssl_context_and_ca_data_verify(
    https_server: HTTPTestServer, tls_client_context: ssl.SSLContext, tls_ca: trustme.CA
) -> None:
    """An SSLContext trusting the CA, or the CA's PEM as cadata, both verify the server."""
    async with create_pool(https_server.url, ssl=tls_client_context) as pool:
        assert (await pool.get("/ok")).status == 200
    pem = tls_ca.cert_pem.bytes().decode()
    async with create_pool(https_server.url_for("/", host="localhost"), cadata=pem) as pool:
        assert (await pool.get("/ok")).status == 200


@pytest.mark.usefixtures("server_tls_failures_expected")
async def test_untrusted_certificate_fails_with_tls_error(
    https_server: HTTPTestServer, tls_untrusted_client_context: ssl.SSLContext
) -> None:
    """A server certificate from an unknown CA fails with TLSError (system store or other CA)."""
    for pool in (
        create_pool(https_server.url),
        create_pool(https_server.url, ssl=tls_untrusted_client_context),
    ):
        with pytest.raises(TLSError) as info:
            await pool.open()
        assert "did not verify" in str(info.value)
        assert info.value.target == https_server.url
        await pool.close()


@pytest.mark.usefixtures("server_tls_failures_expected")
async def test_wrong_host_name_fails_with_tls_error(
    wrong_name_server: HTTPTestServer, tls_cert_files: TLSFiles
) -> None:
    """A trusted certificate for another host name fails with TLSError."""
    pool = create_pool(wrong_name_server.url, cafile=tls_cert_files.ca)
    with pytest.raises(TLSError, match="mismatch"):
        await pool.open()
    await pool.close()


@pytest.mark.usefixtures("server_tls_failures_expected")
async def test_tls_error_fails_waiting_borrowers_at_once(https_server: HTTPTestServer) -> None:
    """A certificate failure is not waited out: acquire raises TLSError long before its timeout."""
    pool = create_pool(https_server.url, min_size=0, acquire_timeout=60)
    try:
        async with asyncio.timeout(10):
            with pytest.raises(TLSError):
                await pool.get("/ok")
            with pytest.raises(TLSError):
                await pool.acquire()
    finally:
        await pool.close()


async def test_disabled_verification_works_and_warns_once(
    https_server: HTTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """ssl=False connects to an untrusted server and logs exactly one warning for the pool."""
    with caplog.at_level(logging.WARNING, logger="poolkit.http"):
        async with create_pool(https_server.url, ssl=False, name="insecure") as pool:
            assert (await pool.get("/ok")).status == 200
            assert (await pool.get(https_server.url_for("/ok", host="localhost"))).status == 200
    warnings = [r for r in caplog.records if r.name == "poolkit.http"]
    assert len(warnings) == 1
    assert "verification is DISABLED" in warnings[0].getMessage()
    assert "'insecure'" in warnings[0].getMessage()


async def test_https_url_to_a_plain_server_is_a_tls_error(http_server: HTTPTestServer) -> None:
    """Speaking TLS to a plain-HTTP port fails with TLSError, not a hang."""
    pool = create_pool(f"https://127.0.0.1:{http_server.port}", acquire_timeout=10)
    with pytest.raises(TLSError, match="handshake"):
        await pool.open()
    await pool.close()


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    """A CA file that cannot be loaded fails at create_pool() with ConfigError('cafile')."""
    with pytest.raises(ConfigError) as info:
        create_pool("https://127.0.0.1:1", cafile=tmp_path / "missing.pem")
    assert info.value.field == "cafile"


def test_disabled_verification_with_a_ca_is_contradictory(tls_cert_files: TLSFiles) -> None:
    """ssl=False together with a CA is refused: one of them is a mistake."""
    with pytest.raises(ConfigError) as info:
        create_pool("https://127.0.0.1:1", ssl=False, cafile=tls_cert_files.ca)
    assert info.value.field == "ssl"


async def test_connect_timeout_bounds_a_stalled_tls_handshake(
    deaf_listener: DeafListener,
) -> None:
    """A server that accepts TCP but never answers the handshake hits connect_timeout."""
    pool = create_pool(
        f"https://127.0.0.1:{deaf_listener.port}",
        min_size=0,
        connect_timeout=0.2,
        acquire_timeout=0.5,
    )
    try:
        async with asyncio.timeout(10):
            with pytest.raises(PoolTimeout):
                await pool.get("/ok")
    finally:
        await pool.close()
