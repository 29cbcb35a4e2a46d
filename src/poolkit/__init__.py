"""poolkit: an asyncio-native connection pool framework.

One pool core, one small backend seam (:class:`Connector`), the same behaviour and stats for
PostgreSQL (``poolkit.postgres``), MySQL/MariaDB (``poolkit.mysql``), HTTP (``poolkit.http``)
and WebSocket (``poolkit.websocket``) connections.
"""

from __future__ import annotations

from ._config import CheckPolicy as CheckPolicy
from ._config import PoolConfig as PoolConfig
from ._connector import Connector as Connector
from ._connector import SupportsAbort as SupportsAbort
from ._connector import SupportsDescribe as SupportsDescribe
from ._connector import SupportsIsClosed as SupportsIsClosed
from ._connector import SupportsNeedsReset as SupportsNeedsReset
from ._events import PoolEvent as PoolEvent
from ._health import Finding as Finding
from ._health import HealthMonitor as HealthMonitor
from ._health import HealthReport as HealthReport
from ._health import HealthSample as HealthSample
from ._health import HealthThresholds as HealthThresholds
from ._health import pool_health as pool_health
from ._keyed import KeyedPool as KeyedPool
from ._multiconfig import PoolSettings as PoolSettings
from ._multiconfig import Secret as Secret
from ._multiconfig import pools_from_env as pools_from_env
from ._multiconfig import pools_from_mapping as pools_from_mapping
from ._pool import AcquireContext as AcquireContext
from ._pool import Pool as Pool
from ._registry import ManagedPool as ManagedPool
from ._registry import Registry as Registry
from ._registry import registry as registry
from ._stats import PoolStats as PoolStats
from ._stats import Summary as Summary
from ._stats import sizing_hint as sizing_hint
from .errors import AuthenticationError as AuthenticationError
from .errors import ConfigError as ConfigError
from .errors import ConnectError as ConnectError
from .errors import ConnectionBroken as ConnectionBroken
from .errors import PoolClosed as PoolClosed
from .errors import PoolError as PoolError
from .errors import PoolOverloaded as PoolOverloaded
from .errors import PoolTimeout as PoolTimeout
from .errors import PoolUsageError as PoolUsageError
from .errors import TLSError as TLSError

__version__ = "0.1.0.dev0"

__all__ = (
    "AcquireContext",
    "AuthenticationError",
    "CheckPolicy",
    "ConfigError",
    "ConnectError",
    "ConnectionBroken",
    "Connector",
    "Finding",
    "HealthMonitor",
    "HealthReport",
    "HealthSample",
    "HealthThresholds",
    "KeyedPool",
    "ManagedPool",
    "Pool",
    "PoolClosed",
    "PoolConfig",
    "PoolError",
    "PoolEvent",
    "PoolOverloaded",
    "PoolSettings",
    "PoolStats",
    "PoolTimeout",
    "PoolUsageError",
    "Registry",
    "Secret",
    "Summary",
    "SupportsAbort",
    "SupportsDescribe",
    "SupportsIsClosed",
    "SupportsNeedsReset",
    "TLSError",
    "__version__",
    "pool_health",
    "pools_from_env",
    "pools_from_mapping",
    "registry",
    "sizing_hint",
)

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("poolkit."):
        try:
            _obj.__module__ = "poolkit"
        except (AttributeError, TypeError):  # pragma: no cover - some objects are read-only
            pass
del _name, _obj
