"""Prometheus collector (``pip install poolkit[prometheus]``).

``poolkit.prometheus`` is a short alias of :mod:`poolkit.integrations.prometheus`, where
everything is documented::

    from poolkit.prometheus import PoolCollector, register

    REGISTRY.register(PoolCollector({"pg": pool}))
"""

from __future__ import annotations

from poolkit.integrations.prometheus import PoolCollector as PoolCollector
from poolkit.integrations.prometheus import register as register

__all__ = (
    "PoolCollector",
    "register",
)
