"""Pooled keep-alive HTTP with poolkit.http: one-shot requests, a borrowed client, stats.

Needs ``pip install "poolkit[http]"``. Self-contained: it starts a small aiohttp server on
127.0.0.1 (a free port) in the same process, talks to it through a pool, prints what happened
and exits::

    python examples/http_basic.py

What it shows:

* ``pool.get(...)``: borrow a connection, send, read the whole response, give it back;
* ``async with pool.acquire() as client``: several requests over one keep-alive socket;
* ``async with client.stream(...)``: read a body in chunks;
* 200 concurrent requests over ``max_size=4`` sockets (the server counts its connections);
* the pool's stats, including the HTTP counters (requests, status classes, bytes, retries).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from poolkit.http import create_pool


async def start_server() -> tuple[web.AppRunner, asyncio.Server, list[int]]:
    """Start the demo server; return its runner, its listener and its connection counter."""
    accepted = [0]

    async def items(request: web.Request) -> web.Response:
        return web.json_response({"id": int(request.match_info["id"]), "name": "widget"})

    async def report(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/csv"})
        await response.prepare(request)
        for i in range(5):
            await response.write(f"{i},widget-{i}\n".encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/items/{id}", items)
    app.router.add_get("/report.csv", report)

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    server = runner.server
    assert server is not None

    def factory() -> asyncio.Protocol:
        accepted[0] += 1
        return server()

    listener = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    return runner, listener, accepted


async def main() -> None:
    """Run the demo."""
    runner, listener, accepted = await start_server()
    port = listener.sockets[0].getsockname()[1]
    try:
        async with create_pool(f"http://127.0.0.1:{port}", max_size=4, name="demo") as pool:
            # One-shot: the connection is back in the pool when this returns.
            item = await pool.get("/items/1")
            print("one-shot:", item.status, item.json())

            # A borrowed client: every request goes over the same keep-alive socket.
            async with pool.acquire() as client:
                for i in (2, 3):
                    print("borrowed:", (await client.get(f"/items/{i}")).json()["id"])
                async with client.stream("GET", "/report.csv") as response:
                    rows = [chunk async for chunk in response.iter_chunks()]
                print("streamed:", b"".join(rows).decode().count("\n"), "rows")

            # Many tasks, few sockets: 200 requests share max_size=4 connections.
            responses = await asyncio.gather(*(pool.get(f"/items/{i}") for i in range(200)))
            assert all(r.ok for r in responses)

            stats = pool.stats()
            print(f"server saw {accepted[0]} TCP connections (max_size=4)")
            print(
                f"requests={stats.extra['http_requests']:.0f} "
                f"2xx={stats.extra['http_responses_2xx']:.0f} "
                f"retries={stats.extra['http_retries']:.0f} "
                f"bytes_in={stats.extra['http_bytes_received']:.0f}"
            )
            print(f"wait p99={stats.wait_time.p99 * 1000:.2f} ms, sizing hint={stats.sizing_hint}")
            print(pool)
            assert accepted[0] <= 4
    finally:
        listener.close()
        await runner.cleanup()
        await listener.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
