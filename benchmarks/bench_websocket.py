"""WebSocket: poolkit.websocket's fan-out hub and pool against the designs they replace.

Scenarios (each a group of rows compared as ratios against poolkit's row):

* **Fan-out, delivered messages per second** to ``SUBSCRIBERS`` local subscribers (1,000; 50
  with ``--quick``) of one stream. ``poolkit FanOut (1 upstream)`` receives each message once
  and hands it to every subscriber's bounded queue; ``naive: 1 connection per subscriber`` opens
  one websockets connection per subscriber, so the server sends (and the client receives,
  unmasks and decodes) every message once per subscriber. Each message is a small JSON object,
  decoded in both designs. A run ends when every subscriber has received every message.
* **Fan-out, CPU time per delivered message** (``time.process_time`` of this process divided by
  the messages delivered): the same runs, read as cost instead of speed. The server's CPU is
  not counted: it runs in another process.
* **Request/response, pooled vs connect-per-use**, plain and TLS, one task:
  ``poolkit acquire + send + recv`` borrows a pooled connection per exchange; ``websockets: one
  connection kept open`` is the no-pool lower bound (one socket, never given back);
  ``websockets: connect per use`` opens (TCP, TLS, HTTP upgrade) and closes a connection for
  every exchange, the cost pooling exists to remove.

The server is a websockets application in a **separate process** (started here, terminated at
the end), so that its work (in the naive fan-out, 1,000 sends per message) does not run on the
measured event loop and is not counted in the client's CPU time. The numbers are preliminary on
a shared 2-core machine: read the ratios, not the absolute rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

import poolkit.websocket
from _common import Measurement, Options, measure_rate, serve_forever, server_process

__all__ = ("run",)

PAYLOAD = "x" * 64


@dataclass(frozen=True, slots=True)
class _Server:
    plain: str
    tls: str
    ca_file: Path


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[_Server]:
    """Start the benchmark server in a subprocess; yield its base URIs and the CA to trust."""
    async with server_process(__file__) as (plain, tls, ca_file):
        yield _Server(f"ws://127.0.0.1:{plain}", f"wss://127.0.0.1:{tls}", ca_file)


# ---------------------------------------------------------------------- fan-out


async def _publish(base: str, topic: str, count: int) -> None:
    """Ask the server to broadcast ``count`` messages to ``topic``'s subscribers."""
    async with ws_connect(base + "/control", compression=None) as control:
        await control.send(json.dumps({"publish": topic, "count": count}))
        await control.recv()  # "done": every message was handed to every subscriber


async def _wait_subscribed(base: str, topic: str, expected: int) -> None:
    async with ws_connect(base + "/control", compression=None) as control:
        async with asyncio.timeout(60):
            while True:
                await control.send(json.dumps({"count_subscribers": topic}))
                if int(await control.recv()) >= expected:
                    return
                await asyncio.sleep(0.01)


