"""What flows through a delivery lane, and the three record formats it writes.

Input, ``dest.<id>`` (written by the processor): key = the user's partition key, value =
orjson of the final Segment event for this destination, header ``source`` = source id.

Retry topic ``dest.<id>.retry``: the input record unchanged (same key, same value bytes, same
headers) plus four headers, ASCII decimal, replaced on every retry:

- ``router-attempt``: failed attempts so far (1 after the first failure);
- ``router-first-failure-ms``: UNIX ms of the first failure (the retry window starts here);
- ``router-due-ms``: UNIX ms before which the record must not be tried again;
- ``router-reason``: reason of the last failure (``http_503``, ``timeout`` ...).

Dead letters ``dest.<id>.dlq``: key = input key; headers ``source``, ``router-reason``,
``router-attempt``; value = orjson of::

    {"v": 1, "destination": "hook", "destinationType": "webhook",
     "messageId": "m1", "sourceId": "web",
     "reason": "http_400" | "retries_exhausted" | "undecodable" | "encode" | ...,
     "retriesExhausted": false, "attempts": 1,
     "firstFailureAt": "2026-11-23T10:00:01.000Z", "failedAt": "2026-11-23T10:00:01.000Z",
     "input": {"topic": "dest.hook", "partition": 0, "offset": 42},
     "event": {...},        # 1. the event as the router had it (null if undecodable)
     "raw": null,           #    the value as latin-1 text when it was not a JSON object
     "request": {...},      # 2. the request sent: method, url, headers, body (cut), bodyBytes,
                            #    bodyTruncated; credentials masked "***"; null if none was sent
     "response": {...},     # 3. the answer: status, headers, body (cut), bodyTruncated,
                            #    elapsed; null on timeout / connection error / no request
     "error": {"reason": "http_400", "message": "HTTP 400 from host:port", "retriable": false}}

Status topic ``delivery.status`` (for the Event Delivery view; one record per event and
attempt outcome): key = messageId (so one event's outcomes stay in order), headers
``destination`` and ``outcome``, value = orjson of::

    {"v": 1, "destination": "hook", "destinationType": "webhook", "sourceId": "web",
     "messageId": "m1", "type": "track", "event": "Order Completed",
     "outcome": "delivered" | "retry" | "dlq",
     "attempt": 1,              # 1-based number of the attempt that produced this outcome
     "reason": null | "http_503",
     "status": 200 | null,      # HTTP status when there was an answer
     "latency": 0.42 | null,    # delivered only: seconds from receivedAt to acceptance
     "duration": 0.012 | null,  # seconds the request took
     "at": "2026-11-23T10:00:00.542Z",
     "dueAt": null | "...",     # retry only
     "error": null | {"reason", "message", "retriable", "request", "response"}}

``error.request``/``error.response`` in status records are cut to 1 KiB bodies. Folding is
idempotent on (destination, messageId, attempt, outcome); after a crash a record may repeat.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson

from destinations.base import Event
from router.broker.clients import OutRecord
from router.broker.partitioning import key_partition

HEADER_SOURCE: Final = "source"
HEADER_ATTEMPT: Final = "router-attempt"
HEADER_FIRST_FAILURE: Final = "router-first-failure-ms"
HEADER_DUE: Final = "router-due-ms"
HEADER_REASON: Final = "router-reason"
_RETRY_HEADERS: Final = frozenset({HEADER_ATTEMPT, HEADER_FIRST_FAILURE, HEADER_DUE, HEADER_REASON})
#: Past this size a dead letter keeps the input as truncated text, not as parsed JSON,
#: so the dead letter itself always fits in a Kafka record.
MAX_DEAD_LETTER_INPUT = 512 * 1024

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class RetryState:
    """Where an event is in its retry schedule (from the retry topic's headers)."""

    attempt: int
    first_failure: float
    due: float
    reason: str

    @classmethod
    def from_headers(cls, headers: Headers) -> RetryState | None:
        """None when the record carries no (or unreadable) retry headers: treat it as due."""
        found = {k: v for k, v in headers if k in _RETRY_HEADERS}
        try:
            return cls(
                attempt=int(found[HEADER_ATTEMPT]),
                first_failure=int(found[HEADER_FIRST_FAILURE]) / 1000,
                due=int(found[HEADER_DUE]) / 1000,
                reason=found.get(HEADER_REASON, b"").decode("ascii", "replace"),
            )
        except (KeyError, ValueError):
            return None

    def headers(self) -> Headers:
        return (
            (HEADER_ATTEMPT, str(self.attempt).encode()),
            (HEADER_FIRST_FAILURE, str(round(self.first_failure * 1000)).encode()),
            (HEADER_DUE, str(round(self.due * 1000)).encode()),
            (HEADER_REASON, self.reason.encode("ascii", "replace")),
        )


@dataclass(slots=True)
class InFlight:
    """One record taken from Kafka and not yet accounted for (never changed once built;
    not ``frozen`` because a frozen dataclass costs twice as much to build, once per event)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes
    headers: Headers
    event: Event | None
    origin: str  # "fresh" (destination topic) or "retry"
    attempt: int  # failed attempts before this one
    first_failure: float | None
    epoch: int  # assignment generation of the partition when taken

    @property
    def message_id(self) -> str | None:
        value = self.event.get("messageId") if self.event is not None else None
        return value if isinstance(value, str) and value else None

    @property
    def source_id(self) -> str | None:
        for key, value in self.headers:
            if key == HEADER_SOURCE:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed, with the redacted request/response for people to read."""

    reason: str
    message: str
    retriable: bool
    retry_after: float | None = None
    status: int | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    #: ``{"request": ..., "response": ...}`` cut shorter, for status records.
    summary: dict[str, Any] | None = None

    def error(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, "retriable": self.retriable}


@dataclass(slots=True)
class Outcome:
    """The end of one attempt for one event: delivered, retry (with due time) or dlq.

    Never changed once built (not ``frozen`` for the same reason as :class:`InFlight`).
    """

    item: InFlight
    kind: str  # "delivered" | "retry" | "dlq"
    at: float
    attempt: int
    reason: str | None = None
    latency: float | None = None
    duration: float | None = None
    status: int | None = None
    failure: Failure | None = None
    first_failure: float | None = None
    due: float | None = None
    exhausted: bool = False


#: Formatted date and time per whole second (a status record may carry two: ``at`` and
#: ``dueAt``); cleared when it holds more than a few.
_seconds: dict[int, str] = {}


def iso(seconds: float) -> str:
    """``seconds`` (UNIX time) as Segment writes timestamps: ``2026-11-23T10:00:00.000Z``.

    The same text as ``format_timestamp(datetime.fromtimestamp(seconds, UTC))`` (same
    rounding), a few times faster: formatting the date and time is done once per second.
    Status records need one per event.
    """
    whole = math.floor(seconds)
    micros = round((seconds - whole) * 1e6)
    if micros >= 1_000_000:
        whole += 1
        micros -= 1_000_000
    prefix = _seconds.get(whole)
    if prefix is None:
        if len(_seconds) >= 64:
            _seconds.clear()
        prefix = _seconds[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{prefix}.{micros // 1000:03d}Z"


def retry_record(topic: str, outcome: Outcome, *, partitions: int | None = None) -> OutRecord:
    """``partitions``: the retry topic's count, to partition by key here (see status_record)."""
    item = outcome.item
    if outcome.due is None or outcome.first_failure is None:
        raise ValueError("a retry outcome needs a due time and a first-failure time")
    state = RetryState(
        attempt=outcome.attempt,
        first_failure=outcome.first_failure,
        due=outcome.due,
        reason=outcome.reason or "",
    )
    kept = tuple((k, v) for k, v in item.headers if k not in _RETRY_HEADERS)
    key = item.key
    partition = None if partitions is None or key is None else key_partition(key, partitions)
    return OutRecord(topic, key, item.raw, kept + state.headers(), partition)


def dead_letter_record(topic: str, outcome: Outcome, *, destination: str, kind: str) -> OutRecord:
    item = outcome.item
    failure = outcome.failure
    event: Event | None = item.event
    raw: str | None = None
    if event is None or len(item.raw) > MAX_DEAD_LETTER_INPUT:
        event = None
        raw = item.raw[:MAX_DEAD_LETTER_INPUT].decode("latin-1")  # bytes 1:1, never fails
    body = {
        "v": 1,
        "destination": destination,
        "destinationType": kind,
        "messageId": item.message_id,
        "sourceId": item.source_id,
        "reason": outcome.reason,
        "retriesExhausted": outcome.exhausted,
        "attempts": outcome.attempt,
        "firstFailureAt": iso(outcome.first_failure or outcome.at),
        "failedAt": iso(outcome.at),
        "input": {"topic": item.topic, "partition": item.partition, "offset": item.offset},
        "event": event,
        "raw": raw,
        "request": failure.request if failure else None,
        "response": failure.response if failure else None,
        "error": failure.error() if failure else None,
    }
    headers: list[tuple[str, bytes]] = [
        (HEADER_REASON, (outcome.reason or "").encode()),
        (HEADER_ATTEMPT, str(outcome.attempt).encode()),
    ]
    source = item.source_id
    if source is not None:
        headers.insert(0, (HEADER_SOURCE, source.encode()))
    return OutRecord(topic, item.key, orjson.dumps(body), tuple(headers))


def status_record(
    topic: str,
    outcome: Outcome,
    *,
    destination: str,
    kind: str,
    error_detail: dict[str, Any] | None = None,
    partitions: int | None = None,
    error_json: bytes | None = None,
) -> OutRecord:
    """``error_detail``: the failure's request/response, already cut to the status bound.

    With ``partitions`` (the status topic's count) the record carries its partition, the
    one Kafka's default partitioner gives its key, so the producer need not hash it again.
    ``error_json``: :func:`status_error_json` of the failure, when the caller serialized it
    once for every event of a request (it holds the request, so it is the bulk of the value).
    """
    item = outcome.item
    event = item.event or {}
    name = event.get("event")
    kind_ = event.get("type")
    message_id = item.message_id
    failure = outcome.failure
    error: dict[str, Any] | None = None
    if failure is not None and error_json is None:
        error = failure.error()
        error.update(error_detail or {"request": None, "response": None})
    body = {
        "v": 1,
        "destination": destination,
        "destinationType": kind,
        "sourceId": item.source_id,
        "messageId": message_id,
        "type": kind_ if isinstance(kind_, str) else None,
        "event": name if isinstance(name, str) else None,
        "outcome": outcome.kind,
        "attempt": outcome.attempt,
        "reason": outcome.reason,
        "status": outcome.status,
        "latency": None if outcome.latency is None else round(outcome.latency, 6),
        "duration": None if outcome.duration is None else round(outcome.duration, 6),
        "at": iso(outcome.at),
        "dueAt": iso(outcome.due) if outcome.due is not None else None,
        "error": error,
    }
    key = (message_id or f"{item.topic}:{item.partition}:{item.offset}").encode()
    headers = (("destination", destination.encode()), ("outcome", outcome.kind.encode()))
    partition = None if partitions is None else key_partition(key, partitions)
    value = orjson.dumps(body)
    if failure is not None and error_json is not None:
        # "error" is the last key: splice the pre-serialized object in place of its null.
        value = value[: -len(_NULL_ERROR)] + error_json + b"}"
    return OutRecord(topic, key, value, headers, partition)


_NULL_ERROR: Final = b"null}"


def status_error_json(failure: Failure, error_detail: dict[str, Any] | None) -> bytes:
    """The ``error`` object of a status record for ``failure``, serialized."""
    error = failure.error()
    error.update(error_detail or {"request": None, "response": None})
    return orjson.dumps(error)
