"""What flows through a delivery lane, and the three record formats it writes.

Input, ``dest.<id>`` (written by the processor): key = the user's partition key, value =
orjson of the final Segment event for this destination, header ``source`` = source id.

Retry topic ``dest.<id>.retry``: the input record unchanged (same key, same value bytes, same
headers) plus four headers, ASCII decimal, replaced on every retry:

- ``router-attempt``: failed attempts so far (1 after the first failure);
- ``router-first-failure-ms``: UNIX ms of the first failure (the retry window starts here);
- ``router-due-ms``: UNIX ms before which the record must not be tried again;
- ``router-reason``: reason of the last failure (``http_503``, ``timeout`` ...).

Dead letters ``dest.<id>.dlq``, one per event: key = input key; headers ``source``,
``router-reason``, ``router-attempt``; value = orjson of::

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

Status topic ``delivery.status`` (for the Event Delivery view): one record per partner request
and outcome, not per event. A request whose events all share an outcome (the usual case) is one
record; when the partner refused some events of a request, the request yields one record per
(outcome, reason) group. Key = destination id, headers ``destination`` and ``outcome``, value =
orjson of::

    {"v": 2, "destination": "hook", "destinationType": "webhook",
     "outcome": "delivered" | "retry" | "dlq" | "filtered",  # filtered: left out on purpose
                                    # by the destination's settings (reason says why)
     "reason": null | "http_503" | "retries_exhausted" | ...,
     "status": 200 | null,          # the partner's status when there was an answer
     "duration": 0.012 | null,      # seconds the request took
     "at": "2026-11-23T10:00:00.542Z",   # when the outcome was decided
     "dueAt": null | "...",         # retry: the earliest due time of these events
     "count": 3,
     "messageIds": ["m1", "m2", null],   # null: a record that was not a JSON event
     "attempts": [1, 1, 2],         # 1-based number of the attempt, per event
     "latencyMs": [412, 398, 1501] | null,  # delivered: ms from each event's receivedAt to
                                    # acceptance, rounded up (null where receivedAt was missing)
     "error": null | {"reason", "message", "retriable",
                      "request", "response",   # cut to 1 KiB bodies, credentials masked
                      "event"}}                # the first event of the group, cut to 1 KiB

Folding is idempotent on (destination, messageId, attempt, outcome); after a crash a record may
repeat. Why per request: one record per event cost ~20 µs of Python per event and held
delivery at a fifth of a bare HTTP loop's speed; per request the cost is shared by its events.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import orjson

from router.broker.clients import OutRecord
from router.broker.partitioning import key_partition
from router.spec import Event

HEADER_SOURCE: Final = "source"
HEADER_ATTEMPT: Final = "router-attempt"
HEADER_FIRST_FAILURE: Final = "router-first-failure-ms"
HEADER_DUE: Final = "router-due-ms"
HEADER_REASON: Final = "router-reason"
_RETRY_HEADERS: Final = frozenset({HEADER_ATTEMPT, HEADER_FIRST_FAILURE, HEADER_DUE, HEADER_REASON})
#: Past this size a dead letter keeps the input as truncated text, not as parsed JSON,
#: so the dead letter itself always fits in a Kafka record.
MAX_DEAD_LETTER_INPUT = 512 * 1024
#: Bytes of the sample event in a status record's error.
STATUS_EVENT_LIMIT = 1024

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


class EventHead(msgspec.Struct, gc=False):
    """What the agent reads of every event: decoded without building the rest of it.

    msgspec skips the other fields of the JSON without making Python objects of them. Measured
    on 480-byte bench events: 0.5 us per event, against 2.8-11 us for a whole-event
    ``orjson.loads`` (the high end with the garbage collection those objects trigger while
    thousands are in flight). Delivering to five webhooks end to end, whole-event decoding,
    the collections it set off and freeing the objects were 45% of the agent's CPU. The whole
    event is decoded only for plugins that read it (:attr:`InFlight.event`).

    Values are the JSON's, unchecked (``messageId`` may be a number in a hand-made record).
    """

    messageId: Any = None
    type: Any = None
    userId: Any = None
    receivedAt: Any = None

    @classmethod
    def of(cls, event: Event | None) -> EventHead | None:
        """The head of an already decoded event (tests and tools that build items by hand)."""
        if event is None:
            return None
        get = event.get
        return cls(get("messageId"), get("type"), get("userId"), get("receivedAt"))


_HEAD_DECODER: Final = msgspec.json.Decoder(EventHead)


def decode_head(value: bytes | None) -> EventHead | None:
    """The record's :class:`EventHead`, or None when it is not a JSON object (dead-lettered
    as ``undecodable``)."""
    if not value:
        return None
    try:
        return _HEAD_DECODER.decode(value)
    except msgspec.DecodeError:  # ValidationError (not an object) is one too
        return None


def decode_event(value: bytes | None) -> Event | None:
    """The record's whole event, or None when it is not a JSON object."""
    if not value:
        return None
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None


