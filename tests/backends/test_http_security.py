"""No state or secret leaks in the HTTP backend: cookies, headers, credentials, tokens."""

from __future__ import annotations

import asyncio
import base64
import logging
import traceback
from collections.abc import AsyncIterator

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from backends.http_server import HTTPTestServer, serve
from fix_proxy import Endpoint
from poolkit import PoolEvent
from poolkit.backends._http_util import redact_url, scrub_exception
from poolkit.http import ConnectError, CrossOriginError, HTTPStatusError, create_pool


@pytest.fixture
async def http_server() -> AsyncIterator[HTTPTestServer]:
    """A plain-HTTP test server on 127.0.0.1, closed at teardown."""
    async with serve() as server:
        yield server


CANARY = "CANARY-5e1f0c"


async def test_cookies_set_for_one_borrower_are_not_sent_by_the_next(
    http_server: HTTPTestServer,
) -> None:
    """Set-Cookie is never stored: neither the next borrower nor the same one sends it back."""
    async with create_pool(http_server.url, max_size=1) as pool:
        async with pool.acquire() as first:
            response = await first.get("/set-cookie")
            assert "borrower-a-secret" in response.headers["Set-Cookie"]
            assert (await first.get("/echo")).json()["cookie"] is None
            conn = first.connection
        async with pool.acquire() as second:
            assert second.connection is conn  # same pooled socket, no shared state
            assert (await second.get("/echo")).json()["cookie"] is None
            explicit = await second.get("/echo", cookies={"flavour": "oat"})
            assert explicit.json()["cookie"] == "flavour=oat"
            assert (await second.get("/echo")).json()["cookie"] is None


async def test_per_request_headers_are_not_kept_on_the_connection(
    http_server: HTTPTestServer,
) -> None:
    """Authorization and other headers given to one request are not sent by the next."""
    async with create_pool(http_server.url, max_size=1) as pool:
        async with pool.acquire() as first:
            echo = await first.get("/echo", headers={"Authorization": "Bearer a", "X-Tenant": "a"})
            assert echo.json()["headers"]["X-Tenant"] == "a"
        async with pool.acquire() as second:
            headers = (await second.get("/echo")).json()["headers"]
            assert "Authorization" not in headers
            assert "X-Tenant" not in headers
        assert http_server.accepted == 1


async def test_base_url_credentials_go_to_the_base_origin_only(
    http_server: HTTPTestServer,
) -> None:
    """user:password in base_url becomes Basic auth for that origin, never for another one."""
    base = f"http://robot:{CANARY}@127.0.0.1:{http_server.port}/"
    async with create_pool(base) as pool:
        expected = "Basic " + base64.b64encode(f"robot:{CANARY}".encode()).decode()
        assert (await pool.get("/echo")).json()["headers"]["Authorization"] == expected
        other = await pool.get(http_server.url_for("/echo", host="localhost"))
        assert "Authorization" not in other.json()["headers"]
        shown = [repr(pool), str(pool.base_url), pool.pool().connector.describe()]  # type: ignore[attr-defined]
        shown += [repr(pool.stats()), repr(pool.stats_by_origin())]
        assert not any(CANARY in text for text in shown)


