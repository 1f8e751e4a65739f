"""The lane's parts without Kafka: offsets, backoff, pacing and the record formats."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import cast

import orjson
import pytest
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from destinations.base import Event, EventBatch, PartnerRequest, PartnerResponse, PluginContext
from destinations.http import HttpClient
from destinations.webhook import WebhookDestination, WebhookSettings
from destinations.webhook.encoder import WebhookEncoder
from router.config import DeliveryOptions, Destination
from router.delivery.classify import classify, received_at
from router.delivery.offsets import OffsetTracker
from router.delivery.records import (
    HEADER_ATTEMPT,
    HEADER_DUE,
    EventHead,
    Failure,
    InFlight,
    RetryState,
    Settled,
    dead_letter_records,
    decode_head,
    iso,
    retry_records,
    status_record,
)
from router.delivery.retry import RetryPolicy
from router.delivery.throttle import RateLimiter
from router.observability.delivery import LATENCY_BUCKETS
from router.observability.histogram import BatchHistogram
from router.ops.status import HISTOGRAM_SIZE, bucket_of, parse_status

TP = TopicPartition("dest.hook", 0)


def test_offsets_commit_only_the_finished_prefix() -> None:
    tracker = OffsetTracker()
    tracker.assign([TP])
    epoch = tracker.epoch(TP)
    assert epoch is not None
    for offset in (10, 11, 12, 13):
        tracker.add(TP, offset)
    tracker.finish(TP, 12, epoch)
    tracker.finish(TP, 11, epoch)
    assert tracker.committable() == {}  # 10 has no outcome yet
    tracker.finish(TP, 10, epoch)
    assert tracker.committable() == {TP: 13}
    tracker.committed({TP: 13})
    assert tracker.committable() == {}
    assert tracker.pending() == 1
    tracker.finish(TP, 13, epoch)
    assert tracker.committable() == {TP: 14} and tracker.pending() == 0


def test_offsets_finish_many_is_finish_for_each() -> None:
    rng = random.Random(2)
    for _ in range(200):
        one, many = OffsetTracker(), OffsetTracker()
        for tracker in (one, many):
            tracker.assign([TP])
            tracker.add_many(TP, list(range(100, 130)))
        offsets = list(range(100, 130))
        rng.shuffle(offsets)
        chunks = [offsets[i : i + rng.randint(1, 6)] for i in range(0, 30, 6)]
        for chunk in chunks:
            for offset in chunk:
                one.finish(TP, offset, one.epoch(TP) or 0)
            many.finish_many(TP, chunk, many.epoch(TP) or 0)
            assert one.committable() == many.committable()
            assert one.pending() == many.pending()


def test_offsets_ignore_work_from_a_previous_assignment() -> None:
    tracker = OffsetTracker()
    tracker.assign([TP])
    old = tracker.epoch(TP)
    assert old is not None
    tracker.add(TP, 5)
    tracker.revoke([TP])
    tracker.assign([TP])
    assert tracker.epoch(TP) != old and not tracker.owns(TP, old)
    tracker.finish(TP, 5, old)
    assert tracker.committable() == {}


def test_backoff_is_randomized_exponential_within_bounds() -> None:
    policy = RetryPolicy(backoff_min=10.0, backoff_max=300.0, window=4 * 3600.0)
    rng = random.Random(7)
    for attempt, (low, high) in {
        1: (10, 10),
        2: (10, 20),
        3: (20, 40),
        4: (40, 80),
        7: (300, 300),
        60: (300, 300),
        10_000: (300, 300),
    }.items():
        if low == high == 300:
            low = 150
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(low <= d <= high for d in delays), (attempt, min(delays), max(delays))
    assert len({round(policy.delay(3, rng), 6) for _ in range(20)}) > 1  # jittered


def test_retry_window_and_retry_after() -> None:
    policy = RetryPolicy.from_options(
        DeliveryOptions.model_validate(
            {"backoff_min": "1s", "backoff_max": "1s", "retry_window": "10s"}
        )
    )
    rng = random.Random(1)
    assert (
        policy.next_due(attempt=1, first_failure=100.0, now=100.0, retry_after=None, rng=rng)
        == 101.0
    )
    # Retry-After replaces the schedule (the partner said when), spread over a tenth more,
    # and is at least a second.
    due = policy.next_due(attempt=1, first_failure=100.0, now=100.0, retry_after=5, rng=rng)
    assert due is not None and 105.0 <= due <= 105.5
    due = policy.next_due(attempt=6, first_failure=100.0, now=100.0, retry_after=2, rng=rng)
    assert due is not None and 102.0 <= due <= 102.2  # not the exponential wait
    due = policy.next_due(attempt=1, first_failure=100.0, now=100.0, retry_after=0.1, rng=rng)
    assert due is not None and 101.0 <= due <= 101.1
    # Past the window (measured from the first failure): no more retries.
    assert (
        policy.next_due(attempt=9, first_failure=100.0, now=109.5, retry_after=None, rng=rng)
        is None
    )
    assert (
        policy.next_due(attempt=1, first_failure=100.0, now=100.0, retry_after=60, rng=rng) is None
    )


def test_rate_limiter_spaces_requests_and_holds() -> None:
    now = [0.0]
    limiter = RateLimiter(4.0, clock=lambda: now[0])
    assert [limiter.reserve() for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]
    now[0] = 10.0
    assert limiter.reserve() == 0.0
    limiter.hold(3.0)
    assert limiter.reserve() == pytest.approx(3.0)
    unlimited = RateLimiter(None, clock=lambda: now[0])
    assert [unlimited.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]


def item(**overrides: object) -> InFlight:
    event = {"type": "track", "event": "Signed Up", "messageId": "m-1", "userId": "u1"}
    fields: dict[str, object] = {
        "topic": "dest.hook",
        "partition": 1,
        "offset": 42,
        "key": b"u1",
        "raw": orjson.dumps(event),
        "headers": (("source", b"web"), (HEADER_ATTEMPT, b"1")),
        "decoded": event,
        "origin": "fresh",
        "attempt": 0,
        "first_failure": None,
        "epoch": 1,
    }
    if "event" in overrides:  # the item as the fetcher would have read that event
        overrides["decoded"] = overrides.pop("event")
    fields.update(overrides)
    fields["head"] = EventHead.of(fields["decoded"])  # type: ignore[arg-type]
    return InFlight(**fields)  # type: ignore[arg-type]


def test_retry_state_round_trip_and_retry_record() -> None:
    state = RetryState(attempt=3, first_failure=1000.5, due=1010.25, reason="http_503")
    assert RetryState.from_headers((("source", b"web"), *state.headers())) == state
    assert RetryState.from_headers((("source", b"web"),)) is None
    assert RetryState.from_headers(((HEADER_ATTEMPT, b"x"), (HEADER_DUE, b"1"))) is None
    settled = Settled("retry", [item()], 1000.5, "http_503", dues=[1010.25])
    (record,) = retry_records("dest.hook.retry", settled)
    assert record.key == b"u1" and record.value == item().raw
    headers = dict(record.headers)
    assert headers["source"] == b"web"
    assert [k for k, _ in record.headers].count(HEADER_ATTEMPT) == 1  # replaced, not appended
    assert RetryState.from_headers(record.headers) == RetryState(1, 1000.5, 1010.25, "http_503")


def webhook() -> WebhookDestination:
    destination = Destination.model_validate(
        {
            "id": "hook",
            "name": "Hook",
            "type": "webhook",
            "sources": ["web"],
            "settings": {
                "url": "https://example.com/in",
                "secret": "hmac-secret-123",
                "headers": {"Authorization": "Bearer tok-123456"},
            },
        }
    )
    return WebhookDestination(destination, PluginContext(http=HttpClient()))


def test_dead_letter_has_event_request_and_response_without_credentials() -> None:
    hook = webhook()
    request = hook.encode([item().event or {}])
    assert isinstance(request, PartnerRequest)
    response = PartnerResponse(
        400, (("Content-Type", "application/json"),), b'{"error": "bad Bearer tok-123456"}', 0.02
    )
    failure = Failure(
        "http_400",
        "HTTP 400 from example.com",
        False,
        status=400,
        request=hook.describe_request(request),
        response=hook.describe_response(response),
    )
    settled = Settled("dlq", [item()], 1000.0, "http_400", status=400, failure=failure)
    (record,) = dead_letter_records("dest.hook.dlq", settled, destination="hook", kind="webhook")
    assert b"tok-123456" not in record.value and b"hmac-secret-123" not in record.value
    body = orjson.loads(record.value)
    assert body["event"] == item().event and body["raw"] is None
    assert body["request"]["headers"]["Authorization"] == "***"
    assert orjson.loads(body["request"]["body"]) == item().event
    assert body["response"]["status"] == 400 and "***" in body["response"]["body"]
    assert body["error"] == {
        "reason": "http_400",
        "message": "HTTP 400 from example.com",
        "retriable": False,
    }
    assert body["input"] == {"topic": "dest.hook", "partition": 1, "offset": 42}
    assert (body["messageId"], body["sourceId"], body["attempts"]) == ("m-1", "web", 1)
    assert dict(record.headers)["router-reason"] == b"http_400"


def test_dead_letter_keeps_undecodable_input_as_text() -> None:
    broken = item(raw=b"\xffnot json", event=None)
    failure = Failure("undecodable", "the record value is not a JSON object", False)
    settled = Settled("dlq", [broken], 1.0, "undecodable", failure=failure)
    (record,) = dead_letter_records("d", settled, destination="hook", kind="webhook")
    body = orjson.loads(record.value)
    assert body["event"] is None and body["raw"].encode("latin-1") == b"\xffnot json"
    assert body["request"] is None and body["response"] is None


def test_status_record_is_one_per_request() -> None:
    items = [
        item(event={**(item().event or {}), "messageId": f"m-{n}"}, offset=n) for n in range(3)
    ]
    delivered = Settled(
        "delivered", items, 1_800_000_000.0, status=200, duration=0.01, latencies=[0.25, None, 1]
    )
    record = status_record("delivery.status", delivered, destination="hook", kind="webhook")
    assert record.key == b"hook"
    assert dict(record.headers) == {"destination": b"hook", "outcome": b"delivered"}
    body = orjson.loads(record.value)
    assert body["v"] == 2 and body["outcome"] == "delivered" and body["count"] == 3
    assert body["messageIds"] == ["m-0", "m-1", "m-2"] and body["attempts"] == [1, 1, 1]
    assert body["latencyMs"] == [250, None, 1000] and body["error"] is None
    assert body["at"] == "2027-01-15T08:00:00.000Z" and body["status"] == 200
    failure = Failure(
        "timeout", "no answer", True, summary={"request": {"url": "u"}, "response": None}
    )
    retry = Settled("retry", items[:2], 1.0, "timeout", failure=failure, dues=[3.0, 2.0])
    body = orjson.loads(status_record("s", retry, destination="hook", kind="webhook").value)
    assert body["dueAt"] == "1970-01-01T00:00:02.000Z" and body["latencyMs"] is None
    assert body["error"]["reason"] == "timeout" and body["error"]["request"] == {"url": "u"}
    assert body["error"]["event"]["messageId"] == "m-0"  # a sample of what was sent


def test_the_console_buckets_each_latency_where_the_agents_histogram_does() -> None:
    """The console reads latencies back from status records in whole milliseconds; each must
    land in the Prometheus bucket the agent counted it in. Rounded to nearest, a batch at
    50.3 ms came back as 50 ms: the console's P95 left (0.05, 0.1] and parted from Grafana's."""
    latencies = [
        bound + delta for bound in LATENCY_BUCKETS[:8] for delta in (-0.0004, 0.0, 0.0003, 0.0006)
    ]
    items = [
        item(event={**(item().event or {}), "messageId": f"m-{n}"}, offset=n)
        for n in range(len(latencies))
    ]
    delivered = Settled(
        "delivered", items, 1_800_000_000.0, status=200, duration=0.01, latencies=latencies
    )
    parsed = parse_status(status_record("s", delivered, destination="hook", kind="webhook").value)
    assert parsed is not None
    console = [0] * HISTOGRAM_SIZE
    for event in parsed.events:
        assert event.latency is not None
        console[bucket_of(event.latency)] += 1

    agent = BatchHistogram(
        "latency", "", ["destination"], LATENCY_BUCKETS, registry=CollectorRegistry()
    )
    agent.observe_many(("hook",), latencies)
    (family,) = agent.collect()
    cumulative = [s.value for s in family.samples if s.name.endswith("_bucket")]
    assert [sum(console[: i + 1]) for i in range(HISTOGRAM_SIZE)] == cumulative


def test_classify_groups_a_request_by_outcome() -> None:
    policy = RetryPolicy(1.0, 10.0, 60.0)
    rng = random.Random(3)
    items = [item(offset=n) for n in range(5)]
    (whole,) = classify(items, failed=None, at=1e9, policy=policy, rng=rng, status=200)
    assert whole.kind == "delivered" and whole.items == items and len(whole.latencies or []) == 5
    bad = Failure("http_400", "HTTP 400", False, status=400)
    busy = Failure("throttled", "slow down", True, retry_after=5.0)
    groups = classify(
        items, failed={1: bad, 3: busy, 4: bad}, at=1e9, policy=policy, rng=rng, status=200
    )
    summary = [(g.kind, g.reason, [i.offset for i in g.items]) for g in groups]
    assert summary == [
        ("delivered", None, [0, 2]),
        ("dlq", "http_400", [1, 4]),
        ("retry", "throttled", [3]),
    ]
    assert groups[2].dues is not None and 1e9 + 5 <= groups[2].dues[0] <= 1e9 + 5.5
    # Out of window: the whole request dead-letters as retries_exhausted.
    old = [item(attempt=4, first_failure=1e9 - 59.5)]
    (gone,) = classify(old, failed=busy, at=1e9, policy=policy, rng=rng)
    assert (gone.kind, gone.reason, gone.exhausted) == ("dlq", "retries_exhausted", True)


def test_received_at_fast_path_matches_the_parser() -> None:
    from router.spec import received_at_seconds

    rng = random.Random(9)
    for _ in range(2000):
        seconds = round(rng.uniform(0, 4e9), 3)
        text = iso(seconds)
        assert received_at(text) == pytest.approx(received_at_seconds(text), abs=1e-6)
    for odd in ("2026-11-23T10:00:00Z", "2026-11-23T10:00:00.5+01:00", 5, "garbage", None):
        assert received_at(odd) == received_at_seconds(odd)


def test_partner_request_is_hashable_and_frozen() -> None:
    request = PartnerRequest("POST", "u", (), b"")
    with pytest.raises(AttributeError):
        request.url = "other"  # type: ignore[misc]
    assert hash(request) == hash(PartnerRequest("POST", "u", (), b""))


def test_status_partition_and_time_match_kafka_and_spec() -> None:
    """The fast murmur2 / iso used for status records give exactly what they replace."""
    import os
    import random
    from datetime import UTC, datetime

    from aiokafka.partitioner import murmur2 as kafka_murmur2

    from router.broker.partitioning import murmur2
    from router.delivery.records import iso
    from router.spec import format_timestamp

    for length in range(200):
        for _ in range(5):
            data = os.urandom(length)
            assert murmur2(data) == kafka_murmur2(data)
    rng = random.Random(5)
    for i in range(20_000):
        seconds = rng.uniform(0, 4e9)
        if i % 2:
            seconds = round(seconds, 3) + rng.choice([0.0, 0.0005, -0.0005, 0.9999995])
        assert iso(seconds) == format_timestamp(datetime.fromtimestamp(seconds, UTC))


def test_records_with_precomputed_partition_are_the_producers() -> None:
    """Partitions computed in the lane (fast murmur2) are the producer's."""
    from aiokafka.partitioner import DefaultPartitioner

    partitions = list(range(7))
    items = [
        item(key=f"user-{n}".encode(), event={**(item().event or {}), "messageId": f"m{n}"})
        for n in range(50)
    ]
    settled = Settled("retry", items, 1.5, "http_503", dues=[12.25] * 50)
    for one, retry in zip(items, retry_records("r", settled, partitions=7), strict=True):
        assert retry.partition == DefaultPartitioner()(one.key, partitions, partitions)
    status = status_record("s", settled, destination="hook", kind="webhook", partitions=7)
    assert status.partition == DefaultPartitioner()(b"hook", partitions, partitions)