def head_message_id(head: EventHead | None) -> str | None:
    value = head.messageId if head is not None else None
    return value if type(value) is str and value else None


@dataclass(slots=True)
class InFlight:
    """One record taken from Kafka and not yet accounted for (never changed once built,
    except for :attr:`decoded`, filled on first use; not ``frozen`` because a frozen
    dataclass costs twice as much to build, once per event)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes
    headers: Headers
    #: The fields read for every event; None when the value is not a JSON object.
    head: EventHead | None
    origin: str  # "fresh" (destination topic) or "retry"
    attempt: int  # failed attempts before this one
    first_failure: float | None
    epoch: int  # assignment generation of the partition when taken
    #: The whole event once :attr:`event` was read (or as given by whoever built the item).
    decoded: Event | None = None

    @property
    def event(self) -> Event | None:
        """The whole event, decoded on first use; None when the value is not a JSON object."""
        decoded = self.decoded
        if decoded is None and self.head is not None:
            decoded = self.decoded = decode_event(self.raw)
        return decoded

    @property
    def message_id(self) -> str | None:
        return head_message_id(self.head)

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
class Settled:
    """The end of one attempt for a group of events that share it: one request's events, or
    the part of them the partner answered alike. ``kind`` is "delivered", "retry", "dlq" or
    "filtered" (left out on purpose by the destination's settings).

    Per event, in ``items`` order: ``latencies`` (delivered: seconds from receivedAt, None
    when unknown) and ``dues`` (retry: UNIX time of the next attempt, spread per event).
    Never changed once built.
    """

    kind: str
    items: list[InFlight]
    at: float
    reason: str | None = None
    status: int | None = None
    duration: float | None = None
    failure: Failure | None = None
    latencies: list[float | None] | None = None
    dues: list[float] | None = None
    exhausted: bool = False


#: Formatted date and time per whole second (a status record may carry two: ``at`` and
#: ``dueAt``); cleared when it holds more than a few.
_seconds: dict[int, str] = {}


def iso(seconds: float) -> str:
    """``seconds`` (UNIX time) as Segment writes timestamps: ``2026-11-23T10:00:00.000Z``.

    The same text as ``format_timestamp(datetime.fromtimestamp(seconds, UTC))`` (same
    rounding), a few times faster: formatting the date and time is done once per second.
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


def retry_records(
    topic: str, settled: Settled, *, partitions: int | None = None
) -> list[OutRecord]:
    """One retry record per event of a ``retry`` group (``partitions``: the retry topic's
    count, so the partition is computed here with the producer's own hash)."""
    if settled.dues is None:
        raise ValueError("a retry group needs a due time per event")
    records = []
    for item, due in zip(settled.items, settled.dues, strict=True):
        first = item.first_failure if item.first_failure is not None else settled.at
        state = RetryState(item.attempt + 1, first, due, settled.reason or "")
        kept = tuple((k, v) for k, v in item.headers if k not in _RETRY_HEADERS)
        key = item.key
        partition = None if partitions is None or key is None else key_partition(key, partitions)
        records.append(OutRecord(topic, key, item.raw, kept + state.headers(), partition))
    return records


def dead_letter_records(
    topic: str, settled: Settled, *, destination: str, kind: str
) -> list[OutRecord]:
    """One dead letter per event of a ``dlq`` group (event, request, response, reason)."""
    failure = settled.failure
    common = {
        "v": 1,
        "destination": destination,
        "destinationType": kind,
        "reason": settled.reason,
        "retriesExhausted": settled.exhausted,
        "failedAt": iso(settled.at),
        "request": failure.request if failure else None,
        "response": failure.response if failure else None,
        "error": failure.error() if failure else None,
    }
    reason_header = (HEADER_REASON, (settled.reason or "").encode())
    records = []
    for item in settled.items:
        event: Event | None = item.event
        raw: str | None = None
        if event is None or len(item.raw) > MAX_DEAD_LETTER_INPUT:
            event = None
            raw = item.raw[:MAX_DEAD_LETTER_INPUT].decode("latin-1")  # bytes 1:1, never fails
        body = {
            **common,
            "messageId": item.message_id,
            "sourceId": item.source_id,
            "attempts": item.attempt + 1,
            "firstFailureAt": iso(item.first_failure or settled.at),
            "input": {"topic": item.topic, "partition": item.partition, "offset": item.offset},
            "event": event,
            "raw": raw,
        }
        headers: list[tuple[str, bytes]] = [
            reason_header,
            (HEADER_ATTEMPT, str(item.attempt + 1).encode()),
        ]
        source = item.source_id
        if source is not None:
            headers.insert(0, (HEADER_SOURCE, source.encode()))
        try:
            value = orjson.dumps(body)
        except (orjson.JSONEncodeError, RecursionError):
            # An event orjson read but will not write (nesting beyond its limit): keep it as
            # the text it arrived as, which is exactly what a person needs to see.
            body["event"] = None
            body["raw"] = item.raw[:MAX_DEAD_LETTER_INPUT].decode("latin-1")
            value = _dumps(body)
        records.append(OutRecord(topic, item.key, value, tuple(headers)))
    return records


def status_record(
    topic: str,
    settled: Settled,
    *,
    destination: str,
    kind: str,
    partitions: int | None = None,
    error_json: bytes | None = None,
) -> OutRecord:
    """The ``delivery.status`` record of one group (see the module docstring).

    ``error_json``: :func:`status_error_json` of the group's failure when the caller
    serialized it already (a request's groups share it). With ``partitions`` (the status
    topic's count) the record carries its partition, computed with the producer's hash.
    """
    items = settled.items
    latencies = settled.latencies
    body = {
        "v": 2,
        "destination": destination,
        "destinationType": kind,
        "outcome": settled.kind,
        "reason": settled.reason,
        "status": settled.status,
        "duration": None if settled.duration is None else round(settled.duration, 6),
        "at": iso(settled.at),
        "dueAt": iso(min(settled.dues)) if settled.dues else None,
        "count": len(items),
        "messageIds": [head_message_id(item.head) for item in items],
        "attempts": [item.attempt + 1 for item in items],
        "latencyMs": (
            None
            if latencies is None
            # Rounded up: an event lands in the same Prometheus bucket (whole-millisecond
            # bounds, ``le``) in the console as in the agent's histogram. Rounded to nearest,
            # 50.3 ms read back as 50 ms moved a batch of events from (0.05, 0.1] to <= 0.05.
            else [None if value is None else math.ceil(value * 1000) for value in latencies]
        ),
        "error": None,
    }
    value = _dumps(body)
    failure = settled.failure
    if failure is not None:
        if error_json is None:
            error_json = status_error_json(failure, items[0].event if items else None)
        # "error" is the last key: splice the serialized object in place of its null.
        value = value[: -len(_NULL_ERROR)] + error_json + b"}"
    key = destination.encode()
    partition = None if partitions is None else _status_partition(key, partitions)
    headers = (("destination", key), ("outcome", settled.kind.encode()))
    return OutRecord(topic, key, value, headers, partition)


_NULL_ERROR: Final = b"null}"


@functools.lru_cache(maxsize=1024)
def _status_partition(key: bytes, partitions: int) -> int:
    """A destination's status partition: its key never changes, so hash it once."""
    return key_partition(key, partitions)


def status_error_json(failure: Failure, event: Event | None) -> bytes:
    """The ``error`` object of a status record: the failure, its request and response (cut),
    and a sample event (cut to :data:`STATUS_EVENT_LIMIT` bytes of JSON text when larger)."""
    error: dict[str, Any] = failure.error()
    error.update(failure.summary or {"request": None, "response": None})
    sample: Any = event
    if event is not None:
        text = _dumps(event)
        if len(text) > STATUS_EVENT_LIMIT:
            sample = text[:STATUS_EVENT_LIMIT].decode("utf-8", "ignore")
    error["event"] = sample
    return _dumps(error)


def _dumps(value: Any) -> bytes:
    """orjson, or a description of why not: a record we must write cannot fail to encode.

    Events come from ``dest.<id>`` as JSON, so they encode; this guards against the rare
    value orjson reads but will not write (nesting beyond its write limit).
    """
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, RecursionError) as exc:
        return orjson.dumps({"unencodable": f"{type(exc).__name__}: {exc}"})
