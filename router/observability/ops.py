"""Metrics of the operations console (``router ops``): what it folds and the backlogs it sees.

The console folds ``delivery.status`` and the dead-letter topics, so it is the one place
that knows, across every agent process, how many events wait in each retry topic and how
many dead letters are still live (not redriven). Both are exported per destination for the
dashboard, with the console's own progress.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge


class OpsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.retry_backlog = Gauge(
            "router_ops_retry_backlog_events",
            "Events whose latest outcome is a retry: waiting in dest.<id>.retry",
            ["destination"],
            registry=registry,
        )
        self.dead_letters = Gauge(
            "router_ops_dead_letters",
            "Dead letters not redriven (live) in dest.<id>.dlq",
            ["destination"],
            registry=registry,
        )
        self.fold_lag = Gauge(
            "router_ops_fold_lag_records",
            "Records of delivery.status, the dead-letter topics and events.violations the "
            "console has not folded yet",
            registry=registry,
        )
        self.folded = Counter(
            "router_ops_folded_records_total",
            "Records the console folded, by topic kind (status, dlq, violations)",
            ["kind"],
            registry=registry,
        )
        self.unreadable = Counter(
            "router_ops_unreadable_records_total",
            "Records the console could not read (skipped), by topic kind",
            ["kind"],
            registry=registry,
        )
        self.redriven = Counter(
            "router_ops_redriven_total",
            "Dead letters sent back for delivery",
            ["destination"],
            registry=registry,
        )
        self.last_fold = Gauge(
            "router_ops_last_fold_timestamp_seconds",
            "UNIX time of the console's last fold (or idle poll)",
            registry=registry,
        )

    def register(self, destinations: list[str]) -> None:
        for destination in destinations:
            self.retry_backlog.labels(destination).set(0)
            self.dead_letters.labels(destination).set(0)
            self.redriven.labels(destination)

    def on_backlogs(self, retry: Mapping[str, int], dead: Mapping[str, int]) -> None:
        for destination, count in retry.items():
            self.retry_backlog.labels(destination).set(count)
        for destination, count in dead.items():
            self.dead_letters.labels(destination).set(count)

    def on_fold(self, kind: str, records: int, unreadable: int) -> None:
        if records:
            self.folded.labels(kind).inc(records)
        if unreadable:
            self.unreadable.labels(kind).inc(unreadable)

    def on_progress(self, now: float, lag: int) -> None:
        self.last_fold.set(now)
        self.fold_lag.set(lag)

    def on_redrive(self, destination: str, count: int) -> None:
        if count:
            self.redriven.labels(destination).inc(count)