class _Countdown:
    """Counts deliveries; ``done`` is set when every subscriber got every message."""

    def __init__(self, subscribers: int) -> None:
        self.remaining = subscribers
        self.done = asyncio.Event()

    def finished_one(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


async def _fanout_poolkit(
    base: str, subscribers: int, count: int, topic: str
) -> tuple[float, float]:
    """Deliver ``count`` messages to ``subscribers`` through one upstream.

    Returns the wall time and this process's CPU time from the publish request until the last
    subscriber got the last message (connection set-up is not counted).
    """
    pool = poolkit.websocket.create_pool(base, environ={}, compression=None, ping_interval=None)
    countdown = _Countdown(subscribers)
    ready = _Countdown(subscribers)
    async with pool, poolkit.websocket.FanOut(pool, queue_size=count + 16) as hub:

        async def subscriber() -> None:
            async with hub.subscribe("/feed", subscribe={"subscribe": topic}) as stream:
                ready.finished_one()
                received = 0
                async for _msg in stream:
                    received += 1
                    if received == count:
                        break
            countdown.finished_one()

        tasks = [asyncio.create_task(subscriber()) for _ in range(subscribers)]
        await ready.done.wait()
        await _wait_subscribed(base, topic, 1)
        cpu, start = time.process_time(), time.perf_counter()
        await _publish(base, topic, count)
        await countdown.done.wait()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        await asyncio.gather(*tasks)
    return elapsed, cpu


async def _fanout_naive(base: str, subscribers: int, count: int, topic: str) -> tuple[float, float]:
    """Deliver ``count`` messages to ``subscribers`` with one connection each (wall, CPU s)."""
    countdown = _Countdown(subscribers)
    conns: list[ClientConnection] = []
    try:
        for _ in range(subscribers):
            conn = await ws_connect(base + "/feed", compression=None, ping_interval=None)
            conns.append(conn)
            await conn.send(json.dumps({"subscribe": topic}))

        async def reader(conn: ClientConnection) -> None:
            received = 0
            while received < count:
                json.loads(await conn.recv())  # decode, as the hub does once per message
                received += 1
            countdown.finished_one()

        await _wait_subscribed(base, topic, subscribers)
        tasks = [asyncio.create_task(reader(conn)) for conn in conns]
        cpu, start = time.process_time(), time.perf_counter()
        await _publish(base, topic, count)
        await countdown.done.wait()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(conn.close() for conn in conns), return_exceptions=True)
    return elapsed, cpu


async def _fanout_group(opts: Options, base: str) -> list[Measurement]:
    subscribers = 50 if opts.quick else 1000
    count = 20 if opts.quick else 200
    repeat = max(1, opts.repeat if not opts.quick else 1)
    group_rate = f"websocket fan-out: delivered msgs/s, {subscribers} subscribers"
    group_cpu = f"websocket fan-out: CPU per delivered message, {subscribers} subscribers"
    results: list[Measurement] = []
    run_id = 0
    for name, body, reference in (
        ("poolkit FanOut (1 upstream)", _fanout_poolkit, True),
        (f"naive: 1 connection per subscriber ({subscribers} upstreams)", _fanout_naive, False),
    ):
        rates: list[float] = []
        cpu: list[float] = []
        for _ in range(repeat):
            run_id += 1
            elapsed, cpu_used = await body(base, subscribers, count, f"t{run_id}")
            delivered = subscribers * count
            rates.append(delivered / elapsed)
            cpu.append(cpu_used / delivered * 1e6)
        results.append(
            Measurement(
                group_rate, name, "msg/s", rates, higher_is_better=True, reference=reference
            )
        )
        results.append(
            Measurement(
                group_cpu,
                name,
                "µs CPU/msg",
                cpu,
                higher_is_better=False,
                reference=reference,
            )
        )
    return results


# ---------------------------------------------------------------------- request / response


