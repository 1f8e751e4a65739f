"""A Prometheus histogram that takes a whole batch of observations at once.

``prometheus_client``'s ``Histogram.observe`` costs about 2 µs per value (a lock, a sum
update, a bucket search); the delivery lane observes one end-to-end latency per delivered
event, so at 100 events per request that was the largest single cost of accounting for a
request. Here a request's latencies are bucketed with ``bisect`` in one pass and added as one
update per touched bucket: about 0.3 µs per value. The exported series are the standard
histogram's (``_bucket{le}``, ``_count``, ``_sum``), so dashboards and recording rules are
unchanged.

Updates and scrapes run on the event loop thread; the collector copies counts under a lock
so a scrape from another thread (a metrics server in a thread) reads a consistent snapshot.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# The exposition format's spelling of a bucket bound ("0.05", "+Inf"); untyped upstream.
_go_float = cast(Callable[[float], str], floatToGoString)


class BatchHistogram(Collector):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        *,
        registry: CollectorRegistry,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = bounds
        self._les = [_go_float(b) for b in bounds]
        # Per label values: [count per bucket (not cumulative)..., sum] as one list.
        self._series: dict[tuple[str, ...], list[float]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def _row(self, labels: tuple[str, ...]) -> list[float]:
        row = self._series.get(labels)
        if row is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}")
            row = self._series[labels] = [0.0] * (len(self.bounds) + 1)
        return row

    def touch(self, *labels: str) -> None:
        """Export the zero-valued series for these labels (dashboards show 0, not nothing)."""
        with self._lock:
            self._row(labels)

    def observe_many(self, labels: tuple[str, ...], values: Iterable[float | None]) -> int:
        """Observe every value that is not None; returns how many were observed."""
        bounds = self.bounds
        index = bisect.bisect_left
        counts: dict[int, int] = {}
        total = 0.0
        observed = 0
        for value in values:
            if value is None:
                continue
            slot = index(bounds, value)  # first bound >= value: Prometheus' le semantics
            counts[slot] = counts.get(slot, 0) + 1
            total += value
            observed += 1
        if observed:
            with self._lock:
                row = self._row(labels)
                for slot, count in counts.items():
                    row[slot] += count
                row[-1] += total
        return observed

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(labels, list(row)) for labels, row in self._series.items()]
        for labels, row in snapshot:
            cumulative = 0.0
            buckets = []
            for le, count in zip(self._les, row[:-1], strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(list(labels), buckets, row[-1])
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
