"""The Segment event model: required fields, limits and timestamps, as Segment's API states them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
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


# ---------------------------------------------------------------- the fast path of validate()


def reference_validate(event: Any, *, type_hint: str | None = None) -> Any:
    """validate() as written before its fast path: the same checks, one after the other."""
    if not isinstance(event, dict):
        raise spec.InvalidEvent("invalid_event", "an event must be a JSON object")
    kind = event.get("type", type_hint)
    if type_hint is not None:
        kind = type_hint
        event["type"] = kind
    if kind is None:
        raise spec.InvalidEvent("missing_type", "type is required")
    if not isinstance(kind, str) or kind.lower() not in spec.EVENT_TYPES:
        raise spec.InvalidEvent(
            "invalid_type", "type must be one of alias, group, identify, page, screen, track"
        )
    if kind != kind.lower():
        kind = kind.lower()
        event["type"] = kind
    user_id = spec._id_field(event, "userId")
    anonymous_id = spec._id_field(event, "anonymousId")
    if user_id is None and anonymous_id is None:
        raise spec.InvalidEvent("missing_identity", "userId or anonymousId is required")
    if kind == "track":
        name = event.get("event")
        if not isinstance(name, str) or not name:
            raise spec.InvalidEvent("missing_event", "track requires event (a non-empty string)")
        spec._check_name(name, "event")
    elif kind == "group":
        if spec._id_field(event, "groupId") is None:
            raise spec.InvalidEvent("missing_group_id", "group requires groupId")
    elif kind == "alias":
        if user_id is None:
            raise spec.InvalidEvent("missing_user_id", "alias requires userId")
        if spec._id_field(event, "previousId") is None:
            raise spec.InvalidEvent("missing_previous_id", "alias requires previousId")
    elif kind in ("page", "screen"):
        name = event.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise spec.InvalidEvent("invalid_field", "name must be a string")
            spec._check_name(name, "name")
    message_id = event.get("messageId")
    if message_id == "":
        del event["messageId"]
    elif message_id is not None:
        if not isinstance(message_id, str):
            raise spec.InvalidEvent("invalid_field", "messageId must be a string")
        if len(message_id) > spec.MAX_MESSAGE_ID_CHARS:
            raise spec.InvalidEvent(
                "message_id_too_long", "messageId is longer than 100 characters"
            )
    for field in ("properties", "traits", "context", "integrations"):
        value = event.get(field)
        if value is not None and not isinstance(value, dict):
            raise spec.InvalidEvent("invalid_field", f"{field} must be an object")
    for field in ("properties", "traits"):
        value = event.get(field)
        if value:
            objects: list[tuple[Any, str]] = [(value, field)]
            while objects:
                node, where = objects.pop()
                items = node.items() if isinstance(node, dict) else enumerate(node)
                for key, child in items:
                    if isinstance(node, dict) and len(key) > spec.MAX_NAME_CHARS:
                        raise spec.InvalidEvent(
                            "name_too_long", f"a key in {where} is longer than 255 characters"
                        )
                    if isinstance(child, dict | list):
                        objects.append((child, f"an object nested in {field}"))
    return event


def generated_events(count: int) -> list[Any]:
    import random

    rng = random.Random(17)
    choices: dict[str, list[Any]] = {
        "type": [
            *("track", "identify", "page", "screen", "group", "alias", "Track", "PAGE"),
            *("purchase", "", 5, None, ["track"]),
        ],
        "userId": ["u", "", 0, 7, 1.5, True, None, [], {"a": 1}],
        "anonymousId": ["a", "", 3, False, None],
        "event": ["Order Completed", "", "e" * 256, None, 5],
        "name": ["Home", "n" * 256, 5, None],
        "groupId": ["g", "", 4, None, True],
        "previousId": ["p", "", 9, None],
        "messageId": ["m", "m" * 101, 5, None, ""],
        "properties": [
            *({"total": 1}, {"k" * 256: 1}, {}, None, [], "x", 5),
            {"items": [{"sku": 1}, {"k" * 256: 1}]},
            {"a": {"b": {"k" * 256: 1}}, "c": 1},
            {"a": {"b": {"k" * 255: [1]}}, "c": [[{"d": 2}]]},
        ],
        "traits": [{"email": "x"}, {"t" * 256: 1}, None, [1], {}, {"a": [{"t" * 256: 1}]}],
        "context": [{"ip": "x"}, None, [], "x", {}],
        "integrations": [{"All": False}, None, "x", []],
    }
    events: list[Any] = [[], "x", None, 5]
    for _ in range(count):
        event = {
            name: rng.choice(values)
            for name, values in choices.items()
            if rng.random() < (0.9 if name in ("type", "userId") else 0.4)
        }
        events.append(event)
    return events


@pytest.mark.parametrize("type_hint", [None, "track", "identify", "page", "alias"])
def test_validate_matches_the_check_by_check_reference(type_hint: str | None) -> None:
    import copy

    def run(function: Any, event: Any) -> Any:
        try:
            return ("ok", function(event, type_hint=type_hint), event)
        except spec.InvalidEvent as exc:
            return (exc.code, exc.message, event)

    codes = set()
    for event in generated_events(3000):
        mine = run(spec.validate, copy.deepcopy(event))
        theirs = run(reference_validate, copy.deepcopy(event))
        assert mine == theirs, event
        if isinstance(event, dict):  # ids coerced to the same types (1 == 1.0 == True)
            assert [type(v) for v in mine[2].values()] == [type(v) for v in theirs[2].values()]
        codes.add(mine[0])
    assert codes >= {"ok", "invalid_event", "missing_identity", "invalid_field", "name_too_long"}
    assert type_hint is not None or "invalid_type" in codes


# ---------------------------------------------------------------- robustness


def nested(levels: int, leaf: Any = 1) -> Any:
    """``levels`` objects nested in one another (the outermost counts as level 1)."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "fields",
    [
        {"timestamp": "9999-12-31T23:59:59-01:00"},  # year 10000 in UTC
        {"timestamp": "0001-01-01T00:00:00+01:00"},  # year 0 in UTC
        {"timestamp": "2026-11-23T10:00:00Z", "sentAt": "9999-12-31T23:59:59+14:00"},
        {"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T23:59:59Z"},
        {"timestamp": "9999-12-31T23:59:59Z", "sentAt": "0001-01-01T00:00:00Z"},
        {"receivedAt": "9999-12-31T23:59:59.999-00:01"},
    ],
)
def test_timestamps_at_the_calendars_edges_are_invalid_events(fields: dict[str, str]) -> None:
    event = {"type": "track", "userId": "u", "event": "E", **fields}
    with pytest.raises(spec.InvalidEvent) as info:
        spec.stamp(event, spec.now())
    assert info.value.code == "invalid_timestamp" and "1-9999" in info.value.message


