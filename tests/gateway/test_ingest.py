"""What the gateway writes for what it accepts: paths, auth forms, merging, stamping, DLQ."""

from __future__ import annotations

import asyncio
import gc
import gzip
import time
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from router import gc_tuning, spec
from router.broker.topics import Topics
from router.config import KafkaSettings
from router.gateway import Gateway
from tests.gateway.conftest import SERVER_KEY, WEB_KEY, Client, basic, make_workspace
from tests.kafka_helpers import consume, values

OK = {"success": True}

SHORT_PATHS = [
    ("/v1/t", {"event": "Clicked"}, "track"),
    ("/v1/i", {"traits": {"plan": "pro"}}, "identify"),
    ("/v1/p", {"name": "Home"}, "page"),
    ("/v1/s", {"name": "Feed"}, "screen"),
    ("/v1/g", {"groupId": "g1"}, "group"),
    ("/v1/a", {"previousId": "anon-1"}, "alias"),
    ("/v1/track", {"event": "Clicked"}, "track"),
    ("/v1/identify", {}, "identify"),
    ("/v1/page", {}, "page"),
    ("/v1/screen", {}, "screen"),
    ("/v1/group", {"groupId": "g1"}, "group"),
    ("/v1/alias", {"previousId": "anon-1"}, "alias"),
]


async def test_every_single_call_path(client: Client, kafka: KafkaSettings, topics: Topics) -> None:
    for i, (path, fields, _kind) in enumerate(SHORT_PATHS):
        body = {"userId": f"u{i}", "messageId": f"m{i}", "writeKey": WEB_KEY, **fields}
        # analytics-next labels its JSON text/plain; the path decides the type, not the body.
        status, answer, _ = await client.post(
            path, body, headers={"Content-Type": "text/plain", **basic(WEB_KEY)}
        )
        assert (status, answer) == (200, OK), path
    records = await consume(kafka, topics.raw, expect=len(SHORT_PATHS))
    got = {e["messageId"]: e for e in values(records)}
    assert len(got) == len(SHORT_PATHS)
    for i, (path, _fields, kind) in enumerate(SHORT_PATHS):
        assert got[f"m{i}"]["type"] == kind, path
        assert "writeKey" not in got[f"m{i}"]


@pytest.mark.parametrize(
    "headers, body_key",
    [
        (basic(SERVER_KEY), None),
        ({"X-Write-Key": SERVER_KEY}, None),
        ({}, SERVER_KEY),
        # Headers win over the body (analytics-python sends both, always the same).
        (basic(SERVER_KEY), "wk-nobody"),
    ],
    ids=["basic", "x-write-key", "body", "basic-over-body"],
)
async def test_write_key_forms(
    client: Client,
    kafka: KafkaSettings,
    topics: Topics,
    headers: dict[str, str],
    body_key: str | None,
) -> None:
    body: dict[str, Any] = {"userId": "u1", "event": "Clicked"}
    if body_key:
        body["writeKey"] = body_key
    assert (await client.post("/v1/track", body, headers=headers))[:2] == (200, OK)
    [record] = await consume(kafka, topics.raw, expect=1)
    assert dict(record.headers)["write-key"] == SERVER_KEY.encode()


async def test_batch_merges_context_and_corrects_timestamps(
    client: Client, kafka: KafkaSettings, topics: Topics
) -> None:
    body = {
        "writeKey": WEB_KEY,
        "sentAt": "2026-01-01T00:00:10.000Z",
        "context": {"library": {"name": "batch-lib"}, "ip": "1.2.3.4"},
        "integrations": {"All": False, "Mixpanel": True},
        "batch": [
            {
                "type": "track",
                "userId": "u1",
                "event": "A",
                "messageId": "m1",
                "timestamp": "2026-01-01T00:00:00.000Z",
                "context": {"ip": "5.6.7.8"},
                "integrations": {"Mixpanel": False},
                "writeKey": WEB_KEY,
            },
            {
                "type": "identify",
                "anonymousId": "a2",
                "messageId": "m2",
                "receivedAt": "1999-01-01T00:00:00Z",
            },
            {"type": "page", "userId": "u3", "name": "Home"},  # no messageId: one is set
        ],
    }
    assert (await client.post("/v1/batch", body))[:2] == (200, OK)
    records = await consume(kafka, topics.raw, expect=3)
    got = {e.get("userId") or e.get("anonymousId"): e for e in values(records)}
    first, second, third = got["u1"], got["a2"], got["u3"]

    # The item's own keys win; the batch fills the rest.
    assert first["context"] == {"library": {"name": "batch-lib"}, "ip": "5.6.7.8"}
    assert first["integrations"] == {"All": False, "Mixpanel": False}
    assert second["context"] == body["context"] and second["integrations"] == body["integrations"]
    assert "writeKey" not in first

    # timestamp = receivedAt - (sentAt - originalTimestamp): it happened 10 s before sending.
    received = spec.parse_timestamp(first["receivedAt"], "receivedAt")
    assert first["originalTimestamp"] == "2026-01-01T00:00:00.000Z"
    assert first["sentAt"] == "2026-01-01T00:00:10.000Z"
    corrected = spec.parse_timestamp(first["timestamp"], "timestamp")
    assert (received - corrected).total_seconds() == pytest.approx(10.0, abs=0.001)
    # The server sets receivedAt on arrival, whatever the client claims.
    assert second["receivedAt"] == first["receivedAt"] != "1999-01-01T00:00:00Z"
    assert second["timestamp"] == second["receivedAt"]
    assert len(third["messageId"]) == 36


