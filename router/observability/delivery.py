"""Metrics of the delivery agents (one container per agent, labelled by destination).

Accounting, per destination: every record taken from ``dest.<id>`` or ``dest.<id>.retry``
is counted once in ``received_total{origin}`` and ends in exactly one of
``delivered_total``, ``retries_total{reason}`` (written to the retry topic, so it will be
received again), ``failed_total{reason}`` (not delivered: written to the dead-letter
topic, also counted in ``dlq_total``) or ``filtered_total{reason}`` (left out on purpose by
the destination's settings). So ``received = delivered + retries + failed + filtered`` once
nothing is in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from router.observability.histogram import BatchHistogram

M = TypeVar("M", Counter, Gauge, Histogram)

# End to end from receivedAt: seconds for a healthy partner (SLO bound 5 s), up to the
# four-hour retry window for events that waited in the retry topic.
LATENCY_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
)  # fmt: skip
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Children(Generic[M]):
    """``metric.labels(...)`` with the children kept: the hooks run once per request (several
    thousand times a second) and ``labels()`` costs more than the update itself. Labels are
    bounded (destination, reason, origin, result), so is this cache."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class DeliveryMetrics:
    """Hooks the delivery lanes call, once per request or poll, never per byte."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "router_delivery_received_total",
            "Records taken for delivery, from the destination topic or its retry topic",
            ["destination", "origin"],
            registry=registry,
        )
        self.delivered = Counter(
            "router_delivery_delivered_total",
            "Events the destination accepted",
            ["destination"],
            registry=registry,
        )
        self.failed = Counter(
            "router_delivery_failed_total",
            "Events not delivered (written to the dead-letter topic), by reason",
            ["destination", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            "router_delivery_retries_total",
            "Events written to the retry topic after a retryable failure, by reason",
            ["destination", "reason"],
            registry=registry,
        )
        self.filtered = Counter(
            "router_delivery_filtered_total",
            "Events the destination's settings leave out on purpose (not chosen), by reason",
            ["destination", "reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "router_delivery_dlq_total",
            "Records written to the destination's dead-letter topic",
            ["destination"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "router_delivery_in_flight_events",
            "Events taken from Kafka whose outcome is not yet written",
            ["destination"],
            registry=registry,
        )
        self.latency = BatchHistogram(
            "router_delivery_latency_seconds",
            "End to end, from the event's receivedAt to the destination accepting it",
            ["destination"],
            LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "router_delivery_requests_total",
            "Requests made to the destination, by result (2xx, 4xx, 5xx, timeout, connection)",
            ["destination", "result"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "router_delivery_request_seconds",
            "Duration of one request to the destination",
            ["destination"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "router_delivery_consumer_lag_records",
            "Records on the destination topic (not its retry topic) not yet taken",
            ["destination"],
            registry=registry,
        )
        self.last_progress = Gauge(
            "router_delivery_last_progress_timestamp_seconds",
            "UNIX time of the last event outcome or idle poll",
            ["destination"],
            registry=registry,
        )

        self._received = _Children(self.received)
        self._delivered = _Children(self.delivered)
        self._failed = _Children(self.failed)
        self._retries = _Children(self.retries)
        self._dead_letters = _Children(self.dead_letters)
        self._filtered = _Children(self.filtered)
        self._in_flight = _Children(self.in_flight)
        self._requests = _Children(self.requests)
        self._request_seconds = _Children(self.request_seconds)
        self._lag = _Children(self.lag)
        self._last_progress = _Children(self.last_progress)

    def on_received(self, destination: str, origin: str, count: int) -> None:
        if count:
            self._received(destination, origin).inc(count)

    def on_delivered(self, destination: str, latencies: Sequence[float | None]) -> None:
        """One call per accepted request; a latency of None (no receivedAt) is not observed."""
        if latencies:
            self.latency.observe_many((destination,), latencies)
            self._delivered(destination).inc(len(latencies))

    def on_retry(self, destination: str, reason: str, count: int) -> None:
        if count:
            self._retries(destination, reason).inc(count)

    def on_failed(self, destination: str, reason: str, count: int) -> None:
        """Events written to the dead-letter topic (acknowledged by Kafka)."""
        if count:
            self._failed(destination, reason).inc(count)
            self._dead_letters(destination).inc(count)

    def on_filtered(self, destination: str, reason: str, count: int) -> None:
        if count:
            self._filtered(destination, reason).inc(count)

    def on_request(self, destination: str, result: str, seconds: float | None) -> None:
        self._requests(destination, result).inc()
        if seconds is not None:
            self._request_seconds(destination).observe(seconds)

    def watch_lane(
        self, destination: str, in_flight: Callable[[], float], last_progress: Callable[[], float]
    ) -> None:
        """Read the in-flight count and the last progress time when scraped: both change on
        every request, and setting a gauge that often cost more than the rest of the
        accounting."""
        self.in_flight.labels(destination).set_function(in_flight)
        self.last_progress.labels(destination).set_function(last_progress)

    def on_in_flight(self, destination: str, events: int) -> None:
        self._in_flight(destination).set(events)

    def on_lag(self, destination: str, records: int) -> None:
        self._lag(destination).set(records)

    def on_progress(self, destination: str, now: float) -> None:
        self._last_progress(destination).set(now)

    def register_destination(self, destination: str) -> None:
        """Create the zero-valued series up front, so dashboards show 0 rather than nothing."""
        self.delivered.labels(destination)
        self.dead_letters.labels(destination)
        self.in_flight.labels(destination).set(0)
        self.latency.touch(destination)
        for origin in ("fresh", "retry"):
            self.received.labels(destination, origin)
