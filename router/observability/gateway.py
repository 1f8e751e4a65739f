"""Metrics of the HTTP gateway."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Include the 20 ms single-event P99 target so the SLO can be read straight off the buckets.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Hooks the gateway calls once per request and once per Kafka write.

    ``path`` is the route template (``/v1/track``, ``/v1/projects/{writeKey}/settings``) or
    ``other`` for unmatched paths, so labels stay bounded whatever clients send.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "router_gateway_requests_total",
            "HTTP requests answered, by route and status",
            ["path", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "router_gateway_request_duration_seconds",
            "Time from receiving a request to answering it (including the Kafka ack)",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.accepted = Counter(
            "router_gateway_events_accepted_total",
            "Events acknowledged by Kafka on events.raw, by source",
            ["source"],
            registry=registry,
        )
        self.rejected = Counter(
            "router_gateway_events_rejected_total",
            "Events not accepted, by reason code (a request whose events cannot be counted "
            "counts as one)",
            ["reason"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "router_gateway_events_dead_lettered_total",
            "Invalid items of partly valid batches written to events.dlq, by reason",
            ["reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "router_gateway_requests_in_flight",
            "Requests being handled right now",
            registry=registry,
        )
        self.produce_records = Histogram(
            "router_gateway_produce_batch_records",
            "Records per coalesced Kafka write",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.produce_seconds = Histogram(
            "router_gateway_produce_seconds",
            "Time from handing a coalesced write to Kafka to every ack",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.produce_failures = Counter(
            "router_gateway_produce_failures_total",
            "Coalesced Kafka writes that failed or timed out (their requests got 503)",
            registry=registry,
        )

    def on_request(self, path: str, status: int, seconds: float) -> None:
        self.requests.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def on_accepted(self, source: str, count: int) -> None:
        if count:
            self.accepted.labels(source).inc(count)

    def on_rejected(self, reason: str, count: int = 1) -> None:
        if count:
            self.rejected.labels(reason).inc(count)

    def on_dead_lettered(self, reasons: Mapping[str, int]) -> None:
        for reason, count in reasons.items():
            self.dead_lettered.labels(reason).inc(count)
            self.rejected.labels(reason).inc(count)

    def on_produce(self, records: int, seconds: float, ok: bool) -> None:
        self.produce_records.observe(records)
        self.produce_seconds.observe(seconds)
        if not ok:
            self.produce_failures.inc()
