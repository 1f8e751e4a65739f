"""Forwarded violations are events: "Violation Generated" goes through a source to a destination.

Processor and delivery agent against the embedded broker and a local sink (a webhook
destination standing in for Slack): the violation travels events.raw -> processor ->
dest.<id> -> agent -> HTTP, like any event, and cannot loop back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from router.broker.topics import Topics
from router.config import KafkaSettings
from router.ops.explain import Explainer
from router.ops.violations import parse_violations
from router.processor import Processor
from router.workspace import validate_workspace
from tests.delivery.helpers import FAST_DELIVERY, running_agent, unique_kafka, wait_until
from tests.delivery.sink import Sink
from tests.kafka_helpers import consume, produce, values

pytestmark = pytest.mark.integration

ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "properties": {"total": {"type": "number"}},
            "required": ["total"],
        }
    },
}


def workspace_data(kafka: KafkaSettings, state: Path, slack: str, shop: str) -> dict[str, Any]:
    return {
        "kafka": kafka.model_dump(),
        "processor": {"state_dir": str(state), "poll_timeout": "100ms"},
        "tracking_plans": [
            {
                "id": "shop-plan",
                "name": "Shop",
                "rules": {"track": {"Order Completed": ORDER_SCHEMA}},
            },
            # Nothing is planned for the violations source: every event it gets is a
            # violation of this plan, and it forwards its violations back to the shop.
            {"id": "empty"},
        ],
        "sources": [
            {
                "id": "shop",
                "name": "Shop web",
                "write_keys": ["wk-shop"],
                "tracking_plan": {
                    "plan": "shop-plan",
                    "forward_violations": {"source": "violations"},
                },
            },
            {
                "id": "violations",
                "write_keys": ["wk-violations"],
                "tracking_plan": {"plan": "empty", "forward_violations": {"source": "shop"}},
            },
        ],
        "destinations": [
            {
                "id": "slack",
                "name": "Slack",
                "type": "webhook",
                "settings": {"url": slack},
                "sources": ["violations"],
                "delivery": FAST_DELIVERY,
            },
            {
                "id": "shop-hook",
                "name": "Shop hook",
                "type": "webhook",
                "settings": {"url": shop},
                "sources": ["shop"],
                "delivery": FAST_DELIVERY,
            },
        ],
    }


async def test_violation_generated_reaches_a_destination_through_a_source(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    kafka = unique_kafka(kafka)
    topics = Topics(kafka.topic_prefix)
    async with Sink() as slack, Sink() as shop:
        workspace = validate_workspace(workspace_data(kafka, tmp_path, slack.url, shop.url))
        events = [
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "u1",
                "messageId": "m-good",
                "properties": {"total": 10},
            },
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "u2",
                "messageId": "m-bad",
                "timestamp": "2026-11-23T10:00:00.000Z",
                "properties": {"total": "ten"},
            },
        ]
        registry = CollectorRegistry()
        async with Processor(workspace, registry):
            async with running_agent(workspace, ["slack", "shop-hook"]):
                await produce(kafka, topics.raw, events, headers=[("write-key", b"wk-shop")])
                await wait_until(lambda: len(shop.delivered) == 2, timeout=30, what="shop got 2")
                await wait_until(lambda: len(slack.delivered) == 1, timeout=30, what="a violation")
                # Time for a loop to show, were there one.
                await asyncio.sleep(2.0)
            raw = values(await consume(kafka, topics.raw, settle=0.5))
            review = await consume(kafka, topics.violations, settle=0.5)

    (request,) = [r for r in slack.requests if 200 <= r.status < 300]
    (violation,) = request.events
    assert violation["type"] == "track" and violation["event"] == "Violation Generated"
    assert violation["userId"] == "schema-violations"
    assert violation["receivedAt"] and violation["timestamp"]
    assert violation["properties"] == {
        "eventName": "Order Completed",
        "eventType": "track",
        "eventMessageID": "m-bad",
        "eventTimestamp": "2026-11-23T10:00:00.000Z",
        "sourceID": "shop",
        "sourceName": "Shop web",
        "trackingPlanID": "shop-plan",
        "trackingPlanName": "Shop",
        "violationDescription": "properties.total: Invalid type. Expected: number, given: string",
        "violationField": "properties.total",
        "violationType": "Invalid Type",
    }
    # Violations are allowed: the bad order is delivered too, annotated.
    bad = next(e for r in shop.requests for e in r.events if e["messageId"] == "m-bad")
    assert bad["context"]["protocols"]["violations"][0]["type"] == "Invalid Type"
    assert "writeKey" not in violation and violation["messageId"].startswith("sch-")
    # The violation event is itself unplanned for the violations source's plan, which would
    # forward it back to the shop: it is not, so events.raw holds the two orders and one
    # violation, no more.
    assert sorted(e.get("event") for e in raw) == [
        "Order Completed",
        "Order Completed",
        "Violation Generated",
    ]
    assert (
        registry.get_sample_value(
            "router_processor_violations_total",
            {"source": "violations", "type": "Unplanned Event"},
        )
        == 1
    )
    # The same violation is on events.violations, where the operations console reads it.
    (record,) = review
    console = parse_violations(record, Explainer(workspace, topics), {"shop": "shop-plan"})
    assert [(v.source, v.message_id, v.violation_type, v.blocked) for v in console] == [
        ("shop", "m-bad", "Invalid Type", False)
    ]
