"""The lane's parts without Kafka: offsets, backoff, pacing and the record formats."""

from __future__ import annotations

import random

import orjson
import pytest
from aiokafka.structs import TopicPartition

from destinations.base import PartnerRequest, PartnerResponse, PluginContext
from destinations.http import HttpClient
from destinations.webhook import WebhookDestination
from router.config import DeliveryOptions, Destination
from router.delivery.offsets import OffsetTracker
from router.delivery.records import (
    HEADER_ATTEMPT,
    HEADER_DUE,
    Failure,
    InFlight,
    Outcome,
    RetryState,
    dead_letter_record,
    retry_record,
    status_record,
)
from router.delivery.retry import RetryPolicy
from router.delivery.throttle import RateLimiter

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
    # Retry-After lengthens the wait, never shortens it.
    assert (
        policy.next_due(attempt=1, first_failure=100.0, now=100.0, retry_after=5, rng=rng) == 105.0
    )
    assert (
        policy.next_due(attempt=1, first_failure=100.0, now=100.0, retry_after=0.1, rng=rng)
        == 101.0
    )
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
        "event": event,
        "origin": "fresh",
        "attempt": 0,
        "first_failure": None,
        "epoch": 1,
    }
    fields.update(overrides)
    return InFlight(**fields)  # type: ignore[arg-type]


def test_retry_state_round_trip_and_retry_record() -> None:
    state = RetryState(attempt=3, first_failure=1000.5, due=1010.25, reason="http_503")
    assert RetryState.from_headers((("source", b"web"), *state.headers())) == state
    assert RetryState.from_headers((("source", b"web"),)) is None
    assert RetryState.from_headers(((HEADER_ATTEMPT, b"x"), (HEADER_DUE, b"1"))) is None
    outcome = Outcome(
        item(), "retry", at=1000.5, attempt=1, reason="http_503", first_failure=1000.5, due=1010.25
    )
    record = retry_record("dest.hook.retry", outcome)
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
    outcome = Outcome(
        item(),
        "dlq",
        at=1000.0,
        attempt=1,
        reason="http_400",
        status=400,
        failure=failure,
        first_failure=1000.0,
    )
    record = dead_letter_record("dest.hook.dlq", outcome, destination="hook", kind="webhook")
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
    outcome = Outcome(broken, "dlq", at=1.0, attempt=1, reason="undecodable", failure=failure)
    body = orjson.loads(dead_letter_record("d", outcome, destination="hook", kind="webhook").value)
    assert body["event"] is None and body["raw"].encode("latin-1") == b"\xffnot json"
    assert body["request"] is None and body["response"] is None


def test_status_record() -> None:
    delivered = Outcome(
        item(), "delivered", at=1_800_000_000.0, attempt=2, latency=0.25, duration=0.01, status=200
    )
    record = status_record("delivery.status", delivered, destination="hook", kind="webhook")
    assert record.key == b"m-1"
    assert dict(record.headers) == {"destination": b"hook", "outcome": b"delivered"}
    body = orjson.loads(record.value)
    assert body["outcome"] == "delivered" and body["attempt"] == 2 and body["latency"] == 0.25
    assert body["error"] is None and body["type"] == "track" and body["event"] == "Signed Up"
    failure = Failure("timeout", "no answer", True)
    retry = Outcome(
        item(),
        "retry",
        at=1.0,
        attempt=1,
        reason="timeout",
        failure=failure,
        first_failure=1.0,
        due=2.0,
    )
    body = orjson.loads(status_record("s", retry, destination="hook", kind="webhook").value)
    assert body["error"]["reason"] == "timeout" and body["dueAt"] == "1970-01-01T00:00:02.000Z"


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


def test_records_with_precomputed_partition_and_error_are_the_same() -> None:
    """Partitions computed in the lane (fast murmur2) are the producer's; a status record
    with its error serialized once per request reads exactly like one built per event."""
    from aiokafka.partitioner import DefaultPartitioner

    from router.delivery.records import status_error_json

    partitions = list(range(7))
    failure = Failure(
        "http_503",
        "HTTP 503",
        True,
        status=503,
        summary={"request": {"body": "x" * 50}, "response": {"status": 503}},
    )
    for n in range(50):
        one = item(key=f"user-{n}".encode(), event={**(item().event or {}), "messageId": f"m{n}"})
        outcome = Outcome(
            one,
            "retry",
            at=1.5,
            attempt=1,
            reason="http_503",
            failure=failure,
            first_failure=1.5,
            due=12.25,
        )
        retry = retry_record("r", outcome, partitions=len(partitions))
        assert retry.partition == DefaultPartitioner()(one.key, partitions, partitions)
        plain = status_record(
            "s", outcome, destination="hook", kind="webhook", error_detail=failure.summary
        )
        fast = status_record(
            "s",
            outcome,
            destination="hook",
            kind="webhook",
            partitions=len(partitions),
            error_json=status_error_json(failure, failure.summary),
        )
        assert orjson.loads(fast.value) == orjson.loads(plain.value)
        assert fast.partition == DefaultPartitioner()(fast.key, partitions, partitions)