class _Contender:
    name: str
    reference = False

    async def open(self) -> None:
        raise NotImplementedError

    async def exchange(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _PoolkitPool(_Contender):
    name = "poolkit acquire + send + recv"
    reference = True

    def __init__(self, base: str, context: ssl.SSLContext | None) -> None:
        self.pool = poolkit.websocket.create_pool(
            base, environ={}, ssl=context, compression=None, check_on_acquire="never"
        )

    async def open(self) -> None:
        async with self.pool.acquire("/echo"):
            pass

    async def exchange(self) -> None:
        async with self.pool.acquire("/echo") as conn:
            await conn.send("ping")
            await conn.recv()

    async def close(self) -> None:
        await self.pool.close()


class _KeptOpen(_Contender):
    name = "websockets: one connection kept open (no pool)"

    def __init__(self, base: str, context: ssl.SSLContext | None) -> None:
        self.uri = base + "/echo"
        self.context = context
        self.conn: ClientConnection | None = None

    async def open(self) -> None:
        self.conn = await ws_connect(self.uri, ssl=self.context, compression=None)

    async def exchange(self) -> None:
        assert self.conn is not None
        await self.conn.send("ping")
        await self.conn.recv()

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class _ConnectPerUse(_Contender):
    name = "websockets: connect per use"

    def __init__(self, base: str, context: ssl.SSLContext | None) -> None:
        self.uri = base + "/echo"
        self.context = context

    async def open(self) -> None:
        pass

    async def exchange(self) -> None:
        async with ws_connect(self.uri, ssl=self.context, compression=None) as conn:
            await conn.send("ping")
            await conn.recv()

    async def close(self) -> None:
        pass


async def _exchange_groups(opts: Options, server: _Server) -> list[Measurement]:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    results: list[Measurement] = []
    for label, base, ctx in (("plain", server.plain, None), ("TLS", server.tls, context)):
        group = f"websocket {label}: acquire + send + recv, 1 task"
        contenders: list[_Contender] = [
            _PoolkitPool(base, ctx),
            _KeptOpen(base, ctx),
            _ConnectPerUse(base, ctx),
        ]
        for contender in contenders:
            per_use = isinstance(contender, _ConnectPerUse)
            ops = (20 if per_use else 100) if opts.quick else (200 if per_use else 2000)
            await contender.open()
            try:
                samples = await measure_rate(
                    _loop(contender.exchange), ops=ops, repeat=max(1, opts.repeat)
                )
            finally:
                await contender.close()
            results.append(
                Measurement(
                    group=group,
                    name=contender.name,
                    unit="exchanges/s",
                    samples=samples,
                    reference=contender.reference,
                )
            )
    return results


def _loop(step: Callable[[], Awaitable[None]]) -> Callable[[int], Awaitable[None]]:
    async def body(n: int) -> None:
        for _ in range(n):
            await step()

    return body


async def run(opts: Options) -> list[Measurement]:
    """Measure the fan-out hub against one connection per subscriber, and pooled exchanges
    against a kept-open connection and connect-per-use, plain and TLS."""
    async with _server() as server:
        results = await _fanout_group(opts, server.plain)
        results += await _exchange_groups(opts, server)
    return results


# ---------------------------------------------------------------------- the server process


async def _serve(cert: str, key: str) -> None:
    """Run the benchmark server on a plain and a TLS port until terminated.

    ``/echo`` echoes; ``/feed`` connections subscribe with ``{"subscribe": topic}``;
    ``/control`` takes ``{"publish": topic, "count": n}`` (broadcast ``n`` messages to the
    topic, then answer ``"done"``) and ``{"count_subscribers": topic}``.
    """
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    topics: dict[str, set[ServerConnection]] = {}

    async def handler(conn: ServerConnection) -> None:
        path = conn.request.path if conn.request is not None else ""
        try:
            async for message in conn:
                if path == "/echo":
                    await conn.send(message)
                    continue
                request: Any = json.loads(message)
                if "subscribe" in request:
                    topics.setdefault(request["subscribe"], set()).add(conn)
                elif "count_subscribers" in request:
                    await conn.send(str(len(topics.get(request["count_subscribers"], ()))))
                elif "publish" in request:
                    members = topics.get(request["publish"], set())
                    for i in range(int(request["count"])):
                        broadcast(members, json.dumps({"seq": i, "p": PAYLOAD}))
                        if i % 16 == 15:
                            await asyncio.sleep(0)  # let the transports flush
                    await conn.send("done")
        except websockets.ConnectionClosed:
            pass
        finally:
            for members in topics.values():
                members.discard(conn)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    options: dict[str, Any] = {"compression": None, "ping_interval": None, "max_size": None}
    async with (
        serve(handler, "127.0.0.1", 0, **options) as plain,
        serve(handler, "127.0.0.1", 0, ssl=context, **options) as tls,
    ):
        ports = [next(iter(s.sockets)).getsockname()[1] for s in (plain, tls)]
        sys.stdout.write(f"PORTS {ports[0]} {ports[1]}\n")
        sys.stdout.flush()
        await asyncio.Future()  # until terminated


if __name__ == "__main__":
    serve_forever(_serve, "benchmark server (started by bench_websocket)")
