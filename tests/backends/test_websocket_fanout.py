"""poolkit.websocket.FanOut: one upstream per stream, bounded subscriber queues, gaps, linger.

Every test runs against a real websockets server on 127.0.0.1 (``ws_server.WSServer``) and
checks the server's own view (handshakes, subscriptions) as well as the hub's stats.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from backends.ws_server import WSServer
from fix_proxy import Endpoint as ProxyEndpoint
from fix_servers import FdTracker
from poolkit.websocket import (
    ConfigError,
    ConnectError,
    FanOut,
    Gap,
    PoolClosed,
    PoolError,
    PoolTimeout,
    SubscriberOverflow,
    Subscription,
    WebSocketConnection,
    WebSocketPool,
    create_pool,
)

TOPIC = {"subscribe": "trades"}


@pytest.fixture
async def server() -> AsyncIterator[WSServer]:
    """A plain ws:// server on 127.0.0.1."""
    srv = WSServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def pool(server: WSServer) -> AsyncIterator[WebSocketPool]:
    """A pool on ``server`` with fast reconnects, closed after the test."""
    p = create_pool(
        server.base_uri,
        environ={},
        reconnect_initial_delay=0.01,
        reconnect_max_delay=0.05,
        close_timeout=1.0,
    )
    yield p
    await p.close()


async def eventually(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout} s")


async def take(sub: Subscription, n: int) -> list[Any]:
    """Read ``n`` items (messages or gaps) from ``sub``."""
    return [await sub.get(timeout=5) for _ in range(n)]


# -- sharing --------------------------------------------------------------------------------------


async def test_subscribers_of_one_stream_share_one_upstream_connection(
    no_fd_leak: FdTracker, server: WSServer, pool: WebSocketPool
) -> None:
    """Three subscribers of the same URI and subscription: one upstream connection and one
    subscription on the server; each subscriber gets every message in order."""
    async with (
        FanOut(pool) as hub,
        hub.subscribe("/ws/btcusdt", subscribe=TOPIC) as a,
        hub.subscribe("/ws/btcusdt", subscribe={"subscribe": "trades"}) as b,
        hub.subscribe(server.uri("/ws/btcusdt"), subscribe=TOPIC) as c,
    ):
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        for i in range(20):
            await server.publish("trades", {"seq": i})
        for sub in (a, b, c):
            assert [m["seq"] for m in await take(sub, 20)] == list(range(20))
        (stream,) = hub.stats()
        assert stream.subscribers == 3
        assert (stream.messages_in, stream.delivered, stream.dropped) == (20, 60, 0)
        assert stream.connected
    assert server.handshakes == 1
    assert server.received == [("/ws/btcusdt", '{"subscribe":"trades"}')]


async def test_different_subscriptions_or_uris_get_their_own_upstreams(
    server: WSServer, pool: WebSocketPool
) -> None:
    """A different subscription or URI is a different stream with its own upstream."""
    async with (
        FanOut(pool) as hub,
        hub.subscribe("/ws/a", subscribe={"subscribe": "x"}) as ax,
        hub.subscribe("/ws/a", subscribe={"subscribe": "y"}) as ay,
        hub.subscribe("/ws/b", subscribe={"subscribe": "x"}) as bx,
    ):
        await server.wait_for(lambda: server.subscribers("x") == 2)
        await server.publish("y", {"only": "y"})
        assert await ay.get(timeout=5) == {"only": "y"}
        assert ax.queued == 0
        assert bx.queued == 0
        assert len(hub.stats()) == 3
    assert server.paths == {"/ws/a": 2, "/ws/b": 1}


async def test_async_callable_subscription_can_wait_for_an_acknowledgement(
    server: WSServer, pool: WebSocketPool
) -> None:
    """subscribe= may be an async callable doing the handshake; entering waits for it, and the
    acknowledgement it consumed is not delivered to subscribers."""
    server.ack_subscriptions = True

    async def handshake(conn: WebSocketConnection) -> None:
        await conn.send({"subscribe": "acked"})
        assert await conn.recv(timeout=5) == {"subscribed": "acked"}

    async with FanOut(pool) as hub, hub.subscribe("/feed", subscribe=handshake) as sub:
        assert server.subscribers("acked") == 1
        await server.publish("acked", {"n": 1})
        assert await sub.get(timeout=5) == {"n": 1}


# -- slow subscribers -----------------------------------------------------------------------------


