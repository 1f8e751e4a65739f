"""Stage 2b: records outside their user's partition move to events.rekeyed before dedup."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.broker.clients import OutRecord
from router.broker.partitioning import key_partition
from router.broker.topics import Topics
from router.pipeline.compile import compile_workspace
from router.pipeline.dedup import Deduplicator
from router.pipeline.pipeline import Pipeline
from router.pipeline.rekey import MESSAGE_ID_HEADER, ORIGIN_HEADER
from router.workspace import validate_workspace

PARTITIONS = 4
TOPICS = Topics()


@dataclass
class Record:
    value: bytes
    partition: int
    offset: int
    topic: str = TOPICS.raw
    timestamp: int = 1_795_000_000_000
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("write-key", b"wk")])


def home(user: str) -> int:
    return key_partition(user.encode(), PARTITIONS)


def away(user: str) -> int:
    return (home(user) + 1) % PARTITIONS


def event(user: str, message_id: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"type": "track", "event": "Clicked", "userId": user, **extra}
    if message_id:
        body["messageId"] = message_id
    return orjson.dumps(body)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    ws = validate_workspace(
        {
            "processor": {"state_dir": str(tmp_path)},
            "sources": [
                {"id": "web", "write_keys": ["wk"]},
                {
                    "id": "boom",
                    "write_keys": ["wk-boom"],
                    "middleware": [
                        {"type": "function", "function": "tests.pipeline.user_functions:explode"}
                    ],
                },
            ],
            "destinations": [
                {
                    "id": "hook",
                    "name": "Hook",
                    "type": "webhook",
                    "settings": {"url": "http://127.0.0.1:9/x"},
                    "sources": ["web", "boom"],
                }
            ],
        }
    )
    compiled = compile_workspace(ws, TOPICS)
    dedup = Deduplicator(tmp_path / "dedup", 3600)
    counts = {TOPICS.destination("hook"): PARTITIONS, TOPICS.raw: PARTITIONS}
    yield Pipeline(compiled, TOPICS, dedup, counts)
    dedup.close()


def read_back(record: OutRecord, offset: int) -> Record:
    """The record as the processor reads it from events.rekeyed."""
    assert record.partition is not None and record.timestamp_ms is not None
    return Record(
        record.value,
        record.partition,
        offset,
        topic=record.topic,
        timestamp=record.timestamp_ms,
        headers=list(record.headers),
    )


def test_records_outside_their_users_partition_move_with_what_they_need(
    pipeline: Pipeline,
) -> None:
    users = [f"user-{i}" for i in range(40)]
    records = [Record(event(u, f"m-{u}"), home(u), i) for i, u in enumerate(users)]
    records += [Record(event(u), away(u), 100 + i) for i, u in enumerate(users)]
    result = pipeline.process(records)

    moved = [r for r in result.outputs if r.topic == TOPICS.rekeyed]
    routed = [r for r in result.outputs if r.topic == TOPICS.destination("hook")]
    assert len(moved) == len(routed) == len(users)
    assert result.stats.rekeyed == {"web": len(users)}
    assert sum(len(keys) for keys in result.pending_keys.values()) == len(users)
    for record, user in zip(moved, users, strict=True):
        headers = dict(record.headers)
        assert record.key == user.encode() and record.partition == home(user)
        assert record.value == event(user), "the original bytes, unchanged"
        assert headers["write-key"] == b"wk"
        assert headers[ORIGIN_HEADER] == b"%d:%d:%d" % (
            away(user),
            100 + users.index(user),
            1_795_000_000_000,
        )
        assert record.timestamp_ms == 1_795_000_000_000
        assert headers[MESSAGE_ID_HEADER], "the id derived from the original record"


def test_a_moved_copy_is_processed_as_its_original_would_be(pipeline: Pipeline) -> None:
    user = "user-7"
    original = Record(event(user, sentAt="2026-11-23T10:00:01Z"), away(user), 55)
    (moved,) = pipeline.process([original]).outputs
    result = pipeline.process([read_back(moved, 3)])
    (out,) = result.outputs
    assert out.topic == TOPICS.destination("hook")
    delivered = orjson.loads(out.value)
    assert delivered["messageId"] == dict(moved.headers)[MESSAGE_ID_HEADER].decode()
    assert delivered["receivedAt"].startswith("2026-11-18")  # the original's record time
    assert result.stats.rekeyed == {}
    # The original read again (a replay before its offset was committed) moves again under the
    # same id, and its copy is a duplicate.
    (again,) = pipeline.process([original]).outputs
    assert dict(again.headers)[MESSAGE_ID_HEADER] == dict(moved.headers)[MESSAGE_ID_HEADER]
    replayed = pipeline.process([read_back(again, 4)])
    assert replayed.outputs == [] and replayed.stats.duplicates == {"web": 1}


def test_a_copy_that_fails_later_points_at_its_original(pipeline: Pipeline) -> None:
    user = "user-3"
    original = Record(event(user, "m-boom"), away(user), 81, headers=[("write-key", b"wk-boom")])
    (moved,) = pipeline.process([original]).outputs
    assert moved.topic == TOPICS.rekeyed
    (dead,) = pipeline.process([read_back(moved, 9)]).outputs
    body = orjson.loads(dead.value)
    assert dead.topic == TOPICS.dlq and body["reason"] == "middleware_error"
    assert body["input"] == {
        "topic": TOPICS.raw,
        "partition": away(user),
        "offset": 81,
        "timestamp": 1_795_000_000_000,
    }


def test_one_partition_or_no_dedup_moves_nothing(tmp_path: Path, pipeline: Pipeline) -> None:
    user = "user-9"
    records = [Record(event(user, "m-1"), away(user), 1)]
    compiled = pipeline.compiled
    for dedup, partitions in ((Deduplicator(tmp_path / "a", 3600), 1), (None, PARTITIONS)):
        counts = {TOPICS.destination("hook"): PARTITIONS, TOPICS.raw: partitions}
        result = Pipeline(compiled, TOPICS, dedup, counts).process(records)
        assert [r.topic for r in result.outputs] == [TOPICS.destination("hook")]
        if dedup is not None:
            dedup.close()


def test_router_headers_written_by_anyone_cannot_break_a_batch(pipeline: Pipeline) -> None:
    user = "user-5"
    odd_headers: list[list[tuple[str, Any]]] = [
        [(ORIGIN_HEADER, b"1:2:99999999999999999999"), (MESSAGE_ID_HEADER, None)],
        [(ORIGIN_HEADER, None), (MESSAGE_ID_HEADER, b"")],
        [(ORIGIN_HEADER, b"-1:x:3"), (MESSAGE_ID_HEADER, b"\xff\xfe")],
    ]
    records = [
        Record(event(user), home(user), i, headers=[("write-key", b"wk"), *headers])
        for i, headers in enumerate(odd_headers)
    ]
    result = pipeline.process(records)
    routed = [orjson.loads(r.value) for r in result.outputs]
    assert len(routed) == 3 and all(e["messageId"] for e in routed)