def test_a_dead_letter_of_an_event_orjson_cannot_write_keeps_its_text() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(300):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    event = {**(item().event or {}), "properties": deep}
    broken = item(event=event, raw=b'{"raw": "as it came"}')
    settled = Settled("dlq", [broken], 1.0, "encode", failure=Failure("encode", "deep", False))
    (record,) = dead_letter_records("d", settled, destination="hook", kind="webhook")
    body = orjson.loads(record.value)
    assert body["event"] is None and body["raw"] == '{"raw": "as it came"}'


def test_event_head_is_read_without_the_rest_and_the_event_on_first_use() -> None:
    raw = orjson.dumps(
        {
            "type": "track",
            "messageId": "m-9",
            "userId": 7,
            "receivedAt": "2026-11-23T10:00:01.100Z",
            "properties": {"deep": [{"messageId": "not this one"}] * 3},
        }
    )
    head = decode_head(raw)
    assert head == EventHead("m-9", "track", 7, "2026-11-23T10:00:01.100Z")
    for not_an_event in (b"", b"[1, 2]", b'"text"', b"{broken", b"\xff{}", None):
        assert decode_head(not_an_event) is None
    assert decode_head(b'{"messageId": 5}') == EventHead(messageId=5)  # values unchecked
    built = item(raw=raw, event=None)
    built.head = head
    assert built.decoded is None and built.message_id == "m-9"
    assert built.event == orjson.loads(raw) and built.decoded is built.event  # cached
    assert item(event={"messageId": 5}).message_id is None