async def test_one_slow_subscriber_among_2000_never_slows_the_others(
    no_fd_leak: FdTracker, server: WSServer, pool: WebSocketPool
) -> None:
    """1 upstream, 2,000 subscribers, one never reading: the 1,999 others get every message in
    order, the slow one's drops are counted, every queue stays within its bound, and the server
    saw exactly one connection."""
    fast_count, batches, batch = 1999, 4, 50
    total = batches * batch
    slow_bound = 10
    received = [0] * fast_count
    out_of_order = 0
    max_backlog = 0
    ready = asyncio.Event()
    entered = 0

    async with FanOut(pool, queue_size=2 * batch) as hub:

        async def fast(index: int) -> None:
            nonlocal entered, out_of_order, max_backlog
            async with hub.subscribe("/ws/btcusdt", subscribe=TOPIC) as sub:
                entered += 1
                if entered == fast_count:
                    ready.set()
                expected = 0
                async for msg in sub:
                    if msg["seq"] != expected:
                        out_of_order += 1
                    expected = msg["seq"] + 1
                    received[index] += 1
                    max_backlog = max(max_backlog, sub.queued)
                    if expected == total:
                        break
                assert sub.stats().dropped == 0

        async with hub.subscribe(
            "/ws/btcusdt", subscribe=TOPIC, queue_size=slow_bound, overflow="drop_oldest"
        ) as slow:
            tasks = [asyncio.create_task(fast(i)) for i in range(fast_count)]
            await asyncio.wait_for(ready.wait(), 30)
            await server.wait_for(lambda: server.subscribers("trades") == 1)
            for b in range(batches):
                for i in range(b * batch, (b + 1) * batch):
                    await server.publish("trades", {"seq": i})
                # Pace the publisher on the fast readers, never on the slow one.
                target = (b + 1) * batch
                await eventually(lambda t=target: min(received) >= t, timeout=30)  # type: ignore[misc]
                assert slow.queued == slow_bound
            await asyncio.gather(*tasks)

            stats = slow.stats()
            assert stats.dropped == total - slow_bound
            assert stats.max_queued == slow_bound
            assert [m["seq"] for m in await take(slow, slow_bound)] == list(
                range(total - slow_bound, total)
            )
            (stream,) = hub.stats()
            assert stream.messages_in == total
            assert stream.dropped == total - slow_bound
            assert stream.delivered == fast_count * total + slow_bound

    assert out_of_order == 0
    assert received == [total] * fast_count
    assert max_backlog <= 2 * batch
    assert server.handshakes == 1
    assert server.paths == {"/ws/btcusdt": 1}


async def test_memory_does_not_grow_with_messages_while_a_subscriber_stalls(
    server: WSServer, pool: WebSocketPool
) -> None:
    """With one subscriber never reading, traced memory after 2,000 messages is no larger than
    after 500: its backlog is capped by its queue size and nothing accumulates per message."""
    received = 0

    async with FanOut(pool) as hub:

        async def reader(sub: Subscription) -> None:
            nonlocal received
            async for _ in sub:
                received += 1

        async with (
            hub.subscribe("/m", TOPIC, queue_size=100) as stalled,
            hub.subscribe("/m", TOPIC, queue_size=100) as active,
        ):
            task = asyncio.create_task(reader(active))
            await server.wait_for(lambda: server.subscribers("trades") == 1)
            payload = "x" * 200
            sizes: list[int] = []
            gc.collect()
            tracemalloc.start()
            try:
                for round_ in range(4):
                    for i in range(500):
                        await server.publish("trades", {"seq": i, "pad": payload})
                    await eventually(lambda r=round_: received >= (r + 1) * 500)  # type: ignore[misc]
                    gc.collect()
                    sizes.append(tracemalloc.get_traced_memory()[0])
            finally:
                tracemalloc.stop()
            assert stalled.queued == 100
            assert stalled.stats().dropped == 1900
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    # 64 KiB of slack for allocator noise; 1,500 more 200-byte messages would be ~450 KiB.
    assert sizes[-1] - sizes[0] < 64 * 1024, sizes


async def test_drop_oldest_keeps_the_newest_messages(server: WSServer, pool: WebSocketPool) -> None:
    """overflow="drop_oldest": a full queue discards its oldest message for each new one."""
    async with (
        FanOut(pool) as hub,
        hub.subscribe("/f", TOPIC, queue_size=3, overflow="drop_oldest") as sub,
    ):
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        for i in range(8):
            await server.publish("trades", {"seq": i})
        await eventually(lambda: sub.stats().dropped == 5)
        assert [m["seq"] for m in await take(sub, 3)] == [5, 6, 7]


