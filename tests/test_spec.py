"""The Segment event model: required fields, limits, timestamps (segment-compat.md section 1)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router import spec


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ([], "invalid_event"),
        ({"userId": "u"}, "missing_type"),
        ({"type": "purchase", "userId": "u"}, "invalid_type"),
        ({"type": "track", "event": "E"}, "missing_identity"),
        ({"type": "track", "event": "E", "userId": "", "anonymousId": ""}, "missing_identity"),
        ({"type": "track", "userId": "u"}, "missing_event"),
        ({"type": "track", "userId": "u", "event": ""}, "missing_event"),
        ({"type": "group", "userId": "u"}, "missing_group_id"),
        ({"type": "alias", "anonymousId": "a", "previousId": "p"}, "missing_user_id"),
        ({"type": "alias", "userId": "u"}, "missing_previous_id"),
        ({"type": "track", "userId": "u", "event": "x" * 256}, "name_too_long"),
        ({"type": "page", "userId": "u", "name": "x" * 256}, "name_too_long"),
        (
            {"type": "track", "userId": "u", "event": "E", "properties": {"k" * 256: 1}},
            "name_too_long",
        ),
        (
            {"type": "track", "userId": "u", "event": "E", "messageId": "m" * 101},
            "message_id_too_long",
        ),
        ({"type": "track", "userId": "u", "event": "E", "properties": []}, "invalid_field"),
        ({"type": "track", "userId": {"a": 1}, "event": "E"}, "invalid_field"),
        ({"type": "identify", "userId": True}, "invalid_field"),
    ],
)
def test_invalid_events_get_a_code(event: object, code: str) -> None:
    with pytest.raises(spec.InvalidEvent) as info:
        spec.validate(event)
    assert info.value.code == code


@pytest.mark.parametrize(
    "event",
    [
        {"type": "track", "userId": "u", "event": "Order Completed"},
        {"type": "identify", "anonymousId": "a", "traits": {"email": "x@y"}},
        {"type": "page", "userId": "u"},
        {"type": "screen", "userId": "u", "name": "Home"},
        {"type": "group", "userId": "u", "groupId": "g"},
        {"type": "alias", "userId": "u", "previousId": "p"},
        {"type": "TRACK", "userId": "u", "event": "E"},
    ],
)
def test_valid_events_pass(event: dict[str, object]) -> None:
    assert spec.validate(event)["type"] == str(event["type"]).lower()


def test_numeric_ids_become_strings() -> None:
    event = spec.validate({"type": "group", "userId": 42, "groupId": 7})
    assert event["userId"] == "42"
    assert event["groupId"] == "7"


def test_endpoint_type_wins() -> None:
    assert spec.validate({"userId": "u", "event": "E"}, type_hint="track")["type"] == "track"


def test_timestamp_correction_removes_client_skew() -> None:
    received = datetime(2026, 11, 23, 12, 0, 10, tzinfo=UTC)
    # The client clock is 1 hour behind: it stamped the event at 11:00:05, sent at 11:00:08.
    event = {
        "type": "track",
        "timestamp": "2026-11-23T11:00:05.000Z",
        "sentAt": "2026-11-23T11:00:08Z",
    }
    spec.stamp(event, received)
    assert event["originalTimestamp"] == "2026-11-23T11:00:05.000Z"
    assert event["receivedAt"] == "2026-11-23T12:00:10.000Z"
    assert event["timestamp"] == "2026-11-23T12:00:07.000Z"
    assert len(event["messageId"]) == 36
    again = dict(event)
    spec.stamp(again, datetime(2030, 1, 1, tzinfo=UTC))
    assert again == event, "stamping twice must not change the result"


def test_timestamp_without_sent_at_is_kept_and_missing_is_received_at() -> None:
    received = datetime(2026, 11, 23, 12, 0, 0, 250000, tzinfo=UTC)
    event = spec.stamp({"timestamp": "2026-01-01T00:00:00+01:00"}, received)
    assert event["timestamp"] == "2025-12-31T23:00:00.000Z"
    bare = spec.stamp({}, received, default_id="fixed")
    assert bare["timestamp"] == bare["receivedAt"] == "2026-11-23T12:00:00.250Z"
    assert bare["messageId"] == "fixed"


def test_bad_timestamp_is_an_invalid_event() -> None:
    with pytest.raises(spec.InvalidEvent) as info:
        spec.stamp({"timestamp": "yesterday"}, spec.now())
    assert info.value.code == "invalid_timestamp"


def test_partition_key_prefers_user_id() -> None:
    assert spec.partition_key({"userId": "u", "anonymousId": "a"}) == b"u"
    assert spec.partition_key({"anonymousId": "a"}) == b"a"
