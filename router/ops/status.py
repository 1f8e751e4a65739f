"""Reading ``delivery.status`` records, and latency quantiles the way Prometheus computes them.

A status record is one partner request's outcome for some events (format ``v: 2``)::

    key = destination id; headers ``destination``, ``outcome``; value = JSON
    {"v": 2, "destination": "hook", "destinationType": "webhook",
     "outcome": "delivered" | "retry" | "dlq",
     "reason": null | "http_503" | "retries_exhausted" | "timeout" | ...,
     "status": 200 | null,             # the partner's HTTP status when there was an answer
     "duration": 0.012 | null,         # seconds the request took
     "at": "2026-11-23T10:00:00.542Z", # when the outcome was decided
     "dueAt": null | "...",            # retry: when these events are tried again
     "count": 3,
     "messageIds": ["m1", "m2", null], # null: a record that was not a JSON event
     "attempts": [1, 1, 2],            # 1-based attempt number of each event
     "latencyMs": [412, 398, 1501] | null,  # delivered: receivedAt -> acceptance, per event
     "error": null | {"reason", "message", "retriable", "request", "response", "event"}}

A refused part of a request gives one record per (outcome, reason) group. Records written by
agents before format 2 (``v: 1``, one per event: ``messageId``, ``attempt``, ``latency`` in
seconds) are read as a request of one event, so a console folds topics holding both.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from router.observability.delivery import LATENCY_BUCKETS
from router.spec import iso_seconds

OUTCOMES: Final = ("delivered", "retry", "dlq")
#: Upper bounds of the latency histogram: the agents' Prometheus buckets, so the console's
#: P95 and the dashboard's ``histogram_quantile`` agree to the bucket.
BUCKETS: Final = LATENCY_BUCKETS
HISTOGRAM_SIZE: Final = len(LATENCY_BUCKETS) + 1  # + the +Inf bucket


@dataclass(frozen=True, slots=True)
class EventOutcome:
    message_id: str | None
    attempt: int
    latency: float | None  # seconds, delivered only


@dataclass(frozen=True, slots=True)
class StatusRecord:
    destination: str
    outcome: str
    reason: str | None
    status: int | None
    duration: float | None
    at: float  # UNIX seconds
    due_at: float | None
    events: tuple[EventOutcome, ...]
    error: dict[str, Any] | None


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def parse_status(value: bytes | None) -> StatusRecord | None:
    """The record, or None when it is not a status record this console can read."""
    if not value:
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    destination = body.get("destination")
    outcome = body.get("outcome")
    at = iso_seconds(body.get("at"))
    if not isinstance(destination, str) or outcome not in OUTCOMES or at is None:
        return None
    version = body.get("v")
    events: tuple[EventOutcome, ...]
    if version == 1:
        message_id = body.get("messageId")
        latency = _number(body.get("latency"))
        events = (
            EventOutcome(
                message_id if isinstance(message_id, str) else None,
                _int(body.get("attempt"), 1),
                latency,
            ),
        )
    else:
        ids = body.get("messageIds")
        if not isinstance(ids, list):
            return None
        attempts = body.get("attempts")
        latencies = body.get("latencyMs")
        attempt_list: list[Any] = attempts if isinstance(attempts, list) else []
        latency_list: list[Any] = latencies if isinstance(latencies, list) else []
        built = []
        for index, message_id in enumerate(ids):
            attempt = _int(attempt_list[index], 1) if index < len(attempt_list) else 1
            millis = _number(latency_list[index]) if index < len(latency_list) else None
            built.append(
                EventOutcome(
                    message_id if isinstance(message_id, str) else None,
                    attempt,
                    None if millis is None else millis / 1000,
                )
            )
        events = tuple(built)
    reason = body.get("reason")
    error = body.get("error")
    return StatusRecord(
        destination=destination,
        outcome=outcome,
        reason=reason if isinstance(reason, str) else None,
        status=_int(body.get("status"), 0) or None,
        duration=_number(body.get("duration")),
        at=at,
        due_at=iso_seconds(body.get("dueAt")),
        events=events,
        error=error if isinstance(error, dict) else None,
    )


def bucket_of(seconds: float) -> int:
    """Index of the histogram bucket (Prometheus ``le``) that counts ``seconds``."""
    return bisect_left(BUCKETS, seconds)


def quantile(q: float, counts: Sequence[int]) -> float | None:
    """``histogram_quantile(q, ...)`` over per-bucket counts (not cumulative), as Prometheus
    computes it: linear interpolation inside the bucket the rank falls in, 0 as the lower
    bound of the first bucket, and the highest finite bound when the rank falls in +Inf.
    None when nothing was observed."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0
    for index, count in enumerate(counts):
        previous = cumulative
        cumulative += count
        if cumulative >= rank and count > 0:
            if index >= len(BUCKETS):
                return BUCKETS[-1]
            lower = BUCKETS[index - 1] if index > 0 else 0.0
            upper = BUCKETS[index]
            return lower + (upper - lower) * (rank - previous) / count
    return BUCKETS[-1]