async def test_drop_newest_keeps_the_oldest_messages(server: WSServer, pool: WebSocketPool) -> None:
    """overflow="drop_newest": a full queue refuses new messages until it is read."""
    async with (
        FanOut(pool) as hub,
        hub.subscribe("/f", TOPIC, queue_size=3, overflow="drop_newest") as sub,
    ):
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        for i in range(8):
            await server.publish("trades", {"seq": i})
        await eventually(lambda: sub.stats().dropped == 5)
        assert [m["seq"] for m in await take(sub, 3)] == [0, 1, 2]
        assert hub.stats()[0].dropped == 5


async def test_disconnect_policy_detaches_the_subscriber_after_its_backlog(
    server: WSServer, pool: WebSocketPool
) -> None:
    """overflow="disconnect": the overflowing subscriber reads its queued messages, then gets
    SubscriberOverflow; the other subscribers keep receiving."""
    async with (
        FanOut(pool) as hub,
        hub.subscribe("/f", TOPIC, queue_size=2, overflow="disconnect") as strict,
        hub.subscribe("/f", TOPIC) as other,
    ):
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        for i in range(4):
            await server.publish("trades", {"seq": i})
        assert [m["seq"] for m in await take(other, 4)] == [0, 1, 2, 3]
        assert [m["seq"] for m in await take(strict, 2)] == [0, 1]
        with pytest.raises(SubscriberOverflow, match="overflowed"):
            await strict.get(timeout=5)
        assert strict.closed
        (stream,) = hub.stats()
        assert (stream.subscribers, stream.disconnected, stream.dropped) == (1, 1, 1)
        await server.publish("trades", {"seq": 4})
        assert (await other.get(timeout=5))["seq"] == 4


# -- upstream failures ----------------------------------------------------------------------------


async def test_gap_is_signalled_after_upstream_restart_and_subscription_is_resent(
    no_fd_leak: FdTracker, server: WSServer, pool: WebSocketPool
) -> None:
    """The server restarts: every subscriber sees one Gap, the hub reconnects with backoff and
    re-subscribes, and messages flow again after the Gap."""
    async with (
        FanOut(pool) as hub,
        hub.subscribe("/f", TOPIC) as a,
        hub.subscribe("/f", TOPIC) as b,
    ):
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        await server.publish("trades", {"seq": 1})
        await server.restart()
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        await server.publish("trades", {"seq": 2})
        for sub in (a, b):
            first, gap, after = await take(sub, 3)
            assert first == {"seq": 1}
            assert isinstance(gap, Gap)
            assert gap.losses == 1
            assert after == {"seq": 2}
            assert sub.stats().gaps == 1
        (stream,) = hub.stats()
        assert (stream.reconnects, stream.gaps) == (1, 1)
    assert server.handshakes == 2
    assert server.received.count(("/f", '{"subscribe":"trades"}')) == 2
    assert pool.stats().extra["lost"] == 1


async def test_gap_after_normal_close_by_server(server: WSServer, pool: WebSocketPool) -> None:
    """A clean close by the server (1001) is an upstream loss too: Gap, then resubscription."""
    async with FanOut(pool) as hub, hub.subscribe("/f", TOPIC) as sub:
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        await server.close_all(1001)
        assert isinstance(await sub.get(timeout=5), Gap)
        await server.wait_for(lambda: server.subscribe_requests["trades"] == 2)
        await server.publish("trades", {"seq": 9})
        assert await sub.get(timeout=5) == {"seq": 9}


async def test_upstream_that_stops_answering_pings_is_replaced(server: WSServer) -> None:
    """An upstream whose server went silent is closed by keepalive within ping_interval +
    ping_timeout + close_timeout; subscribers get a Gap and the stream resumes on a new one."""
    pool = create_pool(
        server.base_uri,
        environ={},
        ping_interval=0.05,
        ping_timeout=0.1,
        close_timeout=0.1,
        reconnect_initial_delay=0.01,
        reconnect_max_delay=0.05,
    )
    async with pool, FanOut(pool) as hub, hub.subscribe("/f", TOPIC) as sub:
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        server.stop_answering_pings()
        server.deaf = False  # connections opened from now on answer again
        gap = await sub.get(timeout=0.05 + 0.1 + 0.1 + 5.0)
        assert isinstance(gap, Gap)
        assert "1011" in gap.reason
        # The silent connection may still be listed server-side: wait for the resubscription.
        await server.wait_for(lambda: server.subscribe_requests["trades"] == 2)
        await server.publish("trades", {"seq": 1})
        item = await sub.get(timeout=5)
        assert item == {"seq": 1}


