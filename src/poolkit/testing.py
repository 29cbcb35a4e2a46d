"""Test helpers: a fake connector whose every step can succeed, fail, be slow or never return.

Use :class:`FakeConnector` to test code that uses a pool without a server, and
:func:`assert_pool_consistent` after a fault to check the pool's invariants::

    connector = FakeConnector()
    async with Pool(connector, max_size=2) as pool:
        connector.set("check", "fail")          # every check now raises
        connector.set("connect", "slow", 0.5)   # connecting takes 0.5 s
        ...
        assert_pool_consistent(pool)
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from ._pool import Pool
from ._record import State

__all__ = (
    "Behavior",
    "FakeConnection",
    "FakeConnectionError",
    "FakeConnector",
    "Step",
    "assert_pool_consistent",
)

#: What a step does: ``"ok"``; ``"fail"`` (raise :class:`FakeConnectionError`); ``"slow"``
#: (sleep ``delay`` seconds, then succeed); ``"never"`` (block until cancelled).
Behavior = Literal["ok", "fail", "slow", "never"]
Step = Literal["connect", "check", "reset", "close"]
_STEPS: tuple[Step, ...] = ("connect", "check", "reset", "close")
_ids = itertools.count(1)


class FakeConnectionError(ConnectionError):
    """Raised by a :class:`FakeConnector` step set to ``"fail"``."""


@dataclass(eq=False)
class FakeConnection:
    """A connection made by :class:`FakeConnector`; records what happened to it.

    Attributes:
        id: a unique number.
        closed: closed gracefully.
        aborted: closed with ``abort()``.
        broken: made unusable by :meth:`FakeConnector.kill` (``is_closed`` and ``check`` see it).
        dirty: session state a borrower left; ``reset()`` clears it.
        checks: how many checks ran on it.
        resets: how many resets ran on it.
    """

    id: int = field(default_factory=lambda: next(_ids))
    closed: bool = False
    aborted: bool = False
    broken: bool = False
    dirty: bool = False
    checks: int = 0
    resets: int = 0

    @property
    def alive(self) -> bool:
        """Neither closed, aborted nor broken."""
        return not (self.closed or self.aborted or self.broken)


class FakeConnector:
    """A connector for tests; each step's behaviour can be changed at any time.

    Args:
        connect: the initial behaviour of ``connect()``.
        check: the initial behaviour of ``check()``.
        reset: the initial behaviour of ``reset()``.
        close: the initial behaviour of ``close()``.
        delay: seconds a ``"slow"`` step takes.
        needs_reset: ``None`` (the capability is absent: every release resets), or ``True`` /
            ``False``: the value ``needs_reset()`` returns when the connection is not dirty
            (a dirty connection always needs a reset).
        target: what ``describe()`` returns.
    """

    def __init__(
        self,
        *,
        connect: Behavior = "ok",
        check: Behavior = "ok",
        reset: Behavior = "ok",
        close: Behavior = "ok",
        delay: float = 0.05,
        needs_reset: bool | None = None,
        target: str = "fake://test",
    ) -> None:
        self.behavior: dict[Step, Behavior] = {
            "connect": connect,
            "check": check,
            "reset": reset,
            "close": close,
        }
        self.delay = delay
        self._fail_next: Counter[Step] = Counter()
        self.calls: Counter[str] = Counter()
        self.opened: list[FakeConnection] = []
        self.target = target
        if needs_reset is not None:
            value = needs_reset
            self.needs_reset = lambda conn: conn.dirty or value

    # -- controls -------------------------------------------------------------------------

    def set(self, step: Step, behavior: Behavior, delay: float | None = None) -> None:
        """Change what ``step`` does from now on (and optionally the slow delay)."""
        if step not in _STEPS:
            raise ValueError(f"unknown step {step!r}; expected one of {_STEPS}")
        self.behavior[step] = behavior
        if delay is not None:
            self.delay = delay

    def fail_next(self, step: Step, times: int = 1) -> None:
        """Make the next ``times`` calls of ``step`` fail, then behave as configured."""
        self._fail_next[step] += times

    def kill(self, conn: FakeConnection) -> None:
        """Make ``conn`` dead, as if the server had dropped it."""
        conn.broken = True

    @property
    def live(self) -> list[FakeConnection]:
        """Connections opened and not yet closed or aborted."""
        return [c for c in self.opened if not (c.closed or c.aborted)]

    # -- the Connector protocol --------------------------------------------------------------

    async def connect(self) -> FakeConnection:
        """Open a fake connection."""
        await self._step("connect")
        conn = FakeConnection()
        self.opened.append(conn)
        return conn

    async def check(self, conn: FakeConnection) -> None:
        """Raise if ``conn`` was killed or the step is set to fail."""
        conn.checks += 1
        await self._step("check")
        if not conn.alive:
            raise FakeConnectionError(f"fake connection {conn.id} is dead")

    async def reset(self, conn: FakeConnection) -> None:
        """Clear ``conn.dirty``."""
        conn.resets += 1
        await self._step("reset")
        if not conn.alive:
            raise FakeConnectionError(f"fake connection {conn.id} is dead")
        conn.dirty = False

    async def close(self, conn: FakeConnection) -> None:
        """Close ``conn`` gracefully."""
        await self._step("close")
        conn.closed = True

    def is_closed(self, conn: FakeConnection) -> bool:
        """``True`` if ``conn`` is closed, aborted or killed."""
        return not conn.alive

    def abort(self, conn: FakeConnection) -> None:
        """Close ``conn`` at once."""
        self.calls["abort"] += 1
        conn.aborted = True

    def describe(self) -> str:
        """The fake target."""
        return self.target

    async def _step(self, step: Step) -> None:
        self.calls[step] += 1
        if self._fail_next[step] > 0:
            self._fail_next[step] -= 1
            raise FakeConnectionError(f"fake {step} failure")
        behavior = self.behavior[step]
        if behavior == "ok":
            return
        if behavior == "fail":
            raise FakeConnectionError(f"fake {step} failure")
        if behavior == "slow":
            await asyncio.sleep(self.delay)
            return
        await asyncio.Event().wait()  # "never": until cancelled


def assert_pool_consistent(pool: Pool[Any]) -> None:
    """Assert the pool's invariants; raise ``AssertionError`` naming the one broken.

    * ``size == idle + in_use + connecting + checking + resetting <= max_size`` (after a
      shrinking ``resize()`` the surplus may exceed it until it is returned, never idle)
    * no counter is negative; no connection is in two places; idle ones are in state idle,
      lent ones in state in_use; every tracked connection is accounted for.
    """
    stats = pool.stats()
    parts = stats.idle + stats.in_use + stats.connecting + stats.checking + stats.resetting
    assert stats.size == parts, f"size {stats.size} != sum of states {parts}: {stats}"
    # Above max_size only transiently after a shrinking resize(): the surplus is lent or on its
    # way back, and is closed as it returns, so none of it may sit idle.
    assert stats.size <= stats.max_size or stats.idle == 0 or pool.closed, (
        f"size {stats.size} exceeds max_size {stats.max_size} with {stats.idle} idle"
    )
    for name in ("idle", "in_use", "connecting", "checking", "resetting", "closing", "waiting"):
        assert getattr(stats, name) >= 0, f"{name} is negative: {getattr(stats, name)}"
    idle_ids = [id(r) for r in pool._idle]
    assert len(idle_ids) == len(set(idle_ids)), "a connection is twice in the idle stack"
    in_use_records = list(pool._in_use.values())
    assert not set(idle_ids) & {id(r) for r in in_use_records}, "a connection is idle and in use"
    for record in pool._idle:
        assert record.state is State.IDLE, f"{record!r} is in the idle stack"
        assert id(record.conn) in pool._records, f"{record!r} is idle but untracked"
    for record in in_use_records:
        assert record.state is State.IN_USE, f"{record!r} is in the in-use map"
        assert id(record.conn) in pool._records, f"{record!r} is in use but untracked"
    tracked = Counter(r.state for r in pool._records.values())
    assert tracked[State.IDLE] == stats.idle, f"idle records {tracked} vs stats {stats.idle}"
    assert tracked[State.IN_USE] == stats.in_use, f"in-use records {tracked} vs {stats.in_use}"
    assert tracked[State.RESETTING] == stats.resetting, f"resetting {tracked} vs {stats}"
    assert tracked[State.CHECKING] == stats.checking, f"checking {tracked} vs {stats}"
