"""events.raw -> processor -> delivery agent -> a Kafka topic and an archive directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from destinations.archive import ArchiveReader, LocalStorage
from router.broker.topics import Topics
from router.config import KafkaSettings
from router.processor import Processor
from router.workspace import validate_workspace
from tests.delivery.helpers import FAST_DELIVERY, running_agent, unique_kafka
from tests.destinations.kafka_clusters import create_topic, read_topic
from tests.destinations.outcomes import outcomes
from tests.kafka_helpers import produce

KEY = "wk-streams"


def raw_event(index: int) -> dict[str, Any]:
    """As a producer writes it to events.raw: no receivedAt yet (the processor stamps it)."""
    name = "Order Completed" if index % 2 == 0 else "Product Viewed"
    return {
        "type": "track",
        "event": name,
        "userId": f"user-{index % 4}",
        "messageId": f"e2e-{index}",
        "properties": {"index": index, "email": f"u{index}@example.com"},
    }


async def test_events_reach_a_kafka_topic_and_the_archive(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = unique_kafka(kafka)
    topics = Topics(kafka.topic_prefix)
    target = f"{kafka.topic_prefix}orders.forwarded"
    archive_dir = tmp_path / "archive"
    delivery = {**FAST_DELIVERY, "batch_size": 100}
    workspace = validate_workspace(
        {
            "kafka": kafka.model_dump(),
            "processor": {"state_dir": str(tmp_path / "state"), "poll_timeout": "100ms"},
            "sources": [{"id": "shop", "write_keys": [KEY]}],
            "destinations": [
                {
                    "id": "orders-topic",
                    "name": "Orders topic",
                    "type": "kafka",
                    "sources": ["shop"],
                    "settings": {"topic": target, "value_format": "cloudevents"},
                    "filters": [{"type": "only", "if": 'event = "Order Completed"'}],
                    "delivery": delivery,
                },
                {
                    "id": "archive",
                    "name": "Archive",
                    "type": "archive",
                    "sources": ["shop"],
                    "settings": {"directory": str(archive_dir), "max_file_age": "300ms"},
                    "filters": [{"type": "drop_properties", "fields": ["properties.email"]}],
                    "delivery": delivery,
                },
            ],
        }
    )
    await create_topic(kafka.bootstrap_servers or "", target, 2)
    sent = [raw_event(i) for i in range(20)]
    registry = CollectorRegistry()
    async with (
        Processor(workspace, registry, group_id=f"{kafka.topic_prefix}processor"),
        running_agent(workspace, ["orders-topic", "archive"]),
    ):
        await produce(kafka, topics.raw, sent, headers=[("write-key", KEY.encode())])
        # 10 orders forwarded, 20 events archived.
        decided = await outcomes(kafka, topics.status, events=30, timeout=40)
    assert set(decided.values()) == {"delivered"}
    assert sorted(m for d, m in decided if d == "orders-topic") == sorted(
        f"e2e-{i}" for i in range(0, 20, 2)
    )

    forwarded = await read_topic(kafka.bootstrap_servers or "", target, expect=10)
    envelopes = [orjson.loads(r.value) for r in forwarded]
    assert sorted(e["id"] for e in envelopes) == sorted(f"e2e-{i}" for i in range(0, 20, 2))
    for record, envelope in zip(forwarded, envelopes, strict=True):
        event = envelope["data"]
        assert envelope["type"] == "segment.track" and envelope["specversion"] == "1.0"
        assert event["receivedAt"] and event["properties"]["email"]  # as the processor wrote it
        assert record.key == event["userId"].encode()

    archived = [e async for e in ArchiveReader(LocalStorage(archive_dir)).events()]
    assert sorted(e["messageId"] for e in archived) == sorted(e["messageId"] for e in sent)
    for event in archived:
        assert "email" not in event["properties"]  # this destination's filter applied
        assert event["receivedAt"]
    assert sorted(p.name for p in archive_dir.iterdir()) == ["_manifests", "_tmp", "source=shop"]