async def test_tcp_reset_of_upstream_yields_gap_and_recovers(
    server: WSServer, pool: WebSocketPool
) -> None:
    """An RST on the upstream is detected at once: Gap, reconnect, messages again."""
    async with FanOut(pool) as hub, hub.subscribe("/f", TOPIC) as sub:
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        server.reset_all()
        gap = await sub.get(timeout=5)
        assert isinstance(gap, Gap)
        await server.wait_for(lambda: server.subscribe_requests["trades"] == 2)
        await server.publish("trades", {"seq": 3})
        assert await sub.get(timeout=5) == {"seq": 3}


async def test_consecutive_losses_merge_into_one_gap_that_overflow_never_drops(
    server: WSServer, pool: WebSocketPool
) -> None:
    """Two losses while the subscriber is not reading give one Gap (losses=2); a full
    drop_oldest queue drops messages but keeps the Gap."""
    async with FanOut(pool) as hub, hub.subscribe("/f", TOPIC, queue_size=2) as sub:
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        await server.publish("trades", {"seq": 0})
        await eventually(lambda: sub.queued == 1)
        for expected in (2, 3):
            server.reset_all()
            await server.wait_for(lambda e=expected: server.subscribe_requests["trades"] == e)  # type: ignore[misc]
        for i in range(1, 4):
            await server.publish("trades", {"seq": i})
        await eventually(lambda: sub.stats().dropped == 2)
        items = await take(sub, 3)
        assert isinstance(items[0], Gap)
        assert items[0].losses == 2
        assert [m["seq"] for m in items[1:]] == [2, 3]


async def test_stream_fails_subscribers_after_max_reconnect_attempts(
    server: WSServer, pool: WebSocketPool
) -> None:
    """With max_reconnect_attempts, a server that stays down ends each subscriber's iteration
    with a PoolError naming the attempts, after the Gap."""
    async with (
        FanOut(pool, max_reconnect_attempts=2, acquire_timeout=0.1) as hub,
        hub.subscribe("/f", TOPIC) as sub,
    ):
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        await server.stop()
        assert isinstance(await sub.get(timeout=5), Gap)
        with pytest.raises(PoolError, match="after 2 attempt"):
            await sub.get(timeout=10)
        assert hub.stats() == []


async def test_first_subscriber_fails_fast_when_upstream_cannot_open(
    refused_port: ProxyEndpoint,
) -> None:
    """Entering the first subscription raises when the upstream cannot be opened; the hub keeps
    no stream behind."""
    pool = create_pool(f"ws://{refused_port.host}:{refused_port.port}", environ={})
    async with pool, FanOut(pool) as hub:
        with pytest.raises(PoolTimeout) as info:
            async with hub.subscribe("/f", TOPIC, timeout=0.2):
                pass
        assert isinstance(info.value.__cause__, ConnectError)
        assert hub.stats() == []


async def test_messages_the_decoder_rejects_are_skipped_and_counted(server: WSServer) -> None:
    """With decode="json", a non-JSON upstream message is skipped (counted as undecodable);
    the stream goes on on the same upstream."""
    pool = create_pool(server.base_uri, environ={}, decode="json")
    async with pool, FanOut(pool) as hub, hub.subscribe("/f", TOPIC) as sub:
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        await server.publish("trades", "not json")
        await server.publish("trades", {"seq": 1})
        assert await sub.get(timeout=5) == {"seq": 1}
        (stream,) = hub.stats()
        assert (stream.undecodable, stream.reconnects) == (1, 0)


async def test_unexpected_reader_failure_is_raised_to_subscribers(server: WSServer) -> None:
    """If the reader dies of an unexpected error (here a decode callable raising
    RuntimeError), subscribers get that error instead of a silent end."""

    def decode(data: str | bytes) -> Any:
        if data == "boom":
            raise RuntimeError("decoder exploded")
        return data

    pool = create_pool(server.base_uri, environ={}, decode=decode)
    async with pool, FanOut(pool) as hub, hub.subscribe("/f", TOPIC) as sub:
        await server.wait_for(lambda: server.subscribers("trades") == 1)
        await server.publish("trades", "fine")
        await server.publish("trades", "boom")
        assert await sub.get(timeout=5) == "fine"
        with pytest.raises(RuntimeError, match="decoder exploded"):
            await sub.get(timeout=5)
        assert hub.stats() == []


