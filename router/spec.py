"""The Segment event model: the six call types, their required fields, limits and timestamps.

Both the HTTP gateway and the stream processor use these functions, so an event written to
``events.raw`` by a producer is held to exactly the rules an event posted to ``/v1/track`` is.
Events stay plain dicts (they are decoded by orjson and re-encoded per destination); this
module checks and completes them in place.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

EVENT_TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias"})
# Segment's limit, on the event as its client sent it: the body of a single call, one batch
# item (as compact JSON, before the batch's context and integrations are merged in), or the
# value of a record a producer wrote to events.raw. What the router adds does not count.
MAX_EVENT_BYTES: Final = 32 * 1024
# A record the gateway writes is larger than the event its client sent: the router adds
# receivedAt, originalTimestamp, a messageId and the batch's context. The gateway tells the
# processor the size as sent in this record header, so the processor holds the record to
# MAX_EVENT_BYTES as sent (a record without the header: its own size) and to
# MAX_RECORD_BYTES whole.
SENT_BYTES_HEADER: Final = "sent-bytes"
MAX_RECORD_BYTES: Final = 64 * 1024
# Objects and arrays nested deeper than this are refused (the event itself is level 1). Why a
# limit at all: orjson, which encodes every event the router writes, refuses more than 254
# levels, and destinations wrap events in request bodies of their own; a cap far below that
# (no real event comes near it) keeps every accepted event encodable wherever it goes.
MAX_DEPTH: Final = 64
MAX_BATCH_BYTES: Final = 500 * 1024
MAX_BATCH_EVENTS: Final = 2500
MAX_MESSAGE_ID_CHARS: Final = 100
MAX_NAME_CHARS: Final = 255
_OBJECT_FIELDS: Final = ("properties", "traits", "context", "integrations")
_CONTAINERS: Final = frozenset({dict, list})
# What validate() reads for an absent context / integrations, so one type() test passes it.
_NO_OBJECT: Final[dict[str, Any]] = {}

Event = dict[str, Any]


class InvalidEvent(ValueError):
    """An event that breaks the spec; ``code`` is stable and machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def validate(event: Any, *, type_hint: str | None = None) -> Event:
    """Check one event against Segment's rules; returns it with ``type`` and ids normalized.

    ``type_hint`` is the call type implied by the endpoint (``/v1/track``); it replaces any
    ``type`` in the body, as the endpoint is what the client called.
    """
    # Every event the processor reads passes here, so the usual case (a lowercase type,
    # string ids, object fields that are dicts) is decided with a few dict reads and type
    # checks; anything else takes the slower checks below it. The checks and their order, so
    # the code an event with several problems gets, are the same either way.
    if not isinstance(event, dict):
        raise InvalidEvent("invalid_event", "an event must be a JSON object")
    get = event.get
    kind = get("type", type_hint)
    if type_hint is not None:
        kind = type_hint
        event["type"] = kind
    if type(kind) is not str or kind not in EVENT_TYPES:
        if kind is None:
            raise InvalidEvent("missing_type", "type is required")
        if not isinstance(kind, str) or kind.lower() not in EVENT_TYPES:
            raise InvalidEvent(
                "invalid_type",
                "type must be one of alias, group, identify, page, screen, track",
            )
        if kind != kind.lower():
            kind = kind.lower()
            event["type"] = kind

    user_id = get("userId")
    if type(user_id) is not str or not user_id:
        user_id = _id_field(event, "userId")
    anonymous_id = get("anonymousId")
    if type(anonymous_id) is not str or not anonymous_id:
        anonymous_id = _id_field(event, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise InvalidEvent("missing_identity", "userId or anonymousId is required")

    if kind == "track":
        name = get("event")
        if not isinstance(name, str) or not name:
            raise InvalidEvent("missing_event", "track requires event (a non-empty string)")
        if len(name) > MAX_NAME_CHARS:
            _check_name(name, "event")
    elif kind == "group":
        if _id_field(event, "groupId") is None:
            raise InvalidEvent("missing_group_id", "group requires groupId")
    elif kind == "alias":
        if user_id is None:
            raise InvalidEvent("missing_user_id", "alias requires userId")
        if _id_field(event, "previousId") is None:
            raise InvalidEvent("missing_previous_id", "alias requires previousId")
    elif kind in ("page", "screen"):
        name = get("name")
        if name is not None:
            if not isinstance(name, str):
                raise InvalidEvent("invalid_field", "name must be a string")
            _check_name(name, "name")

    message_id = get("messageId")
    if message_id is not None:
        if message_id == "":
            # Absent, so the router fills one: an empty id could never be traced or deduplicated.
            del event["messageId"]
        elif not isinstance(message_id, str):
            raise InvalidEvent("invalid_field", "messageId must be a string")
        if len(message_id) > MAX_MESSAGE_ID_CHARS:
            raise InvalidEvent(
                "message_id_too_long",
                f"messageId is longer than {MAX_MESSAGE_ID_CHARS} characters",
            )

    properties, traits = get("properties"), get("traits")
    if not (
        (properties is None or type(properties) is dict)
        and (traits is None or type(traits) is dict)
        and type(get("context", _NO_OBJECT)) is dict
        and type(get("integrations", _NO_OBJECT)) is dict
    ):
        for field in _OBJECT_FIELDS:
            value = get(field)
            if value is not None and not isinstance(value, dict):
                raise InvalidEvent("invalid_field", f"{field} must be an object")
    # Keys of properties and traits are property names, held to the 255-character limit at
    # every depth. max() over their lengths runs in C (a loop in Python was a third of this
    # function), and most events are flat: nested objects are looked for only when a value is
    # a container, which one C-level pass over the value types tells.
    if properties and (
        max(map(len, properties)) > MAX_NAME_CHARS
        or not _CONTAINERS.isdisjoint(map(type, properties.values()))
    ):
        _check_keys(properties, "properties")
    if traits and (
        max(map(len, traits)) > MAX_NAME_CHARS
        or not _CONTAINERS.isdisjoint(map(type, traits.values()))
    ):
        _check_keys(traits, "traits")
    return event


def _check_keys(root: dict[str, Any], field: str) -> None:
    """Every key of every object within ``root`` is at most MAX_NAME_CHARS long.

    Iterative, so an event nested 1,000 levels deep (orjson reads that many) cannot exhaust
    the interpreter's stack before the depth limit refuses it.
    """
    pending: list[Any] = [root]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node and max(map(len, node)) > MAX_NAME_CHARS:
                where = field if node is root else f"an object nested in {field}"
                raise InvalidEvent(
                    "name_too_long", f"a key in {where} is longer than {MAX_NAME_CHARS} characters"
                )
            children: Any = node.values()
        else:
            children = node
        pending.extend(child for child in children if isinstance(child, dict | list | tuple))


def check_depth(event: Any, encoded: bytes | None = None) -> None:
    """Refuse an event with objects or arrays nested more than MAX_DEPTH levels.

    ``encoded``: the event's JSON, when at hand. An event with no more brackets in it than the
    limit cannot be nested deeper than that, so the usual event is decided by two byte counts
    in C; the others are walked.
    """
    if encoded is not None and encoded.count(b"{") + encoded.count(b"[") <= MAX_DEPTH:
        return
    pending: list[tuple[Any, int]] = [(event, 1)]
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list | tuple):
                if depth >= MAX_DEPTH:
                    raise InvalidEvent(
                        "nesting_too_deep",
                        f"objects and arrays may be nested at most {MAX_DEPTH} levels deep",
                    )
                pending.append((child, depth + 1))


