"""The Segment event model: the six call types, their required fields, limits and timestamps.

Both the HTTP gateway and the stream processor use these functions, so an event written to
``events.raw`` by a producer is held to exactly the rules an event posted to ``/v1/track`` is.
Events stay plain dicts (they are decoded by orjson and re-encoded per destination); this
module checks and completes them in place.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Final

EVENT_TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias"})
MAX_EVENT_BYTES: Final = 32 * 1024
# A record on events.raw may be larger than the event as its client sent it: the router adds
# receivedAt, originalTimestamp, a messageId and the batch's context. Clients are held to
# MAX_EVENT_BYTES as sent; stamped records to this.
MAX_RECORD_BYTES: Final = 64 * 1024
MAX_BATCH_BYTES: Final = 500 * 1024
MAX_BATCH_EVENTS: Final = 2500
MAX_MESSAGE_ID_CHARS: Final = 100
MAX_NAME_CHARS: Final = 255
_OBJECT_FIELDS: Final = ("properties", "traits", "context", "integrations")
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
        if not isinstance(message_id, str):
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
    # Keys of properties and traits are property names, held to the 255-character limit.
    # max() over their lengths runs in C; a loop in Python was a third of this function.
    if properties and max(map(len, properties)) > MAX_NAME_CHARS:
        raise InvalidEvent(
            "name_too_long", f"a key in properties is longer than {MAX_NAME_CHARS} characters"
        )
    if traits and max(map(len, traits)) > MAX_NAME_CHARS:
        raise InvalidEvent(
            "name_too_long", f"a key in traits is longer than {MAX_NAME_CHARS} characters"
        )
    return event


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
    if not isinstance(value, str):
        raise InvalidEvent("invalid_timestamp", f"{field} must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("invalid_timestamp", f"{field} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds, as Segment writes them: 2026-11-23T10:00:00.000Z."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def now() -> datetime:
    return datetime.now(UTC)


def stamp(
    event: Event, received_at: datetime, *, sent_at: Any = None, default_id: str | None = None
) -> Event:
    """Set ``receivedAt``, ``messageId`` and the corrected ``timestamp`` (Segment's rules).

    ``timestamp = receivedAt - (sentAt - originalTimestamp)``: the sender's clock skew is
    removed. A ``timestamp`` the sender set becomes ``originalTimestamp``. Applying this twice
    gives the same result, so the processor can re-apply it to events the gateway stamped.
    """
    received_raw = event.get("receivedAt")
    if received_raw is None:
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
    event["timestamp"] = format_timestamp(received_at - skew)
    return event


def partition_key(event: Event) -> bytes:
    """One user's events share a partition (and so stay in order and meet in one dedup store)."""
    user = event.get("userId") or event.get("anonymousId") or ""
    return str(user).encode()


def received_at_seconds(event: Event) -> float | None:
    """``receivedAt`` as a UNIX time, for end-to-end latency; None if absent or malformed."""
    raw = event.get("receivedAt")
    if not isinstance(raw, str):
        return None
    try:
        return parse_timestamp(raw, "receivedAt").timestamp()
    except InvalidEvent:
        return None
