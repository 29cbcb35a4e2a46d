"""aiohttp web integration (``pip install poolkit[aiohttp]``).

``poolkit.aiohttp`` is a short alias of :mod:`poolkit.integrations.aiohttp`, where everything is
documented::

    from poolkit.aiohttp import acquire, error_middleware, get_pools, setup

    setup(app, {"pg": lambda: create_pool(DSN)})
    async with acquire(request, "pg") as conn: ...
"""

from __future__ import annotations

from poolkit.integrations.aiohttp import POOLS as POOLS
from poolkit.integrations.aiohttp import acquire as acquire
from poolkit.integrations.aiohttp import error_middleware as error_middleware
from poolkit.integrations.aiohttp import get_pools as get_pools
from poolkit.integrations.aiohttp import setup as setup

__all__ = (
    "POOLS",
    "acquire",
    "error_middleware",
    "get_pools",
    "setup",
)
