"""OpenTelemetry instruments (``pip install poolkit[otel]``).

``poolkit.otel`` is a short alias of :mod:`poolkit.integrations.otel`, where everything is
documented::

    from poolkit.otel import PoolInstrumentation

    instrumentation = PoolInstrumentation({"pg": pool})
"""

from __future__ import annotations

from poolkit.integrations.otel import SCHEMA_URL as SCHEMA_URL
from poolkit.integrations.otel import SEMCONV_VERSION as SEMCONV_VERSION
from poolkit.integrations.otel import PoolInstrumentation as PoolInstrumentation

__all__ = (
    "SCHEMA_URL",
    "SEMCONV_VERSION",
    "PoolInstrumentation",
)