async def test_gzip_body(client: Client, kafka: KafkaSettings, topics: Topics) -> None:
    body = {"batch": [{"type": "track", "userId": "u1", "event": "Zipped"}], "writeKey": WEB_KEY}
    status, answer, _ = await client.post(
        "/v1/batch", data=gzip.compress(orjson.dumps(body)), headers={"Content-Encoding": "gzip"}
    )
    assert (status, answer) == (200, OK)
    [event] = values(await consume(kafka, topics.raw, expect=1))
    assert event["event"] == "Zipped"


async def test_import_path_and_empty_batch(
    client: Client, kafka: KafkaSettings, topics: Topics
) -> None:
    assert (await client.post("/v1/batch", {"batch": [], "writeKey": WEB_KEY}))[:2] == (200, OK)
    body = {"batch": [{"type": "track", "userId": "u1", "event": "Imported"}], "writeKey": WEB_KEY}
    assert (await client.post("/v1/import", body))[:2] == (200, OK)
    assert (await client.post("/v1/b", body))[:2] == (200, OK)
    events = values(await consume(kafka, topics.raw, expect=2))
    assert [e["event"] for e in events] == ["Imported", "Imported"]


async def test_partly_invalid_batch_keeps_every_item(
    client: Client, kafka: KafkaSettings, topics: Topics, registry: CollectorRegistry
) -> None:
    """Valid items go to events.raw, invalid ones to events.dlq; the answer is 200."""
    big = "x" * spec.MAX_EVENT_BYTES
    body = {
        "writeKey": WEB_KEY,
        "sentAt": "2026-01-01T00:00:10.000Z",
        "batch": [
            {"type": "track", "userId": "u1", "event": "Good", "messageId": "good-1"},
            {"type": "track", "event": "No Identity", "messageId": "bad-1"},
            {"userId": "u2", "event": "No Type", "messageId": "bad-2"},
            {"type": "track", "userId": "u3", "event": "Big", "properties": {"blob": big}},
            "not an object",
            {"type": "group", "userId": "u4", "messageId": "bad-5"},
            {"type": "identify", "userId": "u5", "messageId": "good-2"},
        ],
    }
    status, answer, _ = await client.post("/v1/batch", body)
    assert status == 200
    assert answer["success"] is True
    assert answer["accepted"] == 2 and answer["rejectedCount"] == 5
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [
        (1, "missing_identity"),
        (2, "missing_type"),
        (3, "event_too_large"),
        (4, "invalid_event"),
        (5, "missing_group_id"),
    ]
    assert all(r["message"] for r in answer["rejected"])

    good = values(await consume(kafka, topics.raw, expect=2))
    assert sorted(e["messageId"] for e in good) == ["good-1", "good-2"]

    dlq = await consume(kafka, topics.dlq, expect=5)
    dead = [orjson.loads(r.value) for r in dlq]
    assert sorted(d["reason"] for d in dead) == sorted(
        ["missing_identity", "missing_type", "event_too_large", "invalid_event", "missing_group_id"]
    )
    for record, letter in zip(dlq, dead, strict=True):
        assert letter["stage"] == "gateway" and letter["sourceId"] == "web" and letter["message"]
        assert letter["details"]["path"] == "/v1/batch"
        assert letter["input"]["topic"] == "http:/v1/batch"
        assert dict(record.headers)["reason"] == letter["reason"].encode()
        assert dict(record.headers)["write-key"] == WEB_KEY.encode()
    no_identity = next(d for d in dead if d["reason"] == "missing_identity")
    # Kept whole, with what a replay needs to stamp it like the gateway would have.
    assert no_identity["payload"]["messageId"] == "bad-1"
    assert no_identity["payload"]["sentAt"] == "2026-01-01T00:00:10.000Z"
    assert no_identity["payload"]["receivedAt"]
    assert "writeKey" not in no_identity["payload"]
    assert next(d for d in dead if d["reason"] == "invalid_event")["payload"] == "not an object"

    sample = registry.get_sample_value
    assert sample("router_gateway_events_accepted_total", {"source": "web"}) == 2
    assert sample("router_gateway_events_dead_lettered_total", {"reason": "missing_type"}) == 1
    assert sample("router_gateway_events_rejected_total", {"reason": "missing_identity"}) == 1