# -- lifetime -------------------------------------------------------------------------------------


async def test_upstream_closes_after_linger_once_the_last_subscriber_left(
    server: WSServer, pool: WebSocketPool
) -> None:
    """The upstream outlives its last subscriber by the linger time, then closes; the
    unsubscribe message is sent first. A subscriber returning within the linger reuses it."""
    async with FanOut(pool, linger=0.2) as hub:
        async with hub.subscribe("/f", TOPIC, unsubscribe={"unsubscribe": "trades"}):
            await server.wait_for(lambda: server.subscribers("trades") == 1)
        async with hub.subscribe("/f", TOPIC, unsubscribe={"unsubscribe": "trades"}):
            assert server.handshakes == 1  # came back within the linger: same upstream
        assert len(hub.stats()) == 1
        await server.wait_for(lambda: not server.active, timeout=5)
        assert hub.stats() == []
        assert ("/f", '{"unsubscribe":"trades"}') in server.received
    assert server.handshakes == 1
    assert pool.stats().in_use == 0


async def test_close_ends_every_subscription_and_leaves_no_task(
    no_fd_leak: FdTracker, server: WSServer
) -> None:
    """hub.close() ends iteration for every subscriber, closes every upstream and finishes every
    task it started; subscribing afterwards raises PoolClosed. Idempotent."""
    before = asyncio.all_tasks()
    pool = create_pool(server.base_uri, environ={})
    hub = FanOut(pool)
    subs = [hub.subscribe(f"/s{i % 3}", TOPIC) for i in range(9)]
    for sub in subs:
        await sub.__aenter__()
    await server.wait_for(lambda: server.subscribers("trades") == 3)
    readers = [asyncio.create_task(anext(aiter(sub), None)) for sub in subs]
    await asyncio.sleep(0)
    await hub.close()
    assert await asyncio.gather(*readers) == [None] * 9
    assert all(sub.closed for sub in subs)
    for sub in subs:
        await sub.__aexit__(None, None, None)
    await hub.close()
    left = {t.get_name() for t in asyncio.all_tasks() - before}
    assert not {name for name in left if "fan-out" in name}, left
    await server.wait_for(lambda: not server.active)
    with pytest.raises(PoolClosed):
        async with hub.subscribe("/s0", TOPIC):
            pass
    assert pool.stats().in_use == 0
    await pool.close()
    assert asyncio.all_tasks() - before == set()


async def test_stats_describe_subscriptions_without_secrets(
    server: WSServer, pool: WebSocketPool
) -> None:
    """Stream stats and reprs mask secret-looking fields of the subscription message."""
    secret = "sub-secret-91c2"
    async with (
        FanOut(pool) as hub,
        hub.subscribe("/f", {"op": "auth", "api_key": secret, "channel": "orders"}) as sub,
    ):
        (stream,) = hub.stats()
        assert secret not in repr(stream)
        assert "orders" in stream.subscription
        assert secret not in repr(sub)
        assert secret not in repr(hub)


def test_invalid_hub_and_subscription_options_raise_config_error() -> None:
    """Bad queue sizes, policies, linger and subscriptions are rejected naming the field."""
    pool = create_pool("ws://127.0.0.1:1", environ={})
    with pytest.raises(ConfigError) as info:
        FanOut(pool, queue_size=0)
    assert info.value.field == "queue_size"
    with pytest.raises(ConfigError) as info:
        FanOut(pool, overflow="block")  # type: ignore[arg-type]
    assert info.value.field == "overflow"
    with pytest.raises(ConfigError) as info:
        FanOut(pool, linger=-1)
    assert info.value.field == "linger"
    with pytest.raises(ConfigError) as info:
        FanOut(pool, reconnect_initial_delay=2, reconnect_max_delay=1)
    assert info.value.field == "reconnect_max_delay"
    hub = FanOut(pool)
    with pytest.raises(ConfigError) as info:
        hub.subscribe("/x", {"bad": object()})
    assert info.value.field == "subscribe"
    with pytest.raises(ConfigError) as info:
        hub.subscribe("http://h/x")
    assert info.value.field == "uri"
    with pytest.raises(ConfigError):
        FanOut(object())  # type: ignore[arg-type]
