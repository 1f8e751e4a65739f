"""The processor against the embedded broker: a mixed stream yields exactly the expected records."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from router.broker.embedded import EmbeddedBroker
from router.broker.topics import Topics
from router.config import KafkaSettings, Workspace
from router.processor import Processor
from router.workspace import validate_workspace
from tests.kafka_helpers import consume, produce, values

WEB, APP = "wk-web", "wk-app"


def mixed_workspace(kafka: KafkaSettings, state_dir: Path) -> Workspace:
    hook = {"url": "http://127.0.0.1:9/unused"}
    return validate_workspace(
        {
            "kafka": kafka.model_dump(),
            "processor": {"state_dir": str(state_dir), "poll_timeout": "100ms"},
            "sources": [
                {
                    "id": "web",
                    "write_keys": [WEB],
                    "middleware": [
                        {"type": "drop_fields", "fields": ["context.ip"]},
                        {"type": "add_context", "values": {"router.env": "test"}},
                    ],
                },
                {"id": "app", "write_keys": [APP]},
            ],
            "destinations": [
                {
                    "id": "all",
                    "name": "Hook A",
                    "type": "webhook",
                    "settings": hook,
                    "sources": ["web", "app"],
                },
                {
                    "id": "mixpanel",
                    "name": "Mixpanel",
                    "type": "webhook",
                    "settings": hook,
                    "sources": ["web"],
                    "filters": [
                        {"type": "drop_properties", "fields": ["properties.secret"]},
                        {"type": "drop", "if": 'event = "Spam"'},
                    ],
                    "transformations": [
                        {"type": "rename_event", "if": 'event = "signup"', "to": "Signed Up"}
                    ],
                },
                {
                    "id": "warehouse",
                    "name": "Warehouse",
                    "type": "webhook",
                    "warehouse": True,
                    "settings": hook,
                    "sources": ["web"],
                },
                {
                    "id": "orders",
                    "name": "Orders",
                    "type": "webhook",
                    "settings": hook,
                    "sources": ["web"],
                    "filters": [{"type": "only", "if": 'event = "Order Completed"'}],
                    "transformations": [
                        {"type": "set_values", "values": {"properties.currency": "USD"}}
                    ],
                },
            ],
        }
    )


def track(message_id: str, event: str, user: str = "u1", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "userId": user, "messageId": message_id, **extra}


# (payload, write key in header) -> which destination topics must receive it
STREAM: list[tuple[dict[str, Any] | bytes, str | None]] = [
    (track("m-order", "Order Completed", properties={"total": 10}, context={"ip": "1.2.3.4"}), WEB),
    (
        {"type": "identify", "userId": "u2", "messageId": "m-identify", "traits": {"plan": "pro"}},
        WEB,
    ),
    ({"type": "page", "anonymousId": "a1", "messageId": "m-page", "name": "Home"}, WEB),
    ({"type": "screen", "userId": "u3", "messageId": "m-screen", "name": "Feed"}, APP),
    ({"type": "group", "userId": "u4", "messageId": "m-group", "groupId": "g1"}, WEB),
    ({"type": "alias", "userId": "u5", "messageId": "m-alias", "previousId": "a5"}, WEB),
    (b'{"type": "track", "event": ', WEB),
    ({"type": "track", "event": "No One", "messageId": "m-noid"}, WEB),
    (track("m-unknown", "Order Completed"), "wk-nobody"),
    (track("m-order", "Order Completed", properties={"total": 10}), WEB),  # duplicate
    (track("m-spam", "Spam"), WEB),
    (track("m-allfalse", "Order Completed", integrations={"All": False}), WEB),
    (track("m-mpfalse", "Clicked", integrations={"Mixpanel": False}), WEB),
    (track("m-mpopts", "Clicked", integrations={"all": False, "Mixpanel": {"apiKey": "k1"}}), WEB),
    (track("m-signup", "signup", properties={"secret": "s", "plan": "pro"}), WEB),
    (track("m-nokey", "Clicked"), None),
    ({**track("m-bodykey", "Clicked"), "writeKey": WEB}, None),
]

EXPECTED: dict[str, set[str]] = {
    "all": {
        "m-order",
        "m-identify",
        "m-page",
        "m-screen",
        "m-group",
        "m-alias",
        "m-spam",
        "m-mpfalse",
        "m-signup",
        "m-bodykey",
    },
    "mixpanel": {
        "m-order",
        "m-identify",
        "m-page",
        "m-group",
        "m-alias",
        "m-mpopts",
        "m-signup",
        "m-bodykey",
    },
    "warehouse": {
        "m-order",
        "m-identify",
        "m-page",
        "m-group",
        "m-alias",
        "m-spam",
        "m-allfalse",
        "m-mpfalse",
        "m-mpopts",
        "m-signup",
        "m-bodykey",
    },
    "orders": {"m-order"},
}
EXPECTED_DLQ = {"invalid_json", "missing_identity", "unknown_write_key", "missing_write_key"}


async def write_stream(kafka: KafkaSettings, topics: Topics) -> None:
    for payload, key in STREAM:
        headers = [("write-key", key.encode())] if key else None
        await produce(kafka, topics.raw, [payload], headers=headers, key=b"u")


async def test_mixed_stream_yields_exactly_the_expected_records(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    workspace = mixed_workspace(kafka, tmp_path)
    topics = Topics(kafka.topic_prefix)
    registry = CollectorRegistry()
    async with Processor(workspace, registry):
        await write_stream(kafka, topics)
        got: dict[str, list[dict[str, Any]]] = {}
        for dest, ids in EXPECTED.items():
            got[dest] = values(await consume(kafka, topics.destination(dest), expect=len(ids)))
        dlq = values(await consume(kafka, topics.dlq, expect=len(EXPECTED_DLQ)))

    for dest, ids in EXPECTED.items():
        assert sorted(e["messageId"] for e in got[dest]) == sorted(ids), dest
    assert sorted(d["reason"] for d in dlq) == sorted(EXPECTED_DLQ)
    invalid = next(d for d in dlq if d["reason"] == "invalid_json")
    assert invalid["payload"] is None and invalid["raw"] == '{"type": "track", "event": '
    assert all(d["message"] and d["input"]["topic"] == topics.raw for d in dlq)

    by_id = {dest: {e["messageId"]: e for e in events} for dest, events in got.items()}
    order = by_id["all"]["m-order"]
    assert "ip" not in order["context"] and order["context"]["router"] == {"env": "test"}
    assert order["receivedAt"] and order["timestamp"] and "writeKey" not in order
    assert by_id["orders"]["m-order"]["properties"] == {"total": 10, "currency": "USD"}
    assert "currency" not in order["properties"], "a destination's change leaked into another"
    signup = by_id["mixpanel"]["m-signup"]
    assert signup["event"] == "Signed Up" and signup["properties"] == {"plan": "pro"}
    assert by_id["all"]["m-signup"]["event"] == "signup"
    assert by_id["all"]["m-signup"]["properties"]["secret"] == "s"
    assert by_id["mixpanel"]["m-mpopts"]["integrations"]["Mixpanel"] == {"apiKey": "k1"}
    assert "writeKey" not in by_id["all"]["m-bodykey"]

    sample = registry.get_sample_value
    assert sample("router_processor_received_total") == len(STREAM)
    assert sample("router_processor_duplicates_total", {"source": "web"}) == 1
    assert sample("router_processor_rejected_total", {"reason": "unknown_write_key"}) == 1
    assert (
        sample("router_processor_dropped_total", {"destination": "mixpanel", "reason": "drop"}) == 1
    )
    assert sample("router_processor_routed_total", {"destination": "orders"}) == 1


async def test_one_users_events_keep_their_order(kafka: KafkaSettings, tmp_path: Path) -> None:
    workspace = mixed_workspace(kafka, tmp_path)
    topics = Topics(kafka.topic_prefix)
    events = [
        track(f"m-{i}", "Clicked", user=f"user-{i % 5}", properties={"n": i}) for i in range(200)
    ]
    async with Processor(workspace, CollectorRegistry()):
        await produce(kafka, topics.raw, events, headers=[("write-key", WEB.encode())])
        records = await consume(kafka, topics.destination("all"), expect=200)
    per_user: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in records:
        event = orjson.loads(record.value)
        per_user[event["userId"]].append(event["properties"]["n"])
        partitions[event["userId"]].add(record.partition)
        assert record.key == event["userId"].encode()
    assert len(records) == 200
    for user, numbers in per_user.items():
        assert numbers == sorted(numbers), user
        assert len(partitions[user]) == 1


async def test_dedup_state_survives_a_restart(kafka: KafkaSettings, tmp_path: Path) -> None:
    workspace = mixed_workspace(kafka, tmp_path)
    topics = Topics(kafka.topic_prefix)
    headers = [("write-key", WEB.encode())]
    async with Processor(workspace, CollectorRegistry()):
        await produce(kafka, topics.raw, [track("m-once", "Clicked")], headers=headers)
        assert len(await consume(kafka, topics.destination("all"), expect=1)) == 1
    # A new processor (same state dir, same group) sees the id again: it must not pass.
    registry = CollectorRegistry()
    async with Processor(workspace, registry):
        await produce(
            kafka,
            topics.raw,
            [track("m-once", "Clicked"), track("m-new", "Clicked")],
            headers=headers,
        )
        records = values(await consume(kafka, topics.destination("all"), expect=2, settle=1.5))
        for _ in range(50):
            if registry.get_sample_value("router_processor_duplicates_total", {"source": "web"}):
                break
            await asyncio.sleep(0.1)
    assert sorted(e["messageId"] for e in records) == ["m-new", "m-once"]
    assert registry.get_sample_value("router_processor_duplicates_total", {"source": "web"}) == 1


async def test_tracking_plan_blocks_into_violations_topic(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    hook = {"url": "http://127.0.0.1:9/unused"}
    schema = {
        "type": "object",
        "properties": {
            "properties": {"type": "object", "properties": {"total": {"type": "number"}}}
        },
    }
    workspace = validate_workspace(
        {
            "kafka": kafka.model_dump(),
            "processor": {"state_dir": str(tmp_path), "poll_timeout": "100ms"},
            "tracking_plans": [{"id": "plan", "rules": {"track": {"Order Completed": schema}}}],
            "sources": [
                {
                    "id": "web",
                    "write_keys": [WEB],
                    "tracking_plan": {
                        "plan": "plan",
                        "unplanned_events": "block",
                        "unplanned_properties": "omit",
                        "violations": "block",
                    },
                }
            ],
            "destinations": [
                {"id": "all", "name": "A", "type": "webhook", "settings": hook, "sources": ["web"]}
            ],
        }
    )
    topics = Topics(kafka.topic_prefix)
    registry = CollectorRegistry()
    async with Processor(workspace, registry):
        await produce(
            kafka,
            topics.raw,
            [
                track("m-ok", "Order Completed", properties={"total": 3, "coupon": "c"}),
                track("m-bad", "Order Completed", properties={"total": "3"}),
                track("m-unplanned", "Mystery"),
            ],
            headers=[("write-key", WEB.encode())],
        )
        delivered = values(await consume(kafka, topics.destination("all"), expect=1))
        blocked = values(await consume(kafka, topics.violations, expect=2))
    assert [e["messageId"] for e in delivered] == ["m-ok"]
    assert delivered[0]["properties"] == {"total": 3}
    assert delivered[0]["context"]["protocols"]["omitted"] == ["properties.coupon"]
    assert sorted((b["reason"], b["payload"]["messageId"]) for b in blocked) == [
        ("schema_violation", "m-bad"),
        ("unplanned_event", "m-unplanned"),
    ]
    bad = next(b for b in blocked if b["reason"] == "schema_violation")
    assert bad["details"]["violations"][0]["field"] == "properties.total"
    assert (
        registry.get_sample_value(
            "router_processor_violations_total", {"source": "web", "type": "Invalid Type"}
        )
        == 1
    )


def single_destination(kafka: KafkaSettings, state_dir: Path, **source: Any) -> Workspace:
    data: dict[str, Any] = {
        "kafka": kafka.model_dump(),
        "processor": {"state_dir": str(state_dir), "poll_timeout": "100ms"},
        "sources": [{"id": "web", "write_keys": [WEB], **source}],
        "destinations": [
            {
                "id": "all",
                "name": "A",
                "type": "webhook",
                "settings": {"url": "http://127.0.0.1:9/unused"},
                "sources": ["web"],
            }
        ],
    }
    if "tracking_plan" in source:
        data["tracking_plans"] = [{"id": "plan", "rules": {"track": {"Clicked": {}}}}]
    return validate_workspace(data)


async def test_a_poison_event_does_not_stop_the_processor(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """Middleware that leaves an event invalid used to make the tracking plan raise KeyError:
    the loop died with the batch uncommitted, and died again on it after every restart."""
    workspace = single_destination(
        kafka,
        tmp_path,
        middleware=[{"type": "rename_fields", "fields": {"event": "properties.name"}}],
        tracking_plan={"plan": "plan"},
    )
    topics = Topics(kafka.topic_prefix)
    registry = CollectorRegistry()
    async with Processor(workspace, registry) as processor:
        await produce(
            kafka,
            topics.raw,
            [
                {"type": "identify", "userId": "u1", "messageId": "m-1"},
                track("m-poison", "Clicked"),
                {"type": "identify", "userId": "u1", "messageId": "m-2"},
            ],
            headers=[("write-key", WEB.encode())],
        )
        delivered = values(await consume(kafka, topics.destination("all"), expect=2))
        dead = values(await consume(kafka, topics.dlq, expect=1))
        assert processor.health()[0] and processor.failure() is None
    assert [e["messageId"] for e in delivered] == ["m-1", "m-2"]
    assert [(d["reason"], d["payload"]["messageId"]) for d in dead] == [
        ("middleware_invalid", "m-poison")
    ]


async def test_a_loop_that_stops_says_why_at_once(
    kafka: KafkaSettings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What events cannot cause (here: a dedup store that cannot be created) ends the loop
    for good; the traceback is logged when it happens and failure() gives the reason."""
    workspace = mixed_workspace(kafka, tmp_path)
    topics = Topics(kafka.topic_prefix)
    # A file where the dedup stores' directory must go.
    (tmp_path / "dedup").mkdir()
    (tmp_path / "dedup" / topics.raw).write_text("not a directory")
    processor = Processor(workspace, CollectorRegistry())
    await processor.start()
    try:
        await produce(
            kafka, topics.raw, [track("m-1", "Clicked")], headers=[("write-key", WEB.encode())]
        )
        for _ in range(300):
            if processor.failure() is not None:
                break
            await asyncio.sleep(0.1)
        reason = processor.failure()
        assert reason is not None and "processor loop stopped" in reason
        assert processor.health() == (False, reason)
        logged = [r for r in caplog.records if r.levelno >= logging.CRITICAL]
        assert logged and logged[0].exc_info is not None  # before stop(), with the traceback
    finally:
        await processor.stop()


async def test_events_without_message_id_survive_a_broker_reset(tmp_path: Path) -> None:
    """The embedded broker keeps nothing: after a restart offsets begin at 0 again, but the
    dedup store in ./state remembers ids derived from the old records at those offsets."""
    prefix = "reset."
    for round_, name in enumerate(["Before", "After"]):
        async with EmbeddedBroker() as broker:
            kafka = KafkaSettings(
                bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix, partitions=1
            )
            workspace = single_destination(kafka, tmp_path)
            topics = Topics(prefix)
            async with Processor(workspace, CollectorRegistry()):
                event = {"type": "track", "event": name, "userId": "u1"}  # no messageId
                await produce(kafka, topics.raw, [event], headers=[("write-key", WEB.encode())])
                delivered = values(await consume(kafka, topics.destination("all"), expect=1))
        assert [e["event"] for e in delivered] == [name], f"round {round_}"
