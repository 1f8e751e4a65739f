"""Stage 1-2: decode, validate, find the source; never raise on input."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from router.pipeline.decode import decode

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