def test_a_plugin_that_overrides_encode_reads_events_unless_it_says_otherwise() -> None:
    from tests.delivery.plugins import PickyWebhook, TrackOnlyWebhook

    class SplicesToo(WebhookDestination):
        reads_events = False

        def encode(self, events: Sequence[Event]) -> PartnerRequest:
            return super().encode(events)

    assert WebhookDestination.reads_events is False  # it splices the bytes as read
    assert TrackOnlyWebhook.reads_events is False  # inherits the same encode()
    assert PickyWebhook.reads_events is True  # its own encode() reads the events
    assert SplicesToo.reads_events is False


def test_webhook_encodes_from_bytes_and_message_ids_alone() -> None:
    settings = WebhookSettings(url="http://127.0.0.1:9/hook")
    raws = [b'{"messageId":"a","n":1}', b'{"messageId":"b","n":2}']
    batch = EventBatch([cast(Event, None)] * 2, raws, None, ["a", "b"])
    request = WebhookEncoder(settings, batched=True).encode(batch)
    assert request.body == b'{"batch":[' + b",".join(raws) + b"]}"
    assert request.message_ids == ("a", "b")
    one = EventBatch([cast(Event, None)], raws[:1], None, ["a"])
    single = WebhookEncoder(settings, batched=False).encode(one)
    assert single.body == raws[0] and ("Idempotency-Key", "a") in single.headers
