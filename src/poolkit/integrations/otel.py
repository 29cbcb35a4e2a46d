"""OpenTelemetry metrics for pools, following the semantic conventions (v1.44.0).

Needs only ``opentelemetry-api`` (``pip install poolkit[otel]``); the application configures
the SDK and its exporters. ::

    from poolkit.integrations.otel import PoolInstrumentation

    instrumentation = PoolInstrumentation({"pg": pg_pool})        # gauges and counters
    pg_pool = create_pool(dsn, on_event=instrumentation.on_event)  # + the three histograms

Instruments (``db.client.connection.pool.name`` on each; all Development stability in the
conventions):

=========================================  ====================  ================================
instrument                                 kind                  source
=========================================  ====================  ================================
``db.client.connection.count``             ObservableUpDownCtr   ``idle`` / ``in_use`` with
                                                                 ``db.client.connection.state``
                                                                 = ``idle`` | ``used``
``db.client.connection.idle.max``          ObservableUpDownCtr   ``max_size`` (no separate idle
                                                                 cap: every slot may be idle)
``db.client.connection.idle.min``          ObservableUpDownCtr   ``min_size``
``db.client.connection.max``               ObservableUpDownCtr   ``max_size``
``db.client.connection.pending_requests``  ObservableUpDownCtr   ``waiting``
``db.client.connection.timeouts``          ObservableCounter     ``timeouts``
``db.client.connection.create_time``       Histogram (s)         ``connect`` events
``db.client.connection.wait_time``         Histogram (s)         ``acquire`` events
``db.client.connection.use_time``          Histogram (s)         ``release`` events
``http.client.open_connections``           ObservableUpDownCtr   HTTP pools: ``http.connection.
                                                                 state`` = ``active`` | ``idle``,
                                                                 ``server.address``,
                                                                 ``server.port``, ``url.scheme``
=========================================  ====================  ================================

Why events for the histograms: OpenTelemetry has no asynchronous histogram, and a histogram
cannot be rebuilt from the pool's aggregated buckets without replaying every observation. So
the three duration histograms are recorded from the pool's ``on_event`` callback, one
``record()`` per acquire, release and connect (a few microseconds with the SDK; nothing at all
when ``on_event`` is not passed). Gauges and counters are read from ``pool.stats()`` when the
SDK collects, at no cost on the acquire path.

HTTP pools (backend ``http``) report ``http.client.open_connections`` instead of the
``db.client.*`` instruments. WebSocket pools, for which no convention exists, report the
``db.client.connection.*`` instruments.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

try:
    from opentelemetry.metrics import (
        CallbackOptions,
        Meter,
        MeterProvider,
        Observation,
        get_meter,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("poolkit.integrations.otel requires `pip install poolkit[otel]`") from exc

from .. import PoolEvent, PoolStats
from ._common import backend_name, iter_pools, pool_name, snapshot, sub_pools

__all__ = ("SCHEMA_URL", "SEMCONV_VERSION", "PoolInstrumentation")

logger = logging.getLogger("poolkit.integrations.otel")

#: The semantic-conventions version these instruments follow.
SEMCONV_VERSION: Final = "1.44.0"
SCHEMA_URL: Final = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

POOL_NAME: Final = "db.client.connection.pool.name"
STATE: Final = "db.client.connection.state"
HTTP_STATE: Final = "http.connection.state"

#: Advisory bucket boundaries (seconds) for the duration histograms.
DURATION_BUCKETS: Final = (
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _version() -> str | None:
    try:
        return importlib.metadata.version("poolkit")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        return None


class PoolInstrumentation:
    """Reports pools through OpenTelemetry metrics instruments.

    Args:
        pools: name -> pool mapping, a :class:`~poolkit.integrations.PoolGroup` (e.g. the
            FastAPI ``PoolManager``), an iterable of pools (named by ``pool.name``), or a
            zero-argument callable returning one of those; read at every collection.
        meter_provider: where to get the meter (default: the global provider).
        meter: use this meter instead.
    """

    def __init__(
        self,
        pools: Any = None,
        *,
        meter_provider: MeterProvider | None = None,
        meter: Meter | None = None,
    ) -> None:
        self._pools: Any = pools if pools is not None else {}
        self._labels: dict[str, tuple[str, str]] = {}
        self._closed = False
        if meter is None:
            meter = get_meter(
                "poolkit", _version() or "", meter_provider=meter_provider, schema_url=SCHEMA_URL
            )
        self.meter = meter
        conn = "{connection}"
        meter.create_observable_up_down_counter(
            "db.client.connection.count",
            callbacks=[self._observe_count],
            unit=conn,
            description="The number of connections that are currently in state described by "
            "the state attribute.",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.idle.max",
            callbacks=[self._observer(lambda s: s.max_size)],
            unit=conn,
            description="The maximum number of idle open connections allowed.",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.idle.min",
            callbacks=[self._observer(lambda s: s.min_size)],
            unit=conn,
            description="The minimum number of idle open connections allowed.",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.max",
            callbacks=[self._observer(lambda s: s.max_size)],
            unit=conn,
            description="The maximum number of open connections allowed.",
        )
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests",
            callbacks=[self._observer(lambda s: s.waiting)],
            unit="{request}",
            description="The number of current pending requests for an open connection.",
        )
        meter.create_observable_counter(
            "db.client.connection.timeouts",
            callbacks=[self._observer(lambda s: s.timeouts)],
            unit="{timeout}",
            description="The number of connection timeouts that have occurred trying to obtain "
            "a connection from the pool.",
        )
        meter.create_observable_up_down_counter(
            "http.client.open_connections",
            callbacks=[self._observe_http],
            unit=conn,
            description="Number of outbound HTTP connections that are currently active or idle "
            "on the client.",
        )
        self._create_time = meter.create_histogram(
            "db.client.connection.create_time",
            unit="s",
            description="The time it took to create a new connection.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._use_time = meter.create_histogram(
            "db.client.connection.use_time",
            unit="s",
            description="The time between borrowing a connection and returning it to the pool.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def close(self) -> None:
        """Stop reporting (OpenTelemetry instruments cannot be removed from a meter)."""
        self._closed = True
        self._pools = {}
        self._labels = {}

    def on_event(self, event: PoolEvent) -> None:
        """Record the duration histograms; pass as the pool's ``on_event`` callback.

        ``acquire`` -> ``wait_time``, ``release`` -> ``use_time``, ``connect`` ->
        ``create_time``. Other events are ignored. To keep a callback of your own, call this
        one from it.
        """
        if event.duration is None or self._closed:
            return
        if event.name == "acquire":
            histogram = self._wait_time
        elif event.name == "release":
            histogram = self._use_time
        elif event.name == "connect":
            histogram = self._create_time
        else:
            return
        label, backend = self._label(event.pool)
        if backend == "http":
            return
        histogram.record(event.duration, {POOL_NAME: label})

    # ------------------------------------------------------------------ internals

    def _label(self, pool_name: str) -> tuple[str, str]:
        """(metric name, backend) of the pool called ``pool_name``; cached."""
        found = self._labels.get(pool_name)
        if found is None:
            self._refresh_labels()
            found = self._labels.get(pool_name)
            if found is None and pool_name.endswith("]") and "[" in pool_name:
                # A per-key pool of a keyed pool is named "<keyed name>[<key>]".
                found = self._labels.get(pool_name[: pool_name.index("[")])
            if found is None:
                # A pool not (yet) in ``pools``: report it under its own name. Cached, so an
                # unknown pool costs one refresh, not one per event; collections refresh.
                found = self._labels[pool_name] = (pool_name, "unknown")
        return found

    def _refresh_labels(self) -> None:
        labels: dict[str, tuple[str, str]] = {}
        for name, pool in self._iter():
            backend = backend_name(pool)
            labels[pool_name(pool)] = (str(name), backend)
            config_name = getattr(getattr(pool, "config", None), "name", None)
            if isinstance(config_name, str):  # the name its per-key pools derive theirs from
                labels.setdefault(config_name, (str(name), backend))
            for sub in sub_pools(pool):  # a keyed pool's per-key pools emit the events
                labels[sub.name] = (str(name), backend)
        self._labels = labels

    def _iter(self) -> Iterator[tuple[str, Any]]:
        if self._closed:
            return
        try:
            yield from iter_pools(self._pools)
        except Exception:
            logger.exception("listing the pools to report failed")

    def _db_stats(self) -> Iterator[tuple[str, PoolStats]]:
        self._refresh_labels()
        for name, pool in self._iter():
            try:
                backend = backend_name(pool)
                if backend == "http":
                    continue
                stats = snapshot(pool)
            except Exception:
                logger.exception("reading the stats of pool %r failed; skipped", name)
                continue
            yield str(name), stats

    def _observer(
        self, read: Callable[[PoolStats], int | float]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read(stats), {POOL_NAME: name}) for name, stats in self._db_stats()]

        return observe

    def _observe_count(self, options: CallbackOptions) -> Iterable[Observation]:
        observations: list[Observation] = []
        for name, stats in self._db_stats():
            observations.append(Observation(stats.idle, {POOL_NAME: name, STATE: "idle"}))
            observations.append(Observation(stats.in_use, {POOL_NAME: name, STATE: "used"}))
        return observations

    def _observe_http(self, options: CallbackOptions) -> Iterable[Observation]:
        observations: list[Observation] = []
        for name, pool in self._iter():
            try:
                if backend_name(pool) != "http":
                    continue
                per_origin = _origin_stats(pool)
            except Exception:
                logger.exception("reading the stats of pool %r failed; skipped", name)
                continue
            for stats in per_origin:
                attributes = _server_attributes(stats.target)
                observations.append(Observation(stats.in_use, {**attributes, HTTP_STATE: "active"}))
                observations.append(Observation(stats.idle, {**attributes, HTTP_STATE: "idle"}))
        return observations


def _origin_stats(pool: Any) -> list[PoolStats]:
    """One stats snapshot per origin: ``stats_by_origin()``, a keyed pool's per-key stats, or
    the pool's own."""
    by_origin = getattr(pool, "stats_by_origin", None)
    if callable(by_origin):
        return list(by_origin().values())
    stats = pool.stats()
    if isinstance(stats, Mapping):
        return list(stats.values())
    return [stats]


def _server_attributes(target: str) -> dict[str, str | int]:
    """``server.address``, ``server.port`` and ``url.scheme`` of a (redacted) target URL."""
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError:
        return {}
    attributes: dict[str, str | int] = {}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
    scheme = parts.scheme.lower()
    if scheme:
        attributes["url.scheme"] = scheme
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    if port is not None:
        attributes["server.port"] = port
    return attributes