def recheck(event: Any) -> Event:
    """Validate an event a stage returned (source middleware, a transformation).

    The rules of :func:`validate`, plus a ``messageId``: every event has one by then, and
    destinations, dedup and delivery outcomes are keyed by it.
    """
    checked = validate(event)
    if not isinstance(checked.get("messageId"), str):
        raise InvalidEvent("missing_message_id", "messageId was removed")
    return checked


# Top-level fields whose values validate() or recheck() read. An edit elsewhere cannot make a
# valid event invalid; stages use edits_may_invalidate() to re-validate only when it might.
_CHECKED_FIELDS: Final = frozenset(
    {
        *("type", "userId", "anonymousId", "event", "name", "groupId", "previousId"),
        *("messageId", "properties", "traits", "context", "integrations"),
    }
)
_NAMED_KEYS: Final = frozenset({"properties", "traits"})


def edit_may_invalidate(path: Sequence[str], value: Any = None) -> bool:
    """Whether removing, moving or setting the value at ``path`` (split dot path) can make a
    valid event invalid; ``value``: what a set writes there.

    Inside ``context`` and ``integrations`` nothing is checked; inside ``properties`` and
    ``traits`` only key lengths, at every depth. Anything else a check reads may break.
    """
    top = path[0]
    if top not in _CHECKED_FIELDS:
        return False
    if len(path) == 1:
        return True
    if top in _NAMED_KEYS:
        return any(len(part) > MAX_NAME_CHARS for part in path) or isinstance(
            value, dict | list | tuple
        )
    return top not in ("context", "integrations")


