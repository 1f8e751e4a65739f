"""Metrics of the stream processor."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ProcessorMetrics:
    """Hooks the processor calls once per batch (never per event, to keep the hot path cheap)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "router_processor_received_total", "Records read from events.raw", registry=registry
        )
        self.rekeyed = Counter(
            "router_processor_rekeyed_total",
            "Records of events.raw outside their user's partition (null or other key, or "
            "another partitioner than murmur2), moved to events.rekeyed before dedup",
            ["source"],
            registry=registry,
        )
        self.rejected = Counter(
            "router_processor_rejected_total",
            "Records written to events.dlq, by reason",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "router_processor_duplicates_total",
            "Events dropped as duplicates of a messageId seen in the dedup window",
            ["source"],
            registry=registry,
        )
        self.dropped = Counter(
            "router_processor_dropped_total",
            "Events not sent to a destination, by stage that decided it",
            ["destination", "reason"],
            registry=registry,
        )
        self.routed = Counter(
            "router_processor_routed_total",
            "Events written to a destination topic",
            ["destination"],
            registry=registry,
        )
        self.violations = Counter(
            "router_processor_violations_total",
            "Tracking-plan violations found, by source and type",
            ["source", "type"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "router_processor_batch_seconds",
            "Time from poll to commit of one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.dedup_store_reset = Counter(
            "router_processor_dedup_store_empty_total",
            "Input partitions whose dedup store started empty (new partition or lost volume)",
            registry=registry,
        )
        self.dedup_restored = Counter(
            "router_processor_dedup_restored_total",
            "Dedup keys read back from dedup.changelog into a store on partition assignment",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "router_processor_consumer_lag_records",
            "Records of events.raw and events.rekeyed in this process's partitions not yet taken",
            registry=registry,
        )
        self.last_progress = Gauge(
            "router_processor_last_progress_timestamp_seconds",
            "UNIX time of the last committed batch or idle poll",
            registry=registry,
        )

    def on_batch(
        self,
        *,
        received: int,
        rejected: dict[str, int],
        duplicates: dict[str, int],
        dropped: dict[tuple[str, str], int],
        routed: dict[str, int],
        seconds: float,
        rekeyed: dict[str, int] | None = None,
    ) -> None:
        self.received.inc(received)
        for source, count in (rekeyed or {}).items():
            self.rekeyed.labels(source).inc(count)
        for reason, count in rejected.items():
            self.rejected.labels(reason).inc(count)
        for source, count in duplicates.items():
            self.duplicates.labels(source).inc(count)
        for (destination, reason), count in dropped.items():
            self.dropped.labels(destination, reason).inc(count)
        for destination, count in routed.items():
            self.routed.labels(destination).inc(count)
        self.batch_seconds.observe(seconds)

    def on_violation(self, source: str, kind: str, count: int = 1) -> None:
        self.violations.labels(source, kind).inc(count)

    def on_progress(self, now: float) -> None:
        self.last_progress.set(now)

    def on_lag(self, records: int) -> None:
        self.consumer_lag.set(records)

    def on_empty_store(self) -> None:
        self.dedup_store_reset.inc()

    def on_restored(self, keys: int) -> None:
        self.dedup_restored.inc(keys)