def test_timestamps_at_the_calendars_edges_that_fit_are_kept_and_read_back() -> None:
    event = spec.stamp(
        {"type": "track", "timestamp": "0001-01-01T00:00:00Z"},
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    )
    # Four-digit years (strftime writes year 1 as "1"), so the processor can read them again.
    assert event["timestamp"] == "0001-01-01T00:00:00.000Z"
    assert event["receivedAt"] == "9999-12-31T23:59:59.000Z"
    assert spec.stamp(dict(event), None)["timestamp"] == event["timestamp"]


def test_an_empty_message_id_is_absent_so_the_router_fills_one() -> None:
    event = spec.validate({"type": "track", "userId": "u", "event": "E", "messageId": ""})
    assert "messageId" not in event
    assert spec.stamp(event, spec.now(), default_id="derived")["messageId"] == "derived"


@pytest.mark.parametrize("field", ["properties", "traits"])
@pytest.mark.parametrize(
    "value",
    [
        {"a": {"k" * 256: 1}},
        {"items": [{"sku": "x"}, {"k" * 256: 1}]},
        {"a": [[{"b": {"k" * 256: None}}]]},
    ],
)
def test_property_names_are_limited_at_every_depth(field: str, value: Any) -> None:
    with pytest.raises(spec.InvalidEvent) as info:
        spec.validate({"type": "identify", "userId": "u", field: value})
    assert info.value.code == "name_too_long"
    assert f"an object nested in {field}" in info.value.message
    fine = {"a": {"k" * 255: [{"k" * 255: 1}]}, "c": ["x" * 300]}
    spec.validate({"type": "identify", "userId": "u", field: fine})


def test_nesting_is_limited() -> None:
    spec.check_depth(nested(spec.MAX_DEPTH))
    with pytest.raises(spec.InvalidEvent) as info:
        spec.check_depth(nested(spec.MAX_DEPTH + 1))
    assert info.value.code == "nesting_too_deep"
    deep_list = [[[1]]] * 3
    for _ in range(spec.MAX_DEPTH):
        deep_list = [deep_list]
    with pytest.raises(spec.InvalidEvent):
        spec.check_depth({"properties": {"x": deep_list}})
    # The JSON at hand decides the usual case: no more brackets than levels allowed.
    shallow = {"properties": {"a": 1}}
    spec.check_depth(shallow, orjson.dumps(shallow))
    deep = nested(spec.MAX_DEPTH + 1)
    with pytest.raises(spec.InvalidEvent):
        spec.check_depth(deep, orjson.dumps(deep))
    # A thousand levels (what orjson reads) are refused without exhausting the stack.
    with pytest.raises(spec.InvalidEvent):
        spec.check_depth(orjson.loads(b"[" * 1000 + b"]" * 1000))
    with pytest.raises(spec.InvalidEvent):
        spec.validate({"type": "identify", "userId": "u", "traits": nested(1000, {"k" * 256: 1})})


