"""Metrics of warehouse destinations (one container per registry, labelled by destination).

``rows_loaded_total{destination,table}`` counts rows inserted or updated per table
(``<schema>.<table>``); a replayed batch adds none. The ``table`` label is bounded: past
:data:`MAX_TABLES` tables per destination, further ones are counted as ``_other`` (a
workspace sending unbounded event names gets one table per name, which Segment too advises
against). ``last_load_timestamp_seconds`` is the freshness an alert watches.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MAX_TABLES = 500
LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

_containers: weakref.WeakKeyDictionary[CollectorRegistry, WarehouseMetrics] = (
    weakref.WeakKeyDictionary()
)


class WarehouseMetrics:
    """Hooks a warehouse calls once per load."""

    @classmethod
    def on(cls, registry: CollectorRegistry) -> WarehouseMetrics:
        """The container of ``registry`` (several warehouse destinations share one)."""
        found = _containers.get(registry)
        if found is None:
            found = _containers[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "router_warehouse_rows_loaded_total",
            "Rows inserted or updated, per table (<schema>.<table>)",
            ["destination", "table"],
            registry=registry,
        )
        self.seconds = Histogram(
            "router_warehouse_load_seconds",
            "Duration of one load (a batch, every transaction it took)",
            ["destination"],
            buckets=LOAD_BUCKETS,
            registry=registry,
        )
        self.last_load = Gauge(
            "router_warehouse_last_load_timestamp_seconds",
            "UNIX time of the last successful load",
            ["destination"],
            registry=registry,
        )
        self.loads = Counter(
            "router_warehouse_loads_total",
            "Loads by result: loaded, retry (the warehouse failed), failed (dead-lettered)",
            ["destination", "result"],
            registry=registry,
        )
        self.discarded = Counter(
            "router_warehouse_values_discarded_total",
            "Values that could not be cast to their column's type (kept in <schema>.discards)",
            ["destination"],
            registry=registry,
        )
        self._tables: dict[str, set[str]] = {}

    def _table(self, destination: str, table: str) -> str:
        seen = self._tables.setdefault(destination, set())
        if table in seen:
            return table
        if len(seen) >= MAX_TABLES:
            return "_other"
        seen.add(table)
        return table

    def on_loaded(
        self,
        destination: str,
        rows: Mapping[str, int],
        seconds: float,
        now: float,
        discarded: int = 0,
    ) -> None:
        for table, count in rows.items():
            if count:
                self.rows.labels(destination, self._table(destination, table)).inc(count)
        self.seconds.labels(destination).observe(seconds)
        self.last_load.labels(destination).set(now)
        self.loads.labels(destination, "loaded").inc()
        if discarded:
            self.discarded.labels(destination).inc(discarded)

    def on_failed(self, destination: str, retriable: bool) -> None:
        self.loads.labels(destination, "retry" if retriable else "failed").inc()

    def register_destination(self, destination: str) -> None:
        """Zero-valued series up front, so dashboards show 0 rather than nothing."""
        self.seconds.labels(destination)
        self.discarded.labels(destination)
        for result in ("loaded", "retry", "failed"):
            self.loads.labels(destination, result)
