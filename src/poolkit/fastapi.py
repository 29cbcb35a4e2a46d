"""FastAPI / Starlette integration (``pip install poolkit[fastapi]``).

``poolkit.fastapi`` is a short alias of :mod:`poolkit.integrations.fastapi`, where everything is
documented::

    from poolkit.fastapi import Acquire, PoolManager, add_exception_handlers

    pools = PoolManager({"pg": lambda: create_pool(DSN)})
    app = FastAPI(lifespan=pools.lifespan)
    add_exception_handlers(app)
"""

from __future__ import annotations

from poolkit.integrations.fastapi import STATE_KEY as STATE_KEY
from poolkit.integrations.fastapi import Acquire as Acquire
from poolkit.integrations.fastapi import PoolManager as PoolManager
from poolkit.integrations.fastapi import add_exception_handlers as add_exception_handlers
from poolkit.integrations.fastapi import connection as connection
from poolkit.integrations.fastapi import get_pools as get_pools
from poolkit.integrations.fastapi import pool as pool

__all__ = (
    "STATE_KEY",
    "Acquire",
    "PoolManager",
    "add_exception_handlers",
    "connection",
    "get_pools",
    "pool",
)
