"""Integrations with web frameworks and metrics systems.

Each lives in its own module and needs its own extra; importing this package imports none of
them (nor any framework):

* :mod:`poolkit.integrations.fastapi` (``poolkit[fastapi]``): lifespan, ``Depends``, 503 mapping.
* :mod:`poolkit.integrations.aiohttp` (``poolkit[aiohttp]``): ``setup(app, pools)``, middleware.
* :mod:`poolkit.integrations.prometheus` (``poolkit[prometheus]``): a scrape-time collector.
* :mod:`poolkit.integrations.otel` (``poolkit[otel]``): OpenTelemetry semantic-convention
  instruments.

:class:`PoolGroup`, the framework-neutral group of named pools those build on, is available
here too (loaded on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._common import PoolGroup as PoolGroup

__all__ = ("PoolGroup",)


def __getattr__(name: str) -> Any:
    if name == "PoolGroup":
        from ._common import PoolGroup

        return PoolGroup
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