def _id_field(event: Event, field: str) -> str | None:
    """Ids may arrive as numbers (Segment coerces them); empty strings count as missing."""
    value = event.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidEvent("invalid_field", f"{field} must be a string")
    if not isinstance(value, str):
        value = str(value)
        event[field] = value
    return value


def _check_name(name: str, field: str) -> None:
    if len(name) > MAX_NAME_CHARS:
        raise InvalidEvent("name_too_long", f"{field} is longer than {MAX_NAME_CHARS} characters")


# ---------------------------------------------------------------- timestamps and ids


def parse_timestamp(value: Any, field: str) -> datetime:
    """An ISO-8601 timestamp in UTC (no offset: UTC); InvalidEvent if it is none, or if it
    falls outside years 1-9999 once in UTC (9999-12-31T23:00:00-02:00 does)."""
    if not isinstance(value, str):
        raise InvalidEvent("invalid_timestamp", f"{field} must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("invalid_timestamp", f"{field} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise InvalidEvent(
            "invalid_timestamp", f"{field} is outside years 1-9999 once converted to UTC"
        ) from None


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds, as Segment writes them: 2026-11-23T10:00:00.000Z.

    isoformat, not strftime: strftime writes year 1 as "1", which no parser reads back.
    """
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def now() -> datetime:
    return datetime.now(UTC)


def stamp(
    event: Event,
    received_at: datetime | None,
    *,
    sent_at: Any = None,
    default_id: str | None = None,
) -> Event:
    """Set ``receivedAt``, ``messageId`` and the corrected ``timestamp`` (Segment's rules).

    ``timestamp = receivedAt - (sentAt - originalTimestamp)``: the sender's clock skew is
    removed. A ``timestamp`` the sender set becomes ``originalTimestamp``. Applying this twice
    gives the same result, so the processor can re-apply it to events the gateway stamped.
    ``received_at`` is the arrival time for an event without ``receivedAt`` (None: the event
    has one).
    """
    received_raw = event.get("receivedAt")
    if received_raw is None:
        if received_at is None:
            raise InvalidEvent("invalid_timestamp", "receivedAt is required")
        event["receivedAt"] = format_timestamp(received_at)
    else:
        received_at = parse_timestamp(received_raw, "receivedAt")
    if not event.get("messageId"):
        event["messageId"] = default_id or str(uuid.uuid4())
    original_raw = event.get("originalTimestamp")
    if original_raw is None and event.get("timestamp") is not None:
        original_raw = event["timestamp"]
        event["originalTimestamp"] = original_raw
    if sent_at is None:
        sent_at = event.get("sentAt")
    if original_raw is None:
        event["timestamp"] = event["receivedAt"]
        return event
    original = parse_timestamp(original_raw, "timestamp")
    if sent_at is None:
        event["timestamp"] = format_timestamp(original)
        return event
    sent = parse_timestamp(sent_at, "sentAt")
    event["sentAt"] = sent_at
    skew: timedelta = sent - original
    try:
        corrected = received_at - skew
    except OverflowError:
        raise InvalidEvent(
            "invalid_timestamp",
            "timestamp and sentAt are too far apart: the corrected time is outside years 1-9999",
        ) from None
    event["timestamp"] = format_timestamp(corrected)
    return event


class Stamper:
    """:func:`stamp` for the events of one request, which all arrived at one moment.

    ``stamper.stamp(event)`` overwrites ``receivedAt`` with the arrival time (Segment's rule: the
    server's clock, whatever the client sent), then sets ``messageId``, ``originalTimestamp``
    and the corrected ``timestamp`` exactly as :func:`stamp` does, for less CPU per event: the
    arrival time is formatted once and never parsed back, ``sentAt`` (one value for a whole
    batch, set by the client as it sent the request) is parsed once per run of equal values,
    and timestamps in the usual form (24 characters ending in ``Z``, what JavaScript's
    ``toISOString`` and Segment's mobile libraries write) are computed on as naive UTC times,
    which skips the time-zone arithmetic that was half the cost of formatting one.
    """

    __slots__ = ("_received", "_received_at", "_sent", "_sent_at", "_sent_raw")

    def __init__(self, received_at: datetime, *, sent_at: Any = None) -> None:
        # At the precision receivedAt is written with, as stamp() reads it back.
        moment = received_at.astimezone(UTC).replace(tzinfo=None)
        self._received_at = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        self._received = _format_naive(self._received_at)
        self._sent_at = sent_at
        # The last sentAt string parsed, and what it read (None: nothing parsed yet).
        self._sent_raw: Any = None
        self._sent = self._received_at

    @property
    def received(self) -> str:
        """``receivedAt`` as written into every event."""
        return self._received

    def stamp(self, event: Event) -> Event:
        """:func:`stamp` of one event of the request (a method, not ``__call__``: a bound
        method taken once per request is the cheapest call per event)."""
        event["receivedAt"] = self._received
        if not event.get("messageId"):
            event["messageId"] = str(uuid.uuid4())
        original_raw = event.get("originalTimestamp")
        if original_raw is None:
            original_raw = event.get("timestamp")
            if original_raw is None:
                event["timestamp"] = self._received
                return event
            event["originalTimestamp"] = original_raw
        sent_at = self._sent_at
        if sent_at is None:
            sent_at = event.get("sentAt")
        original = _naive_utc(original_raw, "timestamp")
        if sent_at is None:
            event["timestamp"] = _format_naive(original)
            return event
        if type(sent_at) is str and sent_at == self._sent_raw:
            sent = self._sent
        else:
            sent = _naive_utc(sent_at, "sentAt")
            self._sent_raw, self._sent = sent_at, sent
        event["sentAt"] = sent_at
        try:
            corrected = self._received_at - (sent - original)
        except OverflowError:
            raise InvalidEvent(
                "invalid_timestamp",
                "timestamp and sentAt are too far apart: the corrected time is outside years "
                "1-9999",
            ) from None
        event["timestamp"] = _format_naive(corrected)
        return event


def _naive_utc(value: Any, field: str) -> datetime:
    """:func:`parse_timestamp` as a naive datetime in UTC (the same instant, the same errors).

    A string of the usual form ``2026-11-23T10:00:00.000Z`` is read without its ``Z``, so
    fromisoformat makes no time-zone object; a 24-character string with a ``T`` at index 10
    that it reads without the ``Z`` and without an offset, it reads with the ``Z`` as the same
    time in UTC (tests/test_spec.py holds both paths to the same answers over odd forms).
    Anything else takes the general path.
    """
    if type(value) is str and len(value) == 24 and value[23] == "Z" and value[10] == "T":
        try:
            parsed = _from_iso(value[:23])
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                return parsed
    return parse_timestamp(value, field).replace(tzinfo=None)


def _format_naive(moment: datetime) -> str:
    """:func:`format_timestamp` of a naive datetime in UTC.

    isoformat() writes ``YYYY-MM-DDTHH:MM:SS`` and then ``.ffffff`` unless the microseconds are
    0; cutting that to milliseconds is what ``timespec="milliseconds"`` does (it truncates), at
    half the cost of passing the keyword.
    """
    text = moment.isoformat()
    return text[:23] + "Z" if moment.microsecond else text + ".000Z"


_from_iso = datetime.fromisoformat


def partition_key(event: Event) -> bytes:
    """One user's events share a partition (and so stay in order and meet in one dedup store)."""
    user = event.get("userId") or event.get("anonymousId") or ""
    return (user if type(user) is str else str(user)).encode()


def iso_seconds(value: Any) -> float | None:
    """An ISO-8601 time written by this router (status, dead-letter and regulation records)
    as a UNIX time; None when it is not a string Python's ``fromisoformat`` reads."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def received_at_seconds(raw: object) -> float | None:
    """An event's ``receivedAt`` value as a UNIX time, for end-to-end latency; None if absent
    or malformed."""
    if not isinstance(raw, str):
        return None
    try:
        return parse_timestamp(raw, "receivedAt").timestamp()
    except InvalidEvent:
        return None
