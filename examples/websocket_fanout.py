"""Fan-out: many local consumers of one upstream WebSocket stream, with poolkit.websocket.

Run it as is: it starts its own tiny "market data" server on 127.0.0.1 (a free port), then

* opens ONE upstream connection for the ``trades`` stream, shared by three local subscribers,
* lets one subscriber be slow (a queue of 5 messages, ``drop_oldest``): it loses old messages,
  the others lose nothing and are never slowed down,
* drops the upstream once (the server closes every connection): the hub reconnects,
  re-subscribes, and every subscriber sees a ``Gap`` marker where messages may be missing,
* prints the per-stream and per-subscriber stats, and exits 0.

    python examples/websocket_fanout.py
"""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.server import ServerConnection, serve

from poolkit.websocket import FanOut, Gap, Subscription, create_pool

TICKS = 40


class MarketServer:
    """Publishes ``{"trade": n}`` to every connection that sent ``{"subscribe": "trades"}``."""

    def __init__(self) -> None:
        self.subscribers: set[ServerConnection] = set()
        self.connections = 0
        self.subscribed = asyncio.Event()

    async def handler(self, conn: ServerConnection) -> None:
        self.connections += 1
        async for message in conn:
            if json.loads(message) == {"subscribe": "trades"}:
                self.subscribers.add(conn)
                self.subscribed.set()
        self.subscribers.discard(conn)

    async def publish(self, n: int) -> None:
        for conn in list(self.subscribers):
            await conn.send(json.dumps({"trade": n}))

    async def wait_subscribed(self) -> None:
        await asyncio.wait_for(self.subscribed.wait(), 10)


async def consume(name: str, stream: Subscription, log: dict[str, list[object]]) -> None:
    """Read until the last tick, noting messages and gaps."""
    async for msg in stream:
        if isinstance(msg, Gap):
            log[name].append("GAP")
            continue
        log[name].append(msg["trade"])
        if name == "slow":
            await asyncio.sleep(0.02)  # a consumer that cannot keep up
        if msg["trade"] == TICKS - 1:
            return


async def main() -> None:
    market = MarketServer()
    async with serve(market.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        pool = create_pool(
            f"ws://127.0.0.1:{port}", max_size=4, reconnect_initial_delay=0.05, environ={}
        )
        log: dict[str, list[object]] = {"fast-1": [], "fast-2": [], "slow": []}
        async with pool, FanOut(pool, queue_size=100, linger=0) as hub:
            trades = {"subscribe": "trades"}
            async with (
                hub.subscribe("/ws/trades", subscribe=trades) as fast1,
                hub.subscribe("/ws/trades", subscribe=trades) as fast2,
                hub.subscribe("/ws/trades", subscribe=trades, queue_size=5) as slow,
            ):
                readers = [
                    asyncio.create_task(consume("fast-1", fast1, log)),
                    asyncio.create_task(consume("fast-2", fast2, log)),
                    asyncio.create_task(consume("slow", slow, log)),
                ]
                await market.wait_subscribed()
                for n in range(TICKS):
                    if n == TICKS // 2:
                        # The upstream drops: the hub reconnects and re-subscribes by itself.
                        for conn in list(market.subscribers):
                            await conn.close(1001, "maintenance")
                        market.subscribers.clear()
                        market.subscribed.clear()
                        await market.wait_subscribed()
                    await market.publish(n)
                    await asyncio.sleep(0.002)
                await asyncio.wait_for(asyncio.gather(*readers), 10)
                (stream,) = hub.stats()
                print(
                    f"server saw {market.connections} connections for 3 subscribers (1 + 1 reconnect)"
                )
                print(
                    f"stream {stream.uri}: in={stream.messages_in} delivered={stream.delivered} "
                    f"dropped={stream.dropped} reconnects={stream.reconnects} gaps={stream.gaps}"
                )
                for name, sub in (("fast-1", fast1), ("fast-2", fast2), ("slow", slow)):
                    s = sub.stats()
                    print(f"  {name}: delivered={s.delivered} dropped={s.dropped} gaps={s.gaps}")
                    print(f"    saw: {log[name]}")
        assert log["fast-1"] == log["fast-2"]
        assert "GAP" in log["fast-1"]
        print("pool:", int(pool.stats().extra["messages_received"]), "messages received upstream")


if __name__ == "__main__":
    asyncio.run(main())
