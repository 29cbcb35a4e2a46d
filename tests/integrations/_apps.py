"""Helpers for the web-framework tests: a real uvicorn server on a loopback port, and a probe
recording pool state when a response starts."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import uvicorn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (free port), lifespan on; yield its base URL.

    The server runs in the current event loop; on exit it shuts down gracefully (running the
    app's lifespan shutdown) and any startup failure is raised.
    """
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_level="warning",
        access_log=False,
        ws="none",
        http="h11",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task  # raises, or returns after a failed startup
                raise RuntimeError("uvicorn stopped during startup (lifespan failed?)")
            await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class ResponseStartProbe:
    """ASGI middleware calling ``probe()`` when a response starts (headers about to be sent).

    Records what ``probe`` returned, in order, in :attr:`seen`.
    """

    def __init__(self, app: Any, probe: Callable[[], Any]) -> None:
        self.app = app
        self.probe = probe
        self.seen: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def probing_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.seen.append(self.probe())
            await send(message)

        await self.app(scope, receive, probing_send)


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (examples are scripts, not a package)."""
    path = EXAMPLES / f"{name}.py"
    module_name = f"poolkit_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
