"""Prometheus metrics for pools: a custom collector that reads ``pool.stats()`` at scrape time.

Nothing is recorded on the acquire path: the pool keeps its own counters and histograms, and
:class:`PoolCollector` turns one ``stats()`` snapshot per pool into metric families when
Prometheus scrapes. ::

    from prometheus_client import REGISTRY
    from poolkit.integrations.prometheus import PoolCollector

    REGISTRY.register(PoolCollector({"pg": pg_pool, "http": http_pool}))

Every series is labelled ``pool`` (the name) and ``backend`` (``postgres``, ``mysql``,
``http``, ``websocket``...). Names use base units and the ``_total`` / ``_seconds`` suffixes:

=========================================  =========  ==============================================
metric                                     type       meaning
=========================================  =========  ==============================================
``poolkit_connections{state}``             gauge      connections by state: ``idle``, ``used``,
                                                      ``connecting``, ``checking``, ``resetting``
``poolkit_connections_max``                gauge      ``max_size``
``poolkit_connections_min``                gauge      ``min_size``
``poolkit_pending_requests``               gauge      tasks waiting for a connection
``poolkit_connections_recommended``        gauge      Little's-law sizing hint
``poolkit_acquires_total``                 counter    successful acquires
``poolkit_connection_timeouts_total``      counter    acquires that ended in ``PoolTimeout``
``poolkit_overloads_total``                counter    acquires refused by ``max_waiting``
``poolkit_acquires_cancelled_total``       counter    acquires cancelled while waiting
``poolkit_connections_created_total``      counter    connections opened
``poolkit_connections_closed_total``       counter    connections closed, label ``reason``
``poolkit_connect_errors_total``           counter    failed connection attempts
``poolkit_check_failures_total``           counter    failed health checks
``poolkit_reset_failures_total``           counter    failed resets
``poolkit_leaks_total``                    counter    connections held past ``leak_threshold``
``poolkit_connection_wait_time_seconds``   histogram  time to obtain a connection
``poolkit_connection_use_time_seconds``    histogram  time between acquire and release
``poolkit_connection_create_time_seconds`` histogram  time to open a connection
``poolkit_<backend>_<counter>_total``      counter    backend counters from ``stats().extra``
                                                      (HTTP requests, WebSocket messages...)
=========================================  =========  ==============================================

The histograms are real Prometheus histograms: the pool records every duration into fixed
log-spaced buckets (ratio 1.25 from 1 µs), and the collector exports every ``bucket_stride``-th
bound (default 4, a ratio of about 2.44, 22 buckets from 1 µs to about 2 minutes) with exact
cumulative counts, so ``histogram_quantile()`` works across instances.

Backend counters: every ``stats().extra`` key is a counter (the contract of
``PoolStats.extra``), exported as ``poolkit_<backend>_<key>_total`` (the backend prefix is not
doubled, names are sanitised to ``[a-z0-9_]``), with three shapes folded into labels:

* ``*_responses_<1xx..5xx|other>`` -> ``*_responses_total{status_class="2xx"}``
* ``*_messages_<sent|received>`` -> ``*_messages_total{direction="sent"}``
* ``*_bytes_<sent|received>`` -> ``*_<sent|received>_bytes_total``

So the HTTP backend gives ``poolkit_http_requests_total``,
``poolkit_http_responses_total{status_class}``, ``poolkit_http_sent_bytes_total`` ...; the
WebSocket backend ``poolkit_websocket_messages_total{direction}``,
``poolkit_websocket_reconnects_total`` ...
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import REGISTRY, CollectorRegistry
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "poolkit.integrations.prometheus requires `pip install poolkit[prometheus]`"
    ) from exc

from .. import PoolStats, Summary
from ._common import backend_name, iter_pools, snapshot

__all__ = ("PoolCollector", "register")

logger = logging.getLogger("poolkit.integrations.prometheus")

_LABELS = ("pool", "backend")
_STATES = (
    ("idle", "idle"),
    ("used", "in_use"),
    ("connecting", "connecting"),
    ("checking", "checking"),
    ("resetting", "resetting"),
)
_COUNTERS = (
    ("acquires", "acquires", "Successful acquires."),
    ("connection_timeouts", "timeouts", "Acquires that ended in PoolTimeout."),
    ("overloads", "overloads", "Acquires refused at once because max_waiting was reached."),
    ("acquires_cancelled", "cancelled", "Acquires cancelled while waiting."),
    ("connections_created", "created", "Connections opened."),
    ("connect_errors", "connect_errors", "Failed connection attempts."),
    ("check_failures", "check_failures", "Failed health checks."),
    ("reset_failures", "reset_failures", "Failed resets after release."),
    ("leaks", "leaks", "Connections reported as held past leak_threshold."),
)
_HISTOGRAMS = (
    ("connection_wait_time", "wait_time", "Time it took to obtain a connection from the pool."),
    ("connection_use_time", "use_time", "Time between borrowing a connection and returning it."),
    ("connection_create_time", "create_time", "Time it took to open a new connection."),
)
_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")


class PoolCollector:
    """A ``prometheus_client`` collector exporting the stats of several pools.

    Args:
        pools: name -> pool mapping, a :class:`~poolkit.integrations.PoolGroup` (e.g. the
            FastAPI ``PoolManager``), an iterable of pools (labelled by ``pool.name``), or a
            zero-argument callable returning one of those. Read at every scrape, so pools added
            later are exported.
        namespace: the metric name prefix.
        bucket_stride: export every n-th bucket bound of the pool's histograms (1 = all 85).
    """

    def __init__(self, pools: Any, *, namespace: str = "poolkit", bucket_stride: int = 4) -> None:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", namespace):
            raise ValueError(f"namespace={namespace!r}: must match [a-zA-Z_][a-zA-Z0-9_]*")
        if (
            isinstance(bucket_stride, bool)
            or not isinstance(bucket_stride, int)
            or bucket_stride < 1
        ):
            raise ValueError(f"bucket_stride={bucket_stride!r}: must be an integer >= 1")
        self._pools = pools
        self._ns = namespace
        self._stride = bucket_stride

    def describe(self) -> Iterator[Metric]:
        """The fixed metric families (without samples), for duplicate checks at registration.

        Backend counters depend on the pools and are not described.
        """
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        """Read every pool's stats once and yield the metric families."""
        families = self._families()
        extras: dict[str, Metric] = {}
        for name, pool in iter_pools(self._pools):
            try:
                stats = snapshot(pool)
                backend = backend_name(pool)
            except Exception:
                logger.exception("reading the stats of pool %r failed; skipped", name)
                continue
            self._add(families, extras, stats, [str(name), backend])
        yield from families.values()
        yield from extras.values()

    def _name(self, suffix: str) -> str:
        return f"{self._ns}_{suffix}"

    def _families(self) -> dict[str, Metric]:
        n = self._name
        families: dict[str, Metric] = {
            "connections": GaugeMetricFamily(
                n("connections"),
                "Connections in the pool by state (idle, used, connecting, checking, resetting).",
                labels=(*_LABELS, "state"),
            ),
            "max": GaugeMetricFamily(
                n("connections_max"), "Maximum number of open connections allowed.", labels=_LABELS
            ),
            "min": GaugeMetricFamily(
                n("connections_min"), "Connections kept open even when idle.", labels=_LABELS
            ),
            "pending": GaugeMetricFamily(
                n("pending_requests"), "Tasks waiting for a connection.", labels=_LABELS
            ),
            "recommended": GaugeMetricFamily(
                n("connections_recommended"),
                "Connections needed by Little's law (arrival rate x mean hold time x 1.5).",
                labels=_LABELS,
            ),
            "closed": CounterMetricFamily(
                n("connections_closed"),
                "Connections closed, by reason.",
                labels=(*_LABELS, "reason"),
            ),
        }
        for key, _, doc in _COUNTERS:
            families[key] = CounterMetricFamily(n(key), doc, labels=_LABELS)
        for key, _, doc in _HISTOGRAMS:
            families[key] = HistogramMetricFamily(n(key), doc, labels=_LABELS, unit="seconds")
        return families

    def _add(
        self,
        families: dict[str, Metric],
        extras: dict[str, Metric],
        stats: PoolStats,
        labels: list[str],
    ) -> None:
        connections = families["connections"]
        assert isinstance(connections, GaugeMetricFamily)
        for state, attr in _STATES:
            connections.add_metric([*labels, state], float(getattr(stats, attr)))
        _gauge(families["max"]).add_metric(labels, float(stats.max_size))
        _gauge(families["min"]).add_metric(labels, float(stats.min_size))
        _gauge(families["pending"]).add_metric(labels, float(stats.waiting))
        _gauge(families["recommended"]).add_metric(labels, float(stats.sizing_hint))
        closed = _counter(families["closed"])
        for reason, count in sorted(stats.closed.items()):
            closed.add_metric([*labels, reason], float(count))
        for key, attr, _ in _COUNTERS:
            _counter(families[key]).add_metric(labels, float(getattr(stats, attr)))
        for key, attr, _ in _HISTOGRAMS:
            summary: Summary = getattr(stats, attr)
            histogram = families[key]
            assert isinstance(histogram, HistogramMetricFamily)
            histogram.add_metric(labels, self._buckets(summary), summary.sum)
        for raw_key, value in sorted(stats.extra.items()):
            self._add_extra(extras, raw_key, value, labels, labels[1])

    def _buckets(self, summary: Summary) -> list[tuple[str, float]]:
        if not summary.buckets:
            return [("+Inf", float(summary.count))]
        # The +Inf bucket (and so ``_count``) is the buckets' own total, not ``summary.count``:
        # a scrape from another thread may read the two a few observations apart, and the
        # histogram must stay monotonic.
        chosen: list[tuple[str, float]] = []
        last = len(summary.buckets) - 1
        for index, (bound, cumulative) in enumerate(summary.buckets):
            if index == last or math.isinf(bound):
                chosen.append(("+Inf", float(summary.buckets[-1][1])))
                break
            if index % self._stride == 0:
                chosen.append((repr(float(bound)), float(cumulative)))
        return chosen

    def _add_extra(
        self,
        extras: dict[str, Metric],
        raw_key: str,
        value: float,
        labels: list[str],
        backend: str,
    ) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        key = _NAME_OK.sub("_", str(raw_key)).strip("_").lower()
        if not key:
            return
        if key.endswith("_total"):
            key = key[: -len("_total")]
        prefix = _NAME_OK.sub("_", backend).lower()
        if not key.startswith(prefix + "_"):
            key = f"{prefix}_{key}"
        extra_label: tuple[str, str] | None = None
        if m := _RESPONSES.match(key):
            key, extra_label = f"{m['stem']}responses", ("status_class", m["cls"])
        elif m := _MESSAGES.match(key):
            key, extra_label = f"{m['stem']}messages", ("direction", m["dir"])
        elif m := _BYTES.match(key):
            key = f"{m['stem']}{m['dir']}_bytes"
        name = self._name(key)
        family = extras.get(name)
        if family is None:
            family = CounterMetricFamily(
                name,
                f"Backend counter from the pool's stats ({raw_key!r}).",
                labels=(*_LABELS, extra_label[0]) if extra_label else _LABELS,
            )
            extras[name] = family
        assert isinstance(family, CounterMetricFamily)
        family.add_metric([*labels, extra_label[1]] if extra_label else labels, float(value))


_RESPONSES = re.compile(r"^(?P<stem>.*_)responses_(?P<cls>[1-5]xx|other)$")
_MESSAGES = re.compile(r"^(?P<stem>.*_)messages_(?P<dir>sent|received)$")
_BYTES = re.compile(r"^(?P<stem>.*_)bytes_(?P<dir>sent|received)$")


def _gauge(metric: Metric) -> GaugeMetricFamily:
    assert isinstance(metric, GaugeMetricFamily)
    return metric


def _counter(metric: Metric) -> CounterMetricFamily:
    assert isinstance(metric, CounterMetricFamily)
    return metric


def register(
    pools: Any | Mapping[str, Any],
    registry: CollectorRegistry | None = None,
    **options: Any,
) -> PoolCollector:
    """Create a :class:`PoolCollector` for ``pools`` and register it.

    Args:
        pools: see :class:`PoolCollector`.
        registry: the registry (default: ``prometheus_client.REGISTRY``).
        **options: passed to :class:`PoolCollector`.

    Returns:
        The collector (``registry.unregister(collector)`` removes it).
    """
    collector = PoolCollector(pools, **options)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector
