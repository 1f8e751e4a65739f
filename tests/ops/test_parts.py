"""The console's parts on their own: status records of both formats, times, the store's
retention, the debugger's bounds and search, and reading a topic from a time on the
embedded broker (whose offsets_for_times answers 0 and whose ListOffsets can be wrong)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from router.broker.clients import BatchSender, OutRecord
from router.broker.topics import Topics, ensure_topics
from router.config import KafkaSettings
from router.ops.debugger import Filters, SourceTail
from router.ops.explain import Explainer
from router.ops.reading import InvalidMoment, TopicReader, parse_moment
from router.ops.status import parse_status
from router.ops.store import Batch, Letter, Store, list_letters
from tests.ops.helpers import WRITE_KEY, hook, status_v2, unique_kafka, workspace


def test_status_records_of_both_formats() -> None:
    record = parse_status(
        orjson.dumps(
            status_v2(
                "hook", "delivered", ["a", None], attempts=[1, 3], latency_ms=[250, None], at=10.0
            )
        )
    )
    assert record is not None
    assert (record.destination, record.outcome, record.at) == ("hook", "delivered", 10.0)
    assert [(e.message_id, e.attempt, e.latency) for e in record.events] == [
        ("a", 1, 0.25),
        (None, 3, None),
    ]
    old = parse_status(
        orjson.dumps(
            {
                "v": 1,
                "destination": "hook",
                "messageId": "m",
                "outcome": "retry",
                "attempt": 2,
                "reason": "http_503",
                "at": "2026-11-23T10:00:00.000Z",
            }
        )
    )
    assert old is not None
    assert [(e.message_id, e.attempt) for e in old.events] == [("m", 2)]
    assert old.reason == "http_503"
    for bad in (
        b"",
        b"not json",
        b"[]",
        b'{"v": 2, "destination": "x"}',
        b'{"v": 2, "destination": "x", "outcome": "lost", "at": "2026-01-01T00:00:00Z",'
        b' "messageIds": []}',
        b'{"v": 2, "destination": "x", "outcome": "retry", "at": "yesterday", "messageIds": []}',
    ):
        assert parse_status(bad) is None


def test_moments() -> None:
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert parse_moment("now", now=now) == now
    assert parse_moment("2h", now=now) == now - timedelta(hours=2)
    assert parse_moment("90m", now=now) == now - timedelta(minutes=90)
    assert parse_moment("2026-11-23T08:00:00Z", now=now) == datetime(2026, 11, 23, 8, tzinfo=UTC)
    assert parse_moment("2026-11-22", now=now) == datetime(2026, 11, 22, tzinfo=UTC)
    with pytest.raises(InvalidMoment, match="not a time"):
        parse_moment("last tuesday", now=now)


def _letter(offset: int, failed_at: float) -> Letter:
    return Letter(
        destination="hook",
        partition=0,
        offset=offset,
        message_id=f"m{offset}",
        source_id="web",
        reason="http_400",
        attempts=1,
        failed_at=failed_at,
        status=400,
        event_type="track",
        event_name="Clicked",
        body=b'{"event": {"type": "track"}}',
    )


async def test_retention_keeps_live_letters() -> None:
    store = Store(None, retention=3600)
    await store.open()
    try:
        now = time.time()
        old = parse_status(orjson.dumps(status_v2("hook", "delivered", ["old"], at=now - 7200)))
        new = parse_status(orjson.dumps(status_v2("hook", "delivered", ["new"], at=now)))
        assert old is not None and new is not None
        batch = Batch(
            statuses=[old, new],
            letters=[_letter(1, now - 7200), _letter(2, now - 7200)],
            redrives=[("hook", 0, 2, now - 7200)],
        )
        await store.call(store.fold, batch)
        await store.call(store.purge, now)
        ids = await store.call(
            lambda c: [r[0] for r in c.execute("SELECT message_id FROM outcomes")]
        )
        assert ids == ["new"]
        letters = await store.call(lambda c: list_letters(c, "hook", live=False))
        # The old live letter stays (it still waits for a person); the redriven one is gone.
        assert [x["id"] for x in letters["letters"]] == ["0:1"]
    finally:
        await store.close()


def _record(offset: int, event: Any, *, key: str = WRITE_KEY) -> Any:
    class Record:
        topic = "events.raw"
        partition = 0
        timestamp = int(time.time() * 1000)
        headers = [("write-key", key.encode())]

    record = Record()
    record.offset = offset  # type: ignore[attr-defined]
    record.value = orjson.dumps(event) if not isinstance(event, bytes) else event  # type: ignore[attr-defined]
    return record


def test_debugger_keeps_the_newest_per_source_and_searches_what_it_shows(tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    ws = workspace(
        kafka,
        tmp_path,
        [hook("hook", "http://127.0.0.1:9/h")],
        sources=[
            {
                "id": "web",
                "write_keys": [WRITE_KEY],
                "middleware": [{"type": "drop_fields", "fields": ["properties.secret"]}],
            },
            {"id": "app", "write_keys": ["wk-app"]},
        ],
    )
    tail = SourceTail(Explainer(ws, Topics()), kafka, Topics(), size=3, lookback=60)
    events = [
        {
            "type": "track",
            "event": f"E{i}",
            "userId": "u",
            "messageId": f"m{i}",
            "properties": {"secret": f"hidden-{i}"},
        }
        for i in range(5)
    ]
    records = [_record(i, e) for i, e in enumerate(events)]
    records.append(_record(5, {"type": "track", "userId": "u"}))  # no event name: rejected
    records.append(_record(6, b"not json"))  # rejected, shown under its write key's source
    records.append(_record(8, b"not json", key="wk-unknown"))  # no source: not shown
    records.append(_record(7, {"type": "identify", "userId": "u"}, key="wk-app"))
    tail.add(records)
    kept = [e.message_id for e in tail.entries["web"]]
    assert kept == ["m4", None, None]  # the newest 3 of web
    assert "m4" in tail.by_message and "m3" not in tail.by_message
    reasons = [tail.view(e)["rejected"] for e in tail.entries["web"]]
    assert [r and r["reason"] for r in reasons] == [None, "missing_event", "invalid_json"]
    assert tail.view(tail.entries["web"][-1])["payload"] is None
    assert [e.kind for e in tail.entries["app"]] == ["identify"]
    view = tail.view(tail.entries["web"][0])
    assert view["payload"]["properties"] == {}  # properties.secret dropped by middleware
    assert view["routes"] == [
        {"destination": "hook", "state": "routed", "reason": None, "detail": None}
    ]
    assert tail.query("web", Filters.of("hidden-4", None, None), 10) == []
    assert [e.message_id for e in tail.query("web", Filters.of("m4", None, None), 10)] == ["m4"]
    assert tail.query("web", Filters.of(None, "identify", None), 10) == []
    assert [e.message_id for e in tail.query("web", Filters.of(None, None, "e4"), 10)] == ["m4"]


@pytest.mark.integration
async def test_reading_from_a_time_skips_what_is_older(kafka: KafkaSettings) -> None:
    kafka = unique_kafka(kafka)
    topic = f"{kafka.topic_prefix}reading"
    await ensure_topics(kafka, [topic])
    now = int(time.time() * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(
                topic, b"old-%d" % i, key=b"k", partition=0, timestamp_ms=now - 3_600_000 + i
            )
        # Batched produces (what makes the embedded broker's ListOffsets answer wrong).
        await BatchSender(producer).send(
            [OutRecord(topic, b"k", b"new-%d" % i, (), 0) for i in range(40)]
        )
    finally:
        await producer.stop()
    async with TopicReader(kafka, role="test") as reader:
        partitions = await reader.partitions([topic])
        assert len(partitions) == 2
        positions = await reader.start_at(partitions, since_ms=now - 60_000)
        floors = {tp: p.not_before for tp, p in positions.items()}
        values = [r.value async for batch in reader.read_to_end(not_before=floors) for r in batch]
    assert values == [b"new-%d" % i for i in range(40)]


POISON = {
    "type": "track",
    "event": "Edge",
    "userId": "u",
    # A calendar edge the decode stage cannot stamp (it raises OverflowError today).
    "timestamp": "0001-01-01T00:00:00+01:00",
}


def test_one_bad_record_never_stops_the_debugger(tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    ws = workspace(kafka, tmp_path, [hook("hook", "http://127.0.0.1:9/h")])
    good = [
        _record(i, {"type": "track", "event": "Fine", "userId": "u", "messageId": f"g{i}"})
        for i in range(3)
    ]
    tail = SourceTail(Explainer(ws, Topics()), kafka, Topics(), size=10, lookback=60)
    tail._add_isolated([good[0], _record(9, POISON), *good[1:]])
    # Left out, or (once the decode stage rejects it) listed as rejected: never fatal.
    kept = [e.message_id for e in tail.entries["web"] if e.rejected is None]
    assert kept == ["g0", "g1", "g2"]


def test_debugger_decodes_only_what_it_can_keep(tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    ws = workspace(kafka, tmp_path, [hook("hook", "http://127.0.0.1:9/h")])
    tail = SourceTail(Explainer(ws, Topics()), kafka, Topics(), size=5, lookback=60)
    records = [
        _record(i, {"type": "track", "event": "E", "userId": "u", "messageId": f"m{i}"})
        for i in range(50)
    ]
    assert [r.offset for r in tail.newest(records)] == [45, 46, 47, 48, 49]
    tail.add(records)
    assert [e.message_id for e in tail.entries["web"]] == [f"m{i}" for i in range(45, 50)]
    assert tail.read == 50
