"""The Kafka forward destination: record formats, and writes to this cluster and another one."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import errors as kafka_errors

from destinations.base import (
    ConnectionFailed,
    Encoded,
    EventBatch,
    PermanentError,
    PluginContext,
    RetryableError,
)
from destinations.http import HttpClient
from destinations.kafka import ForwardBatch, KafkaDestination
from destinations.kafka.sender import ForwardResult, classify, producer_options
from router.broker.embedded import free_port
from router.broker.partitioning import key_partition
from router.broker.topics import Topics
from router.config import Destination, KafkaSettings
from tests.delivery.helpers import (
    FAST_DELIVERY,
    event,
    make_workspace,
    produce_events,
    running_agent,
    unique_kafka,
)
from tests.destinations.kafka_clusters import OtherCluster, create_topic, other_cluster, read_topic
from tests.destinations.outcomes import outcomes
from tests.kafka_helpers import consume, values

#: The other cluster refuses records of this topic whose ``properties.total`` is not a number.
STRICT_TOPIC = "strict-orders"
STRICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "value": {
            "type": "object",
            "properties": {
                "properties": {
                    "type": "object",
                    "properties": {"total": {"type": "number"}},
                }
            },
        }
    },
}


def make_plugin(
    settings: dict[str, Any], *, kafka: KafkaSettings | None = None, **delivery: Any
) -> KafkaDestination:
    destination = Destination.model_validate(
        {
            "id": "fwd",
            "name": "Forward",
            "type": "kafka",
            "sources": ["web"],
            "settings": settings,
            "delivery": {"timeout": "5s", **delivery},
        }
    )
    return KafkaDestination(destination, PluginContext(http=HttpClient(), kafka=kafka))


def sample(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [event(i, prefix=f"f{uuid.uuid4().hex[:6]}", **extra) for i in range(count)]


def encoded(plugin: KafkaDestination, events: list[dict[str, Any]]) -> ForwardBatch:
    result = plugin.encode(events)
    assert isinstance(result, Encoded) and not result.failed
    [batch] = result.requests
    return batch


# ---------------------------------------------------------------- formats (no broker)


def test_segment_value_keyed_by_user() -> None:
    plugin = make_plugin({"topic": "out", "bootstrap_servers": "127.0.0.1:1"})
    events = sample(3)
    events[1] = {**events[1], "userId": None, "anonymousId": "anon-1"}
    batch = encoded(plugin, events)
    assert batch.covers == (0, 1, 2)
    assert [orjson.loads(r.value) for r in batch.records] == events
    assert [r.key for r in batch.records] == [b"user-0", b"anon-1", b"user-2"]
    assert all(r.headers == () for r in batch.records)


def test_keys_by_message_id_or_none_and_static_headers() -> None:
    events = sample(2)
    by_id = encoded(
        make_plugin(
            {
                "topic": "out",
                "bootstrap_servers": "127.0.0.1:1",
                "key": "message_id",
                "headers": {"origin": "router", "team": "growth"},
            }
        ),
        events,
    )
    assert [r.key for r in by_id.records] == [e["messageId"].encode() for e in events]
    assert by_id.records[0].headers == (("origin", b"router"), ("team", b"growth"))
    no_key = encoded(
        make_plugin({"topic": "out", "bootstrap_servers": "127.0.0.1:1", "key": "none"}), events
    )
    assert [r.key for r in no_key.records] == [None, None]


def test_cloudevents_structured() -> None:
    plugin = make_plugin(
        {
            "topic": "out",
            "bootstrap_servers": "127.0.0.1:1",
            "value_format": "cloudevents",
            "cloudevents": {"source": "/shop/web", "type_prefix": "com.example."},
        }
    )
    [one] = sample(1, timestamp="2026-11-23T10:00:00.100+01:00")
    record = encoded(plugin, [one]).records[0]
    assert record.headers == (("content-type", b"application/cloudevents+json; charset=UTF-8"),)
    assert orjson.loads(record.value) == {
        "specversion": "1.0",
        "id": one["messageId"],
        "source": "/shop/web",
        "type": "com.example.track",
        "time": "2026-11-23T09:00:00.100Z",
        "datacontenttype": "application/json",
        "data": one,
    }


def test_cloudevents_binary() -> None:
    plugin = make_plugin(
        {
            "topic": "out",
            "bootstrap_servers": "127.0.0.1:1",
            "value_format": "cloudevents_binary",
            "headers": {"origin": "router"},
        }
    )
    [one] = sample(1)
    del one["timestamp"]
    record = encoded(plugin, [one]).records[0]
    assert orjson.loads(record.value) == one
    assert dict(record.headers) == {
        "content-type": b"application/json",
        "ce_specversion": b"1.0",
        "ce_id": one["messageId"].encode(),
        "ce_source": b"/event-router",
        "ce_type": b"segment.track",
        "origin": b"router",
    }


def test_the_bytes_read_from_kafka_are_forwarded_as_they_are() -> None:
    events = sample(2)
    # As a producer may have written them: not orjson's spacing or key order.
    raw = [json.dumps(e, indent=None, separators=(", ", ": ")).encode() for e in events]
    batch = EventBatch(events, raw)
    segment = encoded(make_plugin({"topic": "out", "bootstrap_servers": "127.0.0.1:1"}), batch)
    assert [r.value for r in segment.records] == raw
    structured = encoded(
        make_plugin(
            {"topic": "out", "bootstrap_servers": "127.0.0.1:1", "value_format": "cloudevents"}
        ),
        batch,
    )
    for record, one, original in zip(structured.records, events, raw, strict=True):
        assert record.value.endswith(b',"data":' + original + b"}")
        envelope = orjson.loads(record.value)
        assert envelope["data"] == one and envelope["id"] == one["messageId"]


def test_settings_rules() -> None:
    problems = KafkaDestination.validate_settings
    assert ("topic", "String should match pattern '^[A-Za-z0-9._-]{1,249}$'") in problems(
        {"topic": "bad topic"}
    )
    assert any(
        p == "" or "sasl" in m for p, m in problems({"topic": "t", "security_protocol": "SASL_SSL"})
    )
    assert problems({"topic": "t", "headers": {"ce_id": "x"}})
    assert problems({"topic": "t", "tls": {"ca_file": "/x"}})  # TLS needs SSL or SASL_SSL
    assert problems({"topic": "t", "security_protocol": "SSL", "tls": {"cert_file": "/c"}})


def test_producer_options_map_security_settings(tmp_path: Path) -> None:
    from tests.destinations.kafka_clusters import write_certificate

    cert, key = write_certificate(tmp_path)
    plugin = make_plugin(
        {
            "topic": "out",
            "bootstrap_servers": "broker:9093",
            "security_protocol": "SASL_SSL",
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "router", "password": "pw-12345678"},
            "tls": {"ca_file": str(cert), "cert_file": str(cert), "key_file": str(key)},
            "compression": "gzip",
            "enable_idempotence": True,
        }
    )
    options = plugin.sender.options
    assert options["acks"] == "all"
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "router"
    assert options["sasl_plain_password"] == "pw-12345678"
    assert options["ssl_context"].check_hostname is True
    assert options["compression_type"] == "gzip" and options["enable_idempotence"] is True
    assert "pw-12345678" in plugin.secrets()
    assert "pw-12345678" not in repr(plugin.settings)
    plain = producer_options(
        make_plugin({"topic": "t", "bootstrap_servers": "b:1"}).settings,
        bootstrap="b:1",
        client_id="c",
        timeout=3,
    )
    assert "ssl_context" not in plain and "sasl_mechanism" not in plain


# What the target's answers mean (replaces the HTTP status table for this destination).
CLASSIFIED: list[tuple[BaseException, bool, str]] = [
    (kafka_errors.MessageSizeTooLargeError(), False, "record_too_large"),
    (kafka_errors.RecordTooLargeError(), False, "record_too_large"),
    (kafka_errors.PolicyViolationError(), False, "policy_violation"),
    (kafka_errors.InvalidTimestampError(), False, "invalid_timestamp"),
    (kafka_errors.UnknownError(), False, "record_refused"),
    (kafka_errors.TopicAuthorizationFailedError(), False, "not_authorized"),
    (kafka_errors.ClusterAuthorizationFailedError(), False, "not_authorized"),
    (kafka_errors.InvalidTopicError(), False, "invalid_topic"),
    (kafka_errors.SaslAuthenticationFailed(), False, "authentication_failed"),
    (kafka_errors.KafkaTimeoutError(), True, "timeout"),
    (kafka_errors.RequestTimedOutError(), True, "request_timed_out"),
    (kafka_errors.KafkaConnectionError(), True, "connection"),
    (kafka_errors.NotEnoughReplicasError(), True, "not_enough_replicas"),
    (kafka_errors.NotLeaderForPartitionError(), True, "not_leader_for_partition"),
    (kafka_errors.UnknownTopicOrPartitionError(), True, "unknown_topic_or_partition"),
    (kafka_errors.KafkaStorageError(), True, "kafka_storage"),
]


@pytest.mark.parametrize(("error", "retriable", "reason"), CLASSIFIED)
def test_write_errors_classified(error: BaseException, retriable: bool, reason: str) -> None:
    classified = classify(error, "out")
    assert classified.retriable is retriable
    assert isinstance(classified, RetryableError if retriable else PermanentError)
    assert classified.reason == reason


def test_check_fails_only_the_refused_records() -> None:
    plugin = make_plugin({"topic": "out", "bootstrap_servers": "127.0.0.1:1"})
    batch = encoded(plugin, sample(3))
    result = ForwardResult(
        topic="out",
        written=((0, 10), None, (0, 11)),
        errors=((1, kafka_errors.MessageSizeTooLargeError()),),
        elapsed=0.01,
    )
    rejected = plugin.check(batch, result)
    assert list(rejected) == [1]
    assert rejected[1].reason == "record_too_large" and not rejected[1].retriable
    everything_down = ForwardResult(
        topic="out",
        written=(None, None, None),
        errors=tuple((i, kafka_errors.KafkaConnectionError()) for i in range(3)),
        elapsed=0.01,
    )
    with pytest.raises(RetryableError) as caught:
        plugin.check(batch, everything_down)
    assert caught.value.reason == "connection" and caught.value.response is everything_down


# ---------------------------------------------------------------- the router's own cluster


async def test_same_cluster_written_and_acknowledged(kafka: KafkaSettings) -> None:
    topic = f"{kafka.topic_prefix}forwarded"
    await create_topic(kafka.bootstrap_servers or "", topic, 3)
    plugin = make_plugin({"topic": topic}, kafka=kafka)
    await plugin.start()
    try:
        events = sample(40)
        batch = encoded(plugin, events)
        result = await plugin.send(batch)
        assert plugin.check(batch, result) == {}
        assert all(w is not None for w in result.written)
        healthy, detail = await plugin.health_check()
        assert healthy and "3 partition(s)" in detail
    finally:
        await plugin.stop()
    records = await read_topic(kafka.bootstrap_servers or "", topic, expect=40)
    assert sorted(orjson.loads(r.value)["messageId"] for r in records) == sorted(
        e["messageId"] for e in events
    )
    for record in records:
        # Keyed like Kafka's default partitioner: one user's events in one partition, in order.
        assert record.partition == key_partition(record.key, 3)
        assert orjson.loads(record.value)["userId"].encode() == record.key
    by_partition: dict[int, list[int]] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(
            orjson.loads(record.value)["properties"]["index"]
        )
    assert all(indexes == sorted(indexes) for indexes in by_partition.values())


async def test_too_large_record_refused_alone(kafka: KafkaSettings) -> None:
    topic = f"{kafka.topic_prefix}forwarded-large"
    await create_topic(kafka.bootstrap_servers or "", topic, 1)
    plugin = make_plugin({"topic": topic, "max_request_size": 4096}, kafka=kafka)
    await plugin.start()
    try:
        events = sample(3)
        events[1] = {**events[1], "properties": {"blob": "x" * 8000}}
        batch = encoded(plugin, events)
        result = await plugin.send(batch)
        rejected = plugin.check(batch, result)
    finally:
        await plugin.stop()
    assert list(rejected) == [1] and rejected[1].reason == "record_too_large"
    assert "max_request_size" in rejected[1].message
    records = await read_topic(kafka.bootstrap_servers or "", topic, expect=2)
    assert sorted(orjson.loads(r.value)["messageId"] for r in records) == sorted(
        [events[0]["messageId"], events[2]["messageId"]]
    )


async def test_unreachable_cluster_is_retried_not_fatal() -> None:
    plugin = make_plugin(
        {"topic": "out", "bootstrap_servers": f"127.0.0.1:{free_port()}"}, timeout="1s"
    )
    await plugin.start()  # must not raise: the agent's other destinations go on
    try:
        healthy, _ = await plugin.health_check()
        assert not healthy
        with pytest.raises(ConnectionFailed):
            await plugin.send(encoded(plugin, sample(1)))
    finally:
        await plugin.stop()


# ---------------------------------------------------------------- another cluster (TLS)


@pytest.fixture(scope="module")
async def other(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OtherCluster]:
    async with other_cluster(
        tmp_path_factory.mktemp("other-cluster"), {STRICT_TOPIC: STRICT_SCHEMA}
    ) as cluster:
        await create_topic(
            cluster.bootstrap,
            STRICT_TOPIC,
            2,
            security_protocol="SSL",
            ssl_context=cluster.client_tls(),
        )
        yield cluster


def other_settings(cluster: OtherCluster, **extra: Any) -> dict[str, Any]:
    return {
        "topic": STRICT_TOPIC,
        "bootstrap_servers": cluster.bootstrap,
        "security_protocol": "SSL",
        "tls": {"ca_file": str(cluster.ca_file)},
        **extra,
    }


async def test_other_cluster_over_tls_with_cloudevents(other: OtherCluster) -> None:
    plugin = make_plugin(other_settings(other, key="message_id", value_format="cloudevents_binary"))
    await plugin.start()
    try:
        events = sample(5)
        batch = encoded(plugin, events)
        result = await plugin.send(batch)
        assert plugin.check(batch, result) == {}
    finally:
        await plugin.stop()
    records = await read_topic(
        other.bootstrap,
        STRICT_TOPIC,
        expect=5,
        security_protocol="SSL",
        ssl_context=other.client_tls(),
    )
    ours = {e["messageId"]: e for e in events}
    found = [r for r in records if r.key and r.key.decode() in ours]
    assert len(found) == 5
    for record in found:
        assert orjson.loads(record.value) == ours[record.key.decode()]
        headers = dict(record.headers)
        assert headers["ce_id"] == record.key and headers["ce_type"] == b"segment.track"


async def test_untrusted_certificate_is_a_connection_failure(
    other: OtherCluster, tmp_path: Path
) -> None:
    from tests.destinations.kafka_clusters import write_certificate

    stranger, _ = write_certificate(tmp_path)  # not the cluster's certificate
    plugin = make_plugin({**other_settings(other), "tls": {"ca_file": str(stranger)}}, timeout="2s")
    await plugin.start()
    try:
        with pytest.raises(RetryableError):
            await plugin.send(encoded(plugin, sample(1)))
    finally:
        await plugin.stop()


async def test_other_cluster_refuses_one_record_of_a_batch(other: OtherCluster) -> None:
    plugin = make_plugin(other_settings(other, key="none"))
    await plugin.start()
    try:
        events = sample(6)
        events[3] = {**events[3], "properties": {"total": "not a number"}}
        batch = encoded(plugin, events)
        result = await plugin.send(batch)
        rejected = plugin.check(batch, result)
    finally:
        await plugin.stop()
    # Unkeyed records share one partition, so the broker refused their batch as a whole;
    # sent again one by one, only the invalid record is refused.
    assert result.isolated == 6
    assert list(rejected) == [3]
    assert rejected[3].reason == "record_refused" and not rejected[3].retriable
    assert [w is None for w in result.written] == [False, False, False, True, False, False]


async def test_agent_dead_letters_the_refused_event_alone(
    kafka: KafkaSettings, other: OtherCluster
) -> None:
    kafka = unique_kafka(kafka)
    workspace = make_workspace(
        kafka,
        [
            {
                "id": "fwd",
                "name": "Forward",
                "type": "kafka",
                "sources": ["web"],
                "settings": other_settings(other),
                "delivery": {**FAST_DELIVERY, "batch_size": 50, "timeout": "5s"},
            }
        ],
    )
    topics = Topics(kafka.topic_prefix)
    events = sample(10)
    events[4] = {**events[4], "properties": {"total": "n/a"}}
    async with running_agent(workspace, ["fwd"]):
        await produce_events(kafka, topics.destination("fwd"), events)
        dead = values(await consume(kafka, topics.dead_letter("fwd"), expect=1))
        decided = await outcomes(kafka, topics.status, events=10)
    assert [d["messageId"] for d in dead] == [events[4]["messageId"]]
    assert dead[0]["reason"] == "record_refused"
    assert "refused the record" in dead[0]["error"]["message"]
    assert decided.pop(("fwd", events[4]["messageId"])) == "dlq"
    assert set(decided.values()) == {"delivered"} and len(decided) == 9
