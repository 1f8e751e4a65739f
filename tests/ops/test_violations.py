"""Violations per source and plan from ``events.violations`` written by the real processor:
counts by event and violation type, blocked events counted once, samples after middleware."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from router.config import KafkaSettings
from router.processor import Processor
from tests.kafka_helpers import produce
from tests.ops.helpers import (
    WRITE_KEY,
    eventually,
    hook,
    running_console,
    topics,
    unique_kafka,
    workspace,
)

pytestmark = pytest.mark.integration

PLAN = {
    "id": "web-plan",
    "rules": {
        "track": {
            "Order Completed": {
                "type": "object",
                "properties": {
                    "properties": {
                        "type": "object",
                        "required": ["total"],
                        "properties": {"total": {"type": "number"}},
                    }
                },
            }
        }
    },
}


def order(index: int, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"u{index}",
        "messageId": f"v-{index}",
        "properties": {"email": "someone@example.com", **properties},
    }


async def test_violations_by_event_and_type(kafka: KafkaSettings, tmp_path: Path) -> None:
    kafka = unique_kafka(kafka)
    ws = workspace(
        kafka,
        tmp_path / "state",
        [hook("hook", "http://127.0.0.1:9/hook")],
        sources=[
            {
                "id": "web",
                "write_keys": [WRITE_KEY],
                "middleware": [{"type": "hash_fields", "fields": ["properties.email"]}],
                "tracking_plan": {
                    "plan": "web-plan",
                    "unplanned_events": "block",
                    "violations": "allow",
                    "forward_violations": True,
                },
            }
        ],
        plans=[PLAN],
    )
    events = [
        order(0, total=10),  # fine
        order(1),  # Required (total missing), allowed and forwarded
        order(2, total="ten"),  # Invalid Type, allowed and forwarded
        order(3, total="eleven"),  # Invalid Type
        {
            "type": "track",
            "event": "Mystery",
            "userId": "u4",
            "messageId": "v-4",
            "properties": {"email": "secret@example.com"},
        },  # Unplanned Event, blocked
    ]
    async with Processor(ws, CollectorRegistry()):
        await produce(kafka, topics(kafka).raw, events, headers=[("write-key", WRITE_KEY.encode())])
        async with running_console(ws, tmp_path / "c.sqlite") as (_, api):

            async def report() -> Any:
                body = await api.get("/api/v1/violations", window="1h")
                plans = body["plans"]
                return plans if plans and plans[0]["violations"] == 4 else None

            (plan,) = await eventually(report, timeout=30)
    assert (plan["source"], plan["plan"]) == ("web", "web-plan")
    groups = {(g["event"], g["violation"]): g for g in plan["groups"]}
    assert set(groups) == {
        ("Order Completed", "Required"),
        ("Order Completed", "Invalid Type"),
        ("Mystery", "Unplanned Event"),
    }
    assert groups[("Order Completed", "Invalid Type")]["count"] == 2
    assert groups[("Order Completed", "Required")]["count"] == 1
    unplanned = groups[("Mystery", "Unplanned Event")]
    # blocked and forwarded: counted once, and marked blocked
    assert (unplanned["count"], unplanned["blocked"]) == (1, 1)
    sample = unplanned["samples"][0]
    assert sample["messageId"] == "v-4"
    assert sample["event"]["properties"]["email"] != "secret@example.com"  # after middleware
    assert groups[("Order Completed", "Invalid Type")]["samples"][0]["field"] == (
        "properties.total"
    )
