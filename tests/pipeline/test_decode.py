"""Stage 1-2: decode, validate, find the source; never raise on input."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from router import spec
from router.pipeline.decode import decode, derived_message_id

KEYS = {"wk-web": "web"}


@dataclass
class Record:
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("write-key", b"wk-web")])
    topic: str = "events.raw"
    partition: int = 0
    offset: int = 7
    timestamp: int = 1_795_000_000_000


def test_good_event_is_stamped_and_attributed() -> None:
    envelopes, rejections = decode(
        [
            Record(
                orjson.dumps(
                    {
                        "type": "track",
                        "event": "E",
                        "userId": "u",
                        "timestamp": "2026-11-23T10:00:00Z",
                    }
                )
            )
        ],
        KEYS,
    )
    assert rejections == []
    (env,) = envelopes
    assert env.source_id == "web"
    assert env.event["receivedAt"].endswith("Z")
    assert env.event["originalTimestamp"] == "2026-11-23T10:00:00Z"


def test_missing_message_id_is_stable_across_replays() -> None:
    raw = orjson.dumps({"type": "track", "event": "E", "userId": "u"})
    first, _ = decode([Record(raw)], KEYS)
    again, _ = decode([Record(raw)], KEYS)
    other, _ = decode([Record(raw, offset=8)], KEYS)
    assert first[0].event["messageId"] == again[0].event["messageId"]
    assert first[0].event["messageId"] != other[0].event["messageId"]


def test_every_bad_input_becomes_a_rejection_with_a_reason() -> None:
    records = [
        Record(None),
        Record(b"\xff\xfe not json"),
        Record(b"[1, 2]"),
        Record(orjson.dumps({"type": "track", "userId": "u"})),
        Record(orjson.dumps({"type": "track", "event": "E", "userId": "u"}), headers=[]),
        Record(
            orjson.dumps({"type": "track", "event": "E", "userId": "u"}),
            headers=[("write-key", b"nope")],
        ),
        Record(b'{"type":"track","event":"E","userId":"u","p":"' + b"x" * 66_000 + b'"}'),
        Record(orjson.dumps({"type": "track", "event": "E", "userId": "u", "timestamp": "noon"})),
    ]
    envelopes, rejections = decode(records, KEYS)
    assert envelopes == []
    assert [r.reason for r in rejections] == [
        "empty_record",
        "invalid_json",
        "invalid_event",
        "missing_event",
        "missing_write_key",
        "unknown_write_key",
        "event_too_large",
        "invalid_timestamp",
    ]
    assert all(r.message for r in rejections)
    dlq = orjson.loads(rejections[1].to_record("events.dlq", "events.raw").value)
    assert dlq["raw"] == "\xff\xfe not json" and dlq["payload"] is None


def test_write_key_in_body_is_used_and_removed() -> None:
    envelopes, _ = decode(
        [
            Record(
                orjson.dumps({"type": "identify", "userId": "u", "writeKey": "wk-web"}), headers=[]
            )
        ],
        KEYS,
    )
    assert envelopes[0].source_id == "web"
    assert "writeKey" not in envelopes[0].event


def test_derived_message_ids_tell_records_at_a_reused_offset_apart() -> None:
    """Offsets start again after a topic is recreated (or the embedded broker restarts) while
    the dedup store remembers the old ids: only the same record may get the same id."""
    raw = orjson.dumps({"type": "track", "event": "E", "userId": "u"})
    other = orjson.dumps({"type": "track", "event": "F", "userId": "u"})
    ids = {
        name: decode([record], KEYS)[0][0].event["messageId"]
        for name, record in {
            "first": Record(raw),
            "replay": Record(raw),
            "later at the same offset": Record(raw, timestamp=1_795_000_000_001),
            "other value at the same offset": Record(other),
        }.items()
    }
    assert ids["first"] == ids["replay"]
    assert (
        len({ids["first"], ids["later at the same offset"], ids["other value at the same offset"]})
        == 3
    )
    assert ids["first"] == derived_message_id(Record(raw))


def test_record_timestamps_outside_the_calendar_reject_only_their_record() -> None:
    event = {"type": "track", "event": "E", "userId": "u"}
    envelopes, rejections = decode(
        [
            Record(orjson.dumps(event), timestamp=253_402_300_800_000),  # year 10000
            Record(orjson.dumps(event), timestamp=-62_135_596_800_001),  # year 0
            # Its own receivedAt: the record's time is not needed.
            Record(
                orjson.dumps({**event, "receivedAt": "2026-11-23T10:00:00Z"}),
                timestamp=253_402_300_800_000,
            ),
            Record(orjson.dumps({**event, "timestamp": "9999-12-31T23:59:59-01:00"})),
            Record(orjson.dumps(event)),
        ],
        KEYS,
    )
    assert [r.reason for r in rejections] == ["invalid_timestamp"] * 3
    assert "record's timestamp" in rejections[0].message
    assert len(envelopes) == 2


def test_an_empty_message_id_gets_one() -> None:
    raw = orjson.dumps(
        {
            "type": "track",
            "event": "E",
            "userId": "u",
            "messageId": "",
            "receivedAt": "2026-11-23T10:00:00Z",
            "timestamp": "2026-11-23T10:00:00Z",
        }
    )
    (env,), _ = decode([Record(raw)], KEYS)
    assert env.event["messageId"] == derived_message_id(Record(raw))


def test_the_32_kb_rule_is_the_gateways() -> None:
    """32 KB on the event as its client sent it: a producer's record is that; a record the
    gateway wrote says it in the sent-bytes header, and may be up to 64 KB with the stamps."""

    def sized(size: int, headers: list[tuple[str, bytes]] | None = None) -> Record:
        head = b'{"type":"track","event":"E","userId":"u","p":"'
        raw = head + b"x" * (size - len(head) - 2) + b'"}'
        assert len(raw) == size
        return Record(raw, headers=[("write-key", b"wk-web"), *(headers or [])])

    limit = spec.MAX_EVENT_BYTES
    envelopes, rejections = decode(
        [
            sized(limit),
            sized(limit + 1),
            sized(48_000, [("sent-bytes", b"%d" % limit)]),
            sized(48_000, [("sent-bytes", b"%d" % (limit + 1))]),
            sized(spec.MAX_RECORD_BYTES + 1, [("sent-bytes", b"100")]),
            sized(48_000, [("sent-bytes", b"not a number")]),
        ],
        KEYS,
    )
    assert len(envelopes) == 2
    assert [r.reason for r in rejections] == ["event_too_large"] * 4
    assert [r.offset for r in rejections] == [7] * 4
    assert "as sent" in rejections[0].message and "record" in rejections[2].message


def test_deep_nesting_and_long_nested_names_are_refused() -> None:
    def deep(levels: int) -> bytes:
        return b'{"type":"track","event":"E","userId":"u","properties":' + (
            b'{"a":' * (levels - 1) + b"1" + b"}" * (levels - 1) + b"}"
        )

    envelopes, rejections = decode(
        [
            Record(deep(spec.MAX_DEPTH)),
            Record(deep(spec.MAX_DEPTH + 1)),
            Record(deep(300)),  # more than orjson writes: the DLQ record still can be written
            Record(deep(1100)),  # more than orjson reads
            Record(
                orjson.dumps(
                    {
                        "type": "track",
                        "event": "E",
                        "userId": "u",
                        "properties": {"a": {"k" * 256: 1}},
                    }
                )
            ),
        ],
        KEYS,
    )
    assert len(envelopes) == 1
    assert [r.reason for r in rejections] == [
        "nesting_too_deep",
        "nesting_too_deep",
        "invalid_json",
        "name_too_long",
    ]
    for rejection in rejections:
        letter = orjson.loads(rejection.to_record("events.dlq", "events.raw").value)
        assert letter["reason"] == rejection.reason
        kept = letter["payload"] if letter["payload"] is not None else letter["raw"]
        assert kept, "the dead letter keeps what was sent"
    assert orjson.loads(rejections[1].to_record("d", "r").value)["raw"].encode() == deep(300)


def test_an_unforeseen_failure_costs_only_its_record() -> None:
    good = orjson.dumps({"type": "track", "event": "E", "userId": "u"})
    # A header that is not a (name, value) pair: no Kafka client makes one, which is the point.
    broken = Record(good, headers=[("write-key",)])  # type: ignore[list-item]
    envelopes, rejections = decode([Record(good), broken, Record(good, offset=9)], KEYS)
    assert [e.offset for e in envelopes] == [7, 9]
    (rejection,) = rejections
    assert rejection.reason == "stage_error" and rejection.stage == "decode"
    assert "ValueError" in rejection.message
