"""A one-line progress bar on stderr, for interactive terminals only.

It is drawn only when stderr is a TTY and the output is not ``--json``; otherwise every method
is a no-op, so logs and pipes get no carriage returns. The bar advances by steps (one per
measurement) and, within a step, by the time elapsed against the step's expected duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TextIO

__all__ = ("Progress",)

_WIDTH = 28
_INTERVAL = 0.1


class Progress:
    """A progress bar over ``total`` steps.

    Args:
        stream: where to draw (stderr).
        total: number of steps.
        enabled: draw at all (callers pass ``stream.isatty() and not json``).
    """

    def __init__(self, stream: TextIO, total: int, *, enabled: bool) -> None:
        self._stream = stream
        self._total = max(1, total)
        self.enabled = enabled
        self._done = 0
        self._label = ""
        self._step_started = time.perf_counter()
        self._step_seconds = 0.0
        self._task: asyncio.Task[None] | None = None
        self._drawn = False

    def start(self) -> None:
        """Start redrawing in the background (call inside the running event loop)."""
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._redraw_forever())

    def step(self, label: str, expected_seconds: float) -> None:
        """Begin a new step: finishes the previous one and shows ``label``."""
        if self._label:
            self._done = min(self._total, self._done + 1)
        self._label = label
        self._step_started = time.perf_counter()
        self._step_seconds = expected_seconds
        self._draw()

    async def stop(self) -> None:
        """Stop redrawing and erase the bar."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.enabled and self._drawn:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()
            self._drawn = False

    def render(self) -> str:
        """The bar as text, e.g. ``[#######-----] 3/7 pooled, 8 tasks``."""
        within = 0.0
        if self._step_seconds > 0:
            within = min(1.0, (time.perf_counter() - self._step_started) / self._step_seconds)
        fraction = min(1.0, (self._done + (within if self._label else 0.0)) / self._total)
        filled = round(fraction * _WIDTH)
        step = min(self._total, self._done + (1 if self._label else 0))
        return f"[{'#' * filled}{'-' * (_WIDTH - filled)}] {step}/{self._total} {self._label}"

    def _draw(self) -> None:
        if not self.enabled:
            return
        self._stream.write("\r\x1b[2K" + self.render())
        self._stream.flush()
        self._drawn = True

    async def _redraw_forever(self) -> None:
        while True:
            await asyncio.sleep(_INTERVAL)
            self._draw()