async def test_canary_token_appears_in_no_error_log_event_repr_or_stats(
    http_server: HTTPTestServer, refused_port: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    """A token in query strings and userinfo never reaches an error, a log line, an event,
    a repr or the stats, whatever fails."""
    caplog.set_level(logging.DEBUG)
    events: list[PoolEvent] = []
    errors: list[BaseException] = []
    token = f"?token={CANARY}"
    away = http_server.url_for(f"/ok{token}", host="localhost")

    async def expect(kind: type[BaseException], coro: object) -> None:
        with pytest.raises(kind) as info:
            await coro  # type: ignore[misc]
        errors.append(info.value)

    pool = create_pool(
        f"http://user:{CANARY}@127.0.0.1:{http_server.port}",
        max_size=2,
        request_timeout=0.3,
        on_event=events.append,
    )
    async with pool:
        response = await pool.get(f"/status/500{token}")
        await expect(HTTPStatusError, _raise_for_status(response))
        await expect(HTTPStatusError, pool.get(f"/status/404{token}", raise_for_status=True))
        await expect(TimeoutError, pool.get(f"/never{token}"))
        await expect(aiohttp.ServerDisconnectedError, pool.post(f"/drop{token}"))
        await expect(aiohttp.ClientPayloadError, pool.get(f"/reset-mid-body{token}"))
        await expect(aiohttp.ClientConnectionError, pool.get(f"/partial-head{token}"))
        await expect(CrossOriginError, pool.get("/redirect-away", params={"to": away}))
        await pool.get("/ok")
        await expect(aiohttp.ServerDisconnectedError, pool.get(f"/drop{token}"))  # retried
        async with pool.acquire() as client:
            await expect(CrossOriginError, client.get(away))
            await expect(ValueError, client.get(f"http://[::1{token}"))
            shown = [repr(client), repr(response), repr(client.connection)]
        async with pool.stream("GET", f"/stream/2{token}") as streamed:
            shown.append(repr(streamed))
        shown += [repr(pool), repr(pool.stats()), repr(pool.stats_by_origin())]
    refused = create_pool(
        f"http://user:{CANARY}@127.0.0.1:{refused_port.port}/",
        on_event=events.append,
    )
    await expect(ConnectError, refused.open())
    await refused.close()

    assert len(errors) == 11
    for error in errors:
        shown += [str(error), repr(error), "".join(traceback.format_exception(error))]
    shown += [event.describe() + repr(event) for event in events]
    shown.append(caplog.text)
    leaks = [text for text in shown if CANARY in text]
    assert not leaks, leaks[0]


async def _raise_for_status(response: object) -> None:
    response.raise_for_status()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://bob:pw@api.example.com/v1?token=s3cr3t&page=2#frag",
            "https://api.example.com/v1?token=***&page=***",
        ),
        ("http://127.0.0.1:8080/plain", "http://127.0.0.1:8080/plain"),
        ("http://h/p?", "http://h/p"),
        ("not a url ?token=s3cr3t", "not%20a%20url%20?token=***"),
        ("http://h:99999/?token=s3cr3t", "http://h:99999/?***"),
        ("http://user:s3cr3t@[::1", "http://[::1"),
    ],
)
def test_redact_url_drops_userinfo_fragment_and_query_values(url: str, shown: str) -> None:
    """redact_url keeps scheme, host, port, path and query names; hides everything else."""
    assert redact_url(url) == shown
    assert "s3cr3t" not in redact_url(url)


def test_scrub_exception_cleans_aiohttp_messages_and_the_chain() -> None:
    """aiohttp errors that embed the URL (and its Authorization header) are cleaned in place."""
    url = URL(f"http://u:{CANARY}@h/p?token={CANARY}")
    headers = CIMultiDictProxy(CIMultiDict({"Authorization": CANARY, "Accept": "*/*"}))
    info = aiohttp.RequestInfo(url, "GET", headers, url)
    response_error = aiohttp.ClientResponseError(info, (), status=500, message="boom")
    timeout_error = aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}")
    try:
        try:
            raise timeout_error
        except aiohttp.ConnectionTimeoutError as inner:
            raise aiohttp.InvalidUrlClientError(str(url)) from inner
    except aiohttp.InvalidURL as chained:
        invalid = chained
    for error in (response_error, invalid):
        scrub_exception(error)
        text = "".join(traceback.format_exception(error)) + repr(error)
        assert CANARY not in text
        assert "h/p?token=***" in text
    assert response_error.request_info.headers["Accept"] == "*/*"
    assert response_error.status == 500


async def test_released_client_repr_and_errors_hide_the_base_token(
    http_server: HTTPTestServer,
) -> None:
    """A client acquired with a tokenised URL shows it redacted, before and after release."""
    async with create_pool(http_server.url) as pool:
        client = await pool.acquire(http_server.url_for(f"/nested/?k={CANARY}"))
        echo = (await client.get("echo")).json()
        assert echo["path"] == "/nested/echo"
        await pool.release(client)
        assert CANARY not in repr(client)
        with pytest.raises(Exception) as info:
            await client.get("x")
        assert CANARY not in str(info.value)
    await asyncio.sleep(0)