def test_recheck_also_needs_the_message_id() -> None:
    spec.recheck({"type": "track", "userId": "u", "event": "E", "messageId": "m"})
    for event, code in [
        ({"type": "track", "userId": "u", "event": "E"}, "missing_message_id"),
        ({"type": "track", "userId": "u", "event": "E", "messageId": ""}, "missing_message_id"),
        ({"userId": "u", "event": "E", "messageId": "m"}, "missing_type"),
        ({"type": "track", "event": "E", "messageId": "m"}, "missing_identity"),
    ]:
        with pytest.raises(spec.InvalidEvent) as info:
            spec.recheck(event)
        assert info.value.code == code


@pytest.mark.parametrize(
    ("path", "value", "may"),
    [
        ("context.ip", None, False),
        ("integrations.Mixpanel", None, False),
        ("properties.total", 5, False),
        ("traits.email", None, False),
        ("channel", None, False),
        ("properties", None, True),
        ("event", None, True),
        ("userId.x", None, True),
        ("properties.meta", {"a": 1}, True),
        ("properties." + "k" * 256, None, True),
        ("context", None, True),
    ],
)
def test_which_edits_may_invalidate(path: str, value: Any, may: bool) -> None:
    assert spec.edit_may_invalidate(tuple(path.split(".")), value) is may


# Timestamps as clients write them, and strings fromisoformat treats in unusual ways: the
# Stamper reads the usual form without its "Z", so it must accept and refuse exactly what
# parse_timestamp does.
_TIMES: list[Any] = [
    None,
    "2026-11-23T10:00:00.000Z",
    "2026-11-23T10:00:05.123Z",
    "2026-11-23T09:59:58.999Z",
    "2026-11-23T10:00:00Z",
    "2026-11-23T10:00:00.123456Z",
    "2026-11-23T10:00:00.000+00:00",
    "2026-11-23T12:00:00.000+02:00",
    "2026-11-23T10:00:00",
    "2026-11-23T10:00:00.00+01:00Z",
    "2026-11-23T10:00:00.000z",
    "2026-11-23T24:00:00.000Z",
    "2026-11-23T1:00:00.0000Z",
    "2026-11-23T10:00+01:00:0Z",
    "20261123T100000.000000Z",
    "2026-W47-1T10:00:00.00Z",
    "2026-11-23 10:00:00.000Z",
    "0001-01-01T00:00:00.000Z",
    "9999-12-31T23:59:59.999Z",
    "9999-12-31T23:59:59-01:00",
    "not a timestamp at all!Z",
    "2026-11-23",
    "",
    1700000000,
]


@pytest.mark.parametrize("batch_sent_at", [None, "2026-11-23T10:00:08.000Z", 5])
def test_the_stamper_stamps_as_stamp_does(batch_sent_at: Any) -> None:
    received = datetime(2026, 11, 23, 12, 0, 7, 654321, tzinfo=UTC)
    stamper = spec.Stamper(received, sent_at=batch_sent_at)
    cases = 0
    for timestamp in _TIMES:
        for sent_at in _TIMES:
            for extra in ({}, {"receivedAt": "1999-01-01T00:00:00.000Z", "messageId": "m"}):
                event: dict[str, Any] = {"type": "track", "userId": "u", "event": "E", **extra}
                if timestamp is not None:
                    event["timestamp"] = timestamp
                if sent_at is not None:
                    event["sentAt"] = sent_at
                expected: Any = dict(event, receivedAt=spec.format_timestamp(received))
                try:
                    spec.stamp(expected, received, sent_at=batch_sent_at, default_id="id")
                except spec.InvalidEvent as exc:
                    expected = (exc.code, exc.message)
                got: Any = dict(event)
                if not got.get("messageId"):
                    got["messageId"] = "id"
                try:
                    stamper.stamp(got)
                except spec.InvalidEvent as exc:
                    got = (exc.code, exc.message)
                assert got == expected, (timestamp, sent_at, extra)
                cases += 1
    assert cases == 2 * len(_TIMES) ** 2
    assert stamper.received == "2026-11-23T12:00:07.654Z"


def test_the_stamper_fills_a_missing_message_id() -> None:
    stamper = spec.Stamper(spec.now())
    first = stamper.stamp({"type": "track", "userId": "u", "event": "E"})
    second = stamper.stamp({"type": "track", "userId": "u", "event": "E", "messageId": ""})
    assert first["messageId"] and second["messageId"] and first["messageId"] != second["messageId"]
