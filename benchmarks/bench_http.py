"""HTTP: poolkit.http against a raw aiohttp session, httpx and a new session per request.

Scenarios (each a group of rows compared as ratios against poolkit's one-shot ``pool.get()``),
for plain HTTP and for TLS, with 1 task and with 64 tasks sharing 10 connections:

* ``poolkit pool.get()``: borrow a pooled keep-alive connection, send, read, give it back.
* ``poolkit acquire() + client.get()``: the same through an explicit borrow.
* ``aiohttp ClientSession (TCPConnector limit=10)``: one shared session, aiohttp's own pool.
* ``httpx.AsyncClient (max_connections=10)``: httpcore's pool.
* ``aiohttp new session per request``: no pooling at all, a TCP (and TLS) handshake each time,
  the cost pooling exists to remove.

The server is an aiohttp application in a **separate process** (started here, killed at the
end): on a shared loop the server would steal time from whichever client is measured, and the
ratios would mostly measure the server. Each request is ``GET /ok`` answering ``ok``, so the
numbers are dominated by per-request client overhead, which is what the pools differ in. The
numbers are preliminary on a shared 2-core machine: read the ratios, not the absolute rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

import poolkit.http
from _common import Measurement, Options, serve_forever, server_process

__all__ = ("run",)

CONNECTIONS = 10
CONCURRENCY = (1, 64)


@dataclass(frozen=True, slots=True)
class _Server:
    plain_url: str
    tls_url: str
    ca_file: Path


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[_Server]:
    """Start the benchmark server in a subprocess; yield its URLs and the CA to trust."""
    async with server_process(__file__) as (plain, tls, ca_file):
        yield _Server(f"http://127.0.0.1:{plain}", f"https://127.0.0.1:{tls}", ca_file)


class _Contender:
    name: str
    reference = False

    async def open(self) -> None:
        raise NotImplementedError

    async def get(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _PoolkitOneShot(_Contender):
    name = "poolkit pool.get()"
    reference = True

    def __init__(self, base: str, ca_file: Path) -> None:
        self.pool = poolkit.http.create_pool(
            base, max_size=CONNECTIONS, min_size=CONNECTIONS, cafile=ca_file
        )

    async def open(self) -> None:
        await self.pool.open()

    async def get(self) -> None:
        response = await self.pool.get("/ok")
        assert response.body == b"ok"

    async def close(self) -> None:
        await self.pool.close()


class _PoolkitClient(_PoolkitOneShot):
    name = "poolkit acquire() + client.get()"
    reference = False

    async def get(self) -> None:
        async with self.pool.acquire() as client:
            response = await client.get("/ok")
        assert response.body == b"ok"


class _AiohttpSession(_Contender):
    name = f"aiohttp ClientSession (TCPConnector limit={CONNECTIONS})"

    def __init__(self, base: str, context: ssl.SSLContext) -> None:
        self.url = base + "/ok"
        self.context = context
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=CONNECTIONS, ssl=self.context)
        self.session = aiohttp.ClientSession(connector=connector)

    async def get(self) -> None:
        assert self.session is not None
        async with self.session.get(self.url) as response:
            assert await response.read() == b"ok"

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


class _Httpx(_Contender):
    name = f"httpx.AsyncClient (max_connections={CONNECTIONS})"

    def __init__(self, base: str, context: ssl.SSLContext) -> None:
        self.url = base + "/ok"
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        self.client = httpx.AsyncClient(limits=limits, verify=context, timeout=30)

    async def open(self) -> None:
        return None

    async def get(self) -> None:
        response = await self.client.get(self.url)
        assert response.content == b"ok"

    async def close(self) -> None:
        await self.client.aclose()


class _SessionPerRequest(_Contender):
    name = "aiohttp new session per request (no pooling)"

    def __init__(self, base: str, context: ssl.SSLContext) -> None:
        self.url = base + "/ok"
        self.context = context

    async def open(self) -> None:
        return None

    async def get(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.context, force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(self.url) as response,
        ):
            assert await response.read() == b"ok"

    async def close(self) -> None:
        return None


async def _drive(get: Callable[[], Awaitable[None]], ops: int, tasks: int) -> None:
    """Send ``ops`` requests from ``tasks`` concurrent tasks."""
    remaining = ops

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await get()

    await asyncio.gather(*(worker() for _ in range(min(tasks, ops))))


async def _sample(get: Callable[[], Awaitable[None]], ops: int, tasks: int) -> tuple[float, float]:
    """One sample: (requests per second, client CPU microseconds per request)."""
    wall, cpu = time.perf_counter(), time.process_time()
    await _drive(get, ops, tasks)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return ops / wall, cpu / ops * 1e6


async def run(opts: Options) -> list[Measurement]:
    """Measure every contender, plain and TLS, at 1 and 64 concurrent tasks.

    Within a group the contenders take turns, one sample each per round, so that a change in
    the machine's load during the run affects all of them alike. Besides the rate, each row
    notes the client's CPU time per request (``process_time``): the server runs in another
    process, so this is the client-side cost alone, and much steadier than the rate on a busy
    machine.
    """
    results: list[Measurement] = []
    async with _server() as server:
        context = ssl.create_default_context(cafile=str(server.ca_file))
        for label, base in (("plain", server.plain_url), ("TLS", server.tls_url)):
            for tasks in CONCURRENCY:
                group = f"http {label}: GET, {tasks} task{'s' if tasks > 1 else ''}"
                contenders: list[_Contender] = [
                    _PoolkitOneShot(base, server.ca_file),
                    _PoolkitClient(base, server.ca_file),
                    _AiohttpSession(base, context),
                    _Httpx(base, context),
                    _SessionPerRequest(base, context),
                ]
                rates: dict[str, list[float]] = {c.name: [] for c in contenders}
                cpus: dict[str, list[float]] = {c.name: [] for c in contenders}
                try:
                    for contender in contenders:
                        await contender.open()
                        await _drive(contender.get, _ops(opts, tasks, contender) // 4 + 1, tasks)
                    for _ in range(opts.repeat):
                        for contender in contenders:
                            rate, cpu = await _sample(
                                contender.get, _ops(opts, tasks, contender), tasks
                            )
                            rates[contender.name].append(rate)
                            cpus[contender.name].append(cpu)
                finally:
                    for contender in contenders:
                        await contender.close()
                results.extend(
                    Measurement(
                        group=group,
                        name=contender.name,
                        unit="req/s",
                        samples=rates[contender.name],
                        reference=contender.reference,
                        extra={"client_cpu_us_per_req": statistics.median(cpus[contender.name])},
                    )
                    for contender in contenders
                )
    return results


def _ops(opts: Options, tasks: int, contender: _Contender) -> int:
    pooled = not isinstance(contender, _SessionPerRequest)
    if opts.quick:
        return 60 if pooled else 20
    base = 2000 if tasks > 1 else 1000
    return base if pooled else base // 5


# ---------------------------------------------------------------------- the server process


async def _serve(cert: str, key: str) -> None:
    """Run the benchmark server: ``GET /ok`` on a plain and a TLS port, until killed."""
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    ports = [address[1] for address in runner.addresses]
    print("PORTS " + " ".join(str(p) for p in ports), flush=True)
    await asyncio.get_running_loop().create_future()  # until the parent terminates us


if __name__ == "__main__":
    serve_forever(_serve, "benchmark server (started by bench_http.run)")