async def test_client_metrics_path_is_accepted_and_dropped(
    client: Client, kafka: KafkaSettings, topics: Topics
) -> None:
    body = {"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1}]}
    assert (await client.post("/v1/m", body, headers={"Content-Type": "text/plain"}))[:2] == (
        200,
        OK,
    )
    assert await consume(kafka, topics.raw, settle=0.5) == []


async def test_request_metrics(client: Client, registry: CollectorRegistry) -> None:
    await client.post("/v1/track", {"userId": "u1", "event": "E", "writeKey": WEB_KEY})
    await client.post("/v1/track", {"userId": "u1", "writeKey": WEB_KEY})
    await client.post("/v1/nowhere", {})
    sample = registry.get_sample_value
    assert sample("router_gateway_requests_total", {"path": "/v1/track", "status": "200"}) == 1
    assert sample("router_gateway_requests_total", {"path": "/v1/track", "status": "400"}) == 1
    assert sample("router_gateway_requests_total", {"path": "other", "status": "404"}) == 1
    assert sample("router_gateway_events_rejected_total", {"reason": "missing_event"}) == 1
    assert sample("router_gateway_request_duration_seconds_count", {"path": "/v1/track"}) == 2
    assert sample("router_gateway_events_accepted_total", {"source": "web"}) == 1


async def test_health(gateway: Gateway) -> None:
    assert gateway.health()[0] is True


async def test_the_collector_runs_less_often_while_the_gateway_serves(
    kafka: KafkaSettings,
) -> None:
    before = gc.get_threshold()
    assert before != gc_tuning.THRESHOLDS
    async with Gateway(make_workspace(kafka), CollectorRegistry(), port=0):
        assert gc.get_threshold() == gc_tuning.THRESHOLDS
    assert gc.get_threshold() == before


async def test_stop_drains_requests_in_flight(kafka: KafkaSettings, topics: Topics) -> None:
    """Stopping mid-request: requests being handled still get their ack and their 200."""
    registry = CollectorRegistry()
    gateway = Gateway(make_workspace(kafka), registry, port=0)
    await gateway.start()
    assert gateway._accumulator is not None
    sender = gateway._accumulator.sender
    send = sender.send
    writing = asyncio.Event()

    async def slow_send(records: Any) -> None:
        writing.set()
        await asyncio.sleep(0.3)  # Kafka is slow: requests are in flight when stop() begins
        await send(records)

    sender.send = slow_send  # type: ignore[method-assign]
    url = f"http://127.0.0.1:{gateway.port}/v1/batch"
    answers: dict[str, tuple[int | str, float]] = {}

    async def post(session: aiohttp.ClientSession, i: int) -> None:
        event = {"type": "track", "userId": f"u{i}", "event": "E", "messageId": f"s{i}"}
        body = orjson.dumps({"writeKey": WEB_KEY, "batch": [event]})
        try:
            async with session.post(url, data=body) as resp:
                answers[f"s{i}"] = (resp.status, time.monotonic())
        except aiohttp.ClientError as exc:
            answers[f"s{i}"] = (type(exc).__name__, time.monotonic())

    async with aiohttp.ClientSession() as session:
        posting = [asyncio.create_task(post(session, i)) for i in range(20)]
        async with asyncio.timeout(5):
            await writing.wait()
        stop_began = time.monotonic()
        await gateway.stop()
        await asyncio.gather(*posting)

    accepted = {mid for mid, (status, _at) in answers.items() if status == 200}
    assert any(at > stop_began for status, at in answers.values() if status == 200), answers
    # Anything else was refused before it was handled (clients retry those), never cut off.
    assert {s for s, _at in answers.values()} <= {200, "ServerDisconnectedError"}, answers
    written = {e["messageId"] for e in values(await consume(kafka, topics.raw, settle=0.5))}
    assert accepted <= written
    assert gateway.health() == (False, "not started")


def deep_object(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def with_deep(body: Any, **levels: int) -> bytes:
    """``body`` as JSON with each ``"<name>"`` string replaced by ``levels[name]`` nested
    objects: deeper than orjson (and so the test client) writes."""
    data = orjson.dumps(body)
    for name, depth in levels.items():
        data = data.replace(b'"<%s>"' % name.encode(), b'{"a":' * depth + b"1" + b"}" * depth)
    return data


CALENDAR_EDGES = [
    {"timestamp": "9999-12-31T23:59:59-01:00"},
    {"timestamp": "0001-01-01T00:00:00+01:00"},
    {"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T23:59:59Z"},
]


@pytest.mark.parametrize("fields", CALENDAR_EDGES)
async def test_timestamps_at_the_calendars_edges_are_400(
    client: Client, fields: dict[str, str]
) -> None:
    body = {"userId": "u1", "event": "E", "writeKey": WEB_KEY, **fields}
    status, answer, _ = await client.post("/v1/track", body)
    assert (status, answer["code"]) == (400, "invalid_timestamp") and answer["message"]


async def test_deep_nesting_is_400(client: Client) -> None:
    for levels in (spec.MAX_DEPTH, 300, 1000):
        body = {
            "userId": "u1",
            "event": "E",
            "writeKey": WEB_KEY,
            "properties": "<deep>",
        }
        status, answer, _ = await client.post("/v1/track", data=with_deep(body, deep=levels))
        assert (status, answer["code"]) == (400, "nesting_too_deep"), levels
        assert str(spec.MAX_DEPTH) in answer["message"]
    fits = {"userId": "u1", "event": "E", "writeKey": WEB_KEY}
    fits["properties"] = deep_object(spec.MAX_DEPTH - 1)  # + the event itself: the limit
    assert (await client.post("/v1/track", fits))[0] == 200
    nested_name = {"a": {"b": {"k" * 256: 1}}}
    body = {"userId": "u1", "event": "E", "writeKey": WEB_KEY, "properties": nested_name}
    status, answer, _ = await client.post("/v1/track", body)
    assert (status, answer["code"]) == (400, "name_too_long")


async def test_only_the_hostile_items_of_a_batch_are_refused(
    client: Client, kafka: KafkaSettings, topics: Topics
) -> None:
    good = {"type": "track", "userId": "u1", "event": "Good"}
    hostile = [
        *({**good, "event": "Edge", **fields} for fields in CALENDAR_EDGES),
        {**good, "event": "Deep", "properties": deep_object(100)},
        {**good, "event": "Deeper than JSON writes", "context": "<deeper>"},
    ]
    body = {"writeKey": WEB_KEY, "batch": [good, *hostile, {**good, "messageId": ""}]}
    status, answer, _ = await client.post("/v1/batch", data=with_deep(body, deeper=400))
    assert status == 200 and answer["accepted"] == 2
    assert [(r["index"], r["code"]) for r in answer["rejected"]] == [
        (1, "invalid_timestamp"),
        (2, "invalid_timestamp"),
        (3, "invalid_timestamp"),
        (4, "nesting_too_deep"),
        (5, "nesting_too_deep"),
    ]
    written = values(await consume(kafka, topics.raw, expect=2))
    # An empty messageId is no id: the router sets one, so the event can be traced.
    assert all(len(e["messageId"]) == 36 for e in written)
    dead = values(await consume(kafka, topics.dlq, expect=5))
    assert sorted(d["details"]["index"] for d in dead) == [1, 2, 3, 4, 5]
    deepest = next(d for d in dead if d["details"]["index"] == 5)
    assert deepest["payload"]["event"] == "Deeper than JSON writes"  # kept, cut below 200 levels


async def test_records_say_how_large_their_event_was_as_sent(
    client: Client, kafka: KafkaSettings, topics: Topics
) -> None:
    """The processor holds records to 32 KB as sent, like the gateway: the size travels along."""
    single = orjson.dumps({"userId": "u1", "event": "Single", "writeKey": WEB_KEY})
    assert (await client.post("/v1/track", data=single))[0] == 200
    # A batch under 32 KB: each item was at most that large. Over it: each item is measured.
    small = {"writeKey": WEB_KEY, "batch": [{"type": "track", "userId": "u1", "event": "Small"}]}
    assert (await client.post("/v1/batch", small))[0] == 200
    item = {"type": "track", "userId": "u1", "event": "Large", "properties": {"b": "x" * 20_000}}
    context = {"blob": "y" * 20_000}  # merged into the item: a 40 KB record of a 20 KB event
    large = {"writeKey": WEB_KEY, "context": context, "batch": [item, item]}
    assert (await client.post("/v1/batch", large))[0] == 200
    records = await consume(kafka, topics.raw, expect=4)
    sizes = {orjson.loads(r.value)["event"]: (dict(r.headers), len(r.value)) for r in records}
    assert int(sizes["Single"][0]["sent-bytes"]) == len(single)
    assert int(sizes["Small"][0]["sent-bytes"]) == len(orjson.dumps(small))
    headers, length = sizes["Large"]
    assert int(headers["sent-bytes"]) == len(orjson.dumps(item))
    assert length > spec.MAX_EVENT_BYTES
    assert headers["write-key"] == WEB_KEY.encode()
