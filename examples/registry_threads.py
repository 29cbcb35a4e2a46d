"""poolkit.Registry: one pool per event loop, for code that runs more than one loop.

Here the same function runs under three consecutive ``asyncio.run()`` calls, then in four threads
at once, each thread with its own loop. All of them ask the registry for the pool named
``"echo"``; each loop gets its own pool of real TCP connections, and each pool is closed when its
loop ends. The server is a small line-echo server started by the example on a loopback port.

Run it::

    python examples/registry_threads.py
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import poolkit
from poolkit import Pool, PoolStats


class EchoConnector:
    """A minimal connector: one TCP connection to a line-echo server."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a connection."""
        return await asyncio.open_connection(self.host, self.port)

    async def check(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        """A round trip."""
        await echo(conn, "ping")

    async def reset(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        """Nothing to clean: the protocol has no session state."""

    async def close(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        """Close gracefully."""
        writer = conn[1]
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # already dead: nothing to do

    def abort(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        """Close at once (used when a pool is terminated)."""
        # On a loop that is already closed abort() cannot schedule its callback; poolkit's own
        # backends then close the socket directly. Here every loop ends with asyncio.run().
        with contextlib.suppress(RuntimeError):
            conn[1].transport.abort()

    def describe(self) -> str:
        """The target, for reprs and logs."""
        return f"echo://{self.host}:{self.port}"


async def echo(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], text: str) -> str:
    """Send one line and read the echo."""
    reader, writer = conn
    writer.write(text.encode() + b"\n")
    await writer.drain()
    return (await reader.readline()).decode().rstrip("\n")


async def work(label: str, port: int) -> PoolStats:
    """What every loop runs: get the loop's pool from the registry and use it."""
    pool = await poolkit.registry.get(
        "echo", lambda: Pool(EchoConnector("127.0.0.1", port), min_size=1, max_size=3)
    )
    assert pool.loop is asyncio.get_running_loop()  # a pool of this loop's own

    async def one(i: int) -> None:
        async with pool.acquire(timeout=5) as conn:
            assert await echo(conn, f"{label}-{i}") == f"{label}-{i}"

    await asyncio.gather(*(one(i) for i in range(10)))
    return pool.stats()


class EchoServer:
    """A line-echo server on a loopback port, running its own loop in a thread."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while line := await reader.readline():
                    writer.write(line)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()

    def __enter__(self) -> EchoServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def main() -> None:
    """Three asyncio.run() calls, then four threads at once, all with the key "echo"."""
    with EchoServer() as server:
        for run in range(3):
            stats = asyncio.run(work(f"run{run}", server.port))
            print(f"asyncio.run #{run}: pool {stats.name!r}: {stats.acquires} acquires")

        results: dict[str, PoolStats] = {}

        def thread_main(name: str) -> None:
            results[name] = asyncio.run(work(name, server.port))

        threads = [threading.Thread(target=thread_main, args=(f"t{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for name, stats in sorted(results.items()):
            print(f"thread {name}: pool {stats.name!r}: {stats.acquires} acquires")
        assert len({s.name for s in results.values()}) == 4, "each loop had its own pool"
        # Every loop has ended, and with it its pool: nothing is left in the registry.
        print("pools left:", poolkit.registry.all_pools())


if __name__ == "__main__":
    main()
