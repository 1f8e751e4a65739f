"""Stage 5: tracking plans (Segment Protocols) enforced per source."""

from __future__ import annotations

from typing import Any

import pytest

from router.config import PlanEnforcement, TrackingPlan
from router.pipeline.plans import compile_plan, plan_problems

ORDER = {
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "properties": {"total": {"type": "number"}, "currency": {"enum": ["EUR", "USD"]}},
            "required": ["total"],
        }
    },
}
PLAN = TrackingPlan(
    id="web-plan",
    rules={
        "common": {"type": "object", "required": ["userId"]},
        "track": {"Order Completed": ORDER},
        "identify": {
            "type": "object",
            "properties": {
                "traits": {"type": "object", "properties": {"email": {"type": "string"}}}
            },
        },
    },
)


def stage(**enforcement: Any) -> Any:
    return compile_plan(PLAN, PlanEnforcement(plan="web-plan", **enforcement), "web")


def order(**properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": "u",
        "messageId": "m1",
        "properties": properties,
    }


def test_valid_event_passes_untouched() -> None:
    event = order(total=10, currency="EUR")
    outcome = stage(violations="block")(event)
    assert outcome.event is event and outcome.violations == []
    assert "context" not in event


def test_unplanned_event_allowed_or_blocked() -> None:
    unplanned = {"type": "track", "event": "Mystery", "userId": "u", "messageId": "m2"}
    allowed = stage()(dict(unplanned))
    assert allowed.event is not None
    assert allowed.event["context"]["protocols"]["violations"][0]["type"] == "Unplanned Event"
    blocked = stage(unplanned_events="block")(dict(unplanned))
    assert blocked.event is None and blocked.blocked_reason == "unplanned_event"


def test_unplanned_properties_are_omitted_and_recorded() -> None:
    outcome = stage(unplanned_properties="omit")(order(total=5, coupon="X", note="n"))
    assert outcome.event is not None
    assert outcome.event["properties"] == {"total": 5}
    assert sorted(outcome.event["context"]["protocols"]["omitted"]) == [
        "properties.coupon",
        "properties.note",
    ]


@pytest.mark.parametrize(
    ("properties", "kind", "field"),
    [
        ({"total": "ten"}, "Invalid Type", "properties.total"),
        ({"total": 1, "currency": "GBP"}, "Invalid Enum", "properties.currency"),
        ({}, "Required", "properties.total"),
    ],
)
def test_schema_violations_block_omit_or_pass(
    properties: dict[str, Any], kind: str, field: str
) -> None:
    blocked = stage(violations="block")(order(**properties))
    assert blocked.event is None and blocked.blocked_reason == "schema_violation"
    assert [(v["type"], v["field"]) for v in blocked.violations] == [(kind, field)]

    allowed = stage()(order(**properties))
    assert allowed.event is not None
    assert allowed.event["context"]["protocols"]["violations"][0]["field"] == field

    omitted = stage(violations="omit")(order(**properties))
    assert omitted.event is not None
    if kind != "Required":
        assert field.split(".")[1] not in omitted.event["properties"]
        assert omitted.event["context"]["protocols"]["omitted"] == [field]


def test_common_rule_applies_to_every_type() -> None:
    page = {"type": "page", "anonymousId": "a", "messageId": "m3"}
    outcome = stage(violations="block")(page)
    assert outcome.event is None
    assert outcome.violations[0]["type"] == "Required"


def test_identify_traits_checked() -> None:
    outcome = stage(violations="block")({"type": "identify", "userId": "u", "traits": {"email": 5}})
    assert outcome.event is None and outcome.violations[0]["field"] == "traits.email"


def test_violation_generated_events() -> None:
    plan = stage(forward_violations=True)
    event = order(total="ten")
    outcome = plan(event)
    (generated,) = plan.violation_events(event, outcome.violations)
    assert generated["event"] == "Violation Generated"
    assert generated["userId"] == "schema-violations"
    assert generated["properties"] == {
        "eventName": "Order Completed",
        "eventType": "track",
        "eventMessageID": "m1",
        "sourceID": "web",
        "trackingPlanID": "web-plan",
        "violationDescription": "'ten' is not of type 'number'",
        "violationField": "properties.total",
        "violationType": "Invalid Type",
    }


def test_defaults_in_a_schema_are_not_written_into_events() -> None:
    plan = TrackingPlan(
        id="p",
        rules={
            "track": {
                "E": {
                    "type": "object",
                    "properties": {
                        "properties": {
                            "type": "object",
                            "properties": {"x": {"type": "number", "default": 1}},
                        }
                    },
                }
            }
        },
    )
    event = {"type": "track", "event": "E", "userId": "u", "properties": {}}
    compile_plan(plan, PlanEnforcement(plan="p"), "web")(event)
    assert event["properties"] == {}


def test_invalid_schema_is_a_config_problem() -> None:
    bad = TrackingPlan(id="p", rules={"track": {"E": {"type": "nonsense"}}})
    problems = plan_problems(bad)
    assert problems and problems[0][0] == ".track.E"
