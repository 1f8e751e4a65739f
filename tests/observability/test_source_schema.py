"""Source schema: what each source sends, kept by the processor and published to sources.schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from router.broker.topics import Topics
from router.config import KafkaSettings
from router.observability import source_schema
from router.observability.source_schema import SourceSchemas, merge_snapshots
from router.processor import Processor
from router.schema_topic import read_snapshots, read_source_schemas
from router.workspace import validate_workspace
from tests.delivery.helpers import unique_kafka, wait_until
from tests.kafka_helpers import produce


@dataclass
class Seen:
    source_id: str
    event: dict[str, Any]


class Clock:
    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        return self.now


def track(name: str, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "event": name, "userId": "u", "properties": properties}


def by_name(snapshot: dict[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(e["type"], e["name"]): e for e in snapshot["events"]}


def count_of(processor: Processor, key: tuple[str, str | None]) -> int | None:
    """What the processor counted so far for an event of source web, in process."""
    snapshot = processor.schemas.snapshot("web")
    event = by_name(snapshot).get(key) if snapshot else None
    return event["count"] if event else None


def test_counts_every_event_and_types_properties_and_traits() -> None:
    clock = Clock()
    schemas = SourceSchemas(clock=clock)
    schemas.observe(
        [
            Seen("web", track("Order Completed", total=10, items=[{"sku": "a", "qty": 1}])),
            Seen("web", track("Order Completed", total=10.5, coupon=None)),
            Seen("web", {"type": "identify", "userId": "u", "traits": {"email": "a@b.c"}}),
            Seen("web", {"type": "page", "userId": "u", "name": "Home", "properties": {}}),
            Seen("web", {"type": "page", "userId": "u"}),
            # identify has no name: a top-level "name" (even an unhashable one) is not one
            Seen("web", {"type": "identify", "userId": "u", "name": {"first": "A"}}),
            Seen("app", {"type": "screen", "userId": "u", "name": "Feed"}),
        ]
    )
    clock.now += 90
    schemas.observe([Seen("web", track("Order Completed", total=3))])

    web = schemas.snapshot("web")
    assert web is not None and web["sourceId"] == "web"
    events = by_name(web)
    assert list(events) == [  # snapshots list events by type, then name
        ("identify", None),
        ("page", None),
        ("page", "Home"),
        ("track", "Order Completed"),
    ]
    order = events[("track", "Order Completed")]
    assert order["count"] == 3 and order["sampled"] == 3
    assert (
        order["firstSeen"] == "2026-11-18T11:06:40Z" and order["lastSeen"] == "2026-11-18T11:08:10Z"
    )
    fields = {f["path"]: f for f in order["properties"]}
    assert sorted(fields) == ["coupon", "items", "items[].qty", "items[].sku", "total"]
    assert fields["total"]["types"] == ["integer", "number"] and fields["total"]["count"] == 3
    assert fields["coupon"]["types"] == ["null"] and fields["coupon"]["count"] == 1
    assert fields["items"]["types"] == ["array"]
    assert events[("identify", None)]["count"] == 2
    assert [f["path"] for f in events[("identify", None)]["traits"]] == ["email"]
    assert web["truncated"] == {"events": 0, "fields": 0}
    assert by_name(schemas.snapshots()["app"])[("screen", "Feed")]["count"] == 1
    assert schemas.snapshot("nobody") is None


def test_property_walks_are_sampled_but_counts_are_exact() -> None:
    schemas = SourceSchemas(sample_per_batch=10, count_sample=2000)
    batch = [Seen("web", track("Clicked", n=i)) for i in range(1000)]
    batch.append(Seen("web", track("Rare", once=True)))
    schemas.observe(batch)
    snapshot = schemas.snapshot("web") or {}
    assert snapshot["exact"] is True
    events = by_name(snapshot)
    clicked = events[("track", "Clicked")]
    assert clicked["count"] == 1000
    assert 10 <= clicked["sampled"] <= 11  # every 100th event
    assert clicked["properties"][0]["count"] == clicked["sampled"]
    # the first event of every name is walked, however rare the name
    assert events[("track", "Rare")]["properties"][0]["path"] == "once"


def test_large_batches_are_counted_from_a_sample() -> None:
    schemas = SourceSchemas(count_sample=100)
    small = [Seen("web", track("Clicked")) for _ in range(100)]
    schemas.observe(small)
    assert (schemas.snapshot("web") or {})["exact"] is True
    big = [Seen("web", track("Viewed" if i < 1250 else "Clicked")) for i in range(5000)]
    schemas.observe(big)
    snapshot = schemas.snapshot("web") or {}
    assert snapshot["exact"] is False
    events = by_name(snapshot)
    assert events[("track", "Clicked")]["count"] == 100 + 3750
    assert events[("track", "Viewed")]["count"] == 1250
    merged = merge_snapshots([snapshot])
    assert merged["web"]["exact"] is False


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_schema, "MAX_EVENTS_PER_SOURCE", 3)
    monkeypatch.setattr(source_schema, "MAX_FIELDS_PER_EVENT", 2)
    schemas = SourceSchemas()
    schemas.observe([Seen("web", track(f"Event {i}", a=1, b=2, c=3)) for i in range(5)])
    snapshot = schemas.snapshot("web") or {}
    assert len(snapshot["events"]) == 3
    assert all(len(e["properties"]) == 2 for e in snapshot["events"])
    assert snapshot["truncated"] == {"events": 2, "fields": 3}


def test_a_bad_batch_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    schemas = SourceSchemas()
    schemas.observe([Seen("web", {"no": "type"})])  # never happens after decode; still safe
    assert "could not be observed" in caplog.text


def test_merging_instances_and_restoring() -> None:
    clock = Clock()
    one, two = SourceSchemas(clock=clock), SourceSchemas(clock=clock)
    one.observe([Seen("web", track("A", x=1))])
    clock.now += 60
    two.observe([Seen("web", track("A", x="s")), Seen("web", track("B"))])
    merged = merge_snapshots([one.snapshot("web") or {}, two.snapshot("web") or {}])
    events = by_name(merged["web"])
    a = events[("track", "A")]
    assert a["count"] == 2 and a["sampled"] == 2
    assert a["firstSeen"] == "2026-11-18T11:06:40Z" and a["lastSeen"] == "2026-11-18T11:07:40Z"
    assert a["properties"] == [
        {
            "path": "x",
            "types": ["integer", "string"],
            "count": 2,
            "firstSeen": "2026-11-18T11:06:40Z",
            "lastSeen": "2026-11-18T11:07:40Z",
        }
    ]
    assert events[("track", "B")]["count"] == 1
    assert merged["web"]["updatedAt"] == "2026-11-18T11:07:40Z"

    restarted = SourceSchemas(clock=clock)
    restarted.observe([Seen("web", track("A"))])
    restarted.restore(one.snapshot("web") or {})
    assert by_name(restarted.snapshot("web") or {})[("track", "A")]["count"] == 2


@pytest.mark.integration
async def test_processor_publishes_source_schemas_for_another_process(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = unique_kafka(kafka)
    topics = Topics(kafka.topic_prefix)
    workspace = validate_workspace(
        {
            "kafka": kafka.model_dump(),
            "processor": {
                "state_dir": str(tmp_path),
                "poll_timeout": "100ms",
                "schema_interval": "300ms",
            },
            "sources": [{"id": "web", "write_keys": ["wk-web"]}],
        }
    )
    headers = [("write-key", b"wk-web")]
    first = [track("Order Completed", total=i) for i in range(20)]
    first.append({"type": "identify", "userId": "u", "traits": {"plan": "pro"}})
    processor = Processor(workspace, CollectorRegistry())
    processor.schemas.instance = "processor-0"
    async with processor:
        await produce(kafka, topics.raw, first, headers=headers)
        # In process: the object the ops API can call.
        await wait_until(
            lambda: count_of(processor, ("track", "Order Completed")) == 20,
            timeout=20,
            what="20 orders observed",
        )
        # Published periodically, while running.
        for _ in range(60):
            published = await read_source_schemas(kafka, topics, time_limit=5)
            if "web" in published and len(published["web"]["events"]) == 2:
                break
        assert by_name(published["web"])[("identify", None)]["traits"][0]["path"] == "plan"

    # A second instance, and the first one restarted: counts continue, instances add up.
    other = Processor(workspace, CollectorRegistry(), group_id=f"{kafka.client_id}-other")
    other.schemas.instance = "processor-1"
    async with other:
        await produce(kafka, topics.raw, [track("Signed Up")], headers=headers)
        await wait_until(lambda: other.schemas.snapshot("web") is not None, timeout=20, what="seen")
    restarted = Processor(workspace, CollectorRegistry())
    restarted.schemas.instance = "processor-0"
    async with restarted:
        await produce(kafka, topics.raw, [track("Order Completed", total=1)], headers=headers)
        await wait_until(
            lambda: count_of(restarted, ("track", "Order Completed")) == 21,
            timeout=20,
            what="restored counts plus the new order",
        )

    latest = await read_snapshots(kafka, topics, time_limit=5)
    assert sorted(latest) == [b"web/processor-0", b"web/processor-1"]
    assert latest[b"web/processor-0"]["instance"] == "processor-0"
    merged = await read_source_schemas(kafka, topics, time_limit=5)
    events = by_name(merged["web"])
    assert events[("track", "Order Completed")]["count"] == 21
    assert events[("track", "Signed Up")]["count"] == 1
    assert events[("identify", None)]["count"] == 1
