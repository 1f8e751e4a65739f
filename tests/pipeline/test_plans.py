"""Stage 5: tracking plans (Segment Protocols) enforced per source."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.config import PlanEnforcement, TrackingPlan
from router.pipeline.plans import ViolationTarget, compile_plan, plan_problems

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
    assert outcome.event is None and outcome.blocked_reason == "schema_violation"
    assert [v["type"] for v in outcome.violations] == ["Unplanned Event", "Required"]
    assert outcome.violations[1]["description"] == "userId is required"


def test_identify_traits_checked() -> None:
    outcome = stage(violations="block")({"type": "identify", "userId": "u", "traits": {"email": 5}})
    assert outcome.event is None and outcome.violations[0]["field"] == "traits.email"


def test_violation_generated_events() -> None:
    plan = stage(forward_violations=True)
    event = order(total="ten")
    event["timestamp"] = "2026-11-23T10:00:00.000Z"
    outcome = plan(event)
    (generated,) = plan.violation_events(event, outcome.violations)
    assert generated["type"] == "track"
    assert generated["event"] == "Violation Generated"
    assert generated["userId"] == "schema-violations"
    assert generated["messageId"].startswith("sch-")
    assert generated["properties"] == {
        "eventName": "Order Completed",
        "eventType": "track",
        "eventMessageID": "m1",
        "eventTimestamp": "2026-11-23T10:00:00.000Z",
        "sourceID": "web",
        "sourceName": "web",
        "trackingPlanID": "web-plan",
        "trackingPlanName": "web-plan",
        "violationDescription": "properties.total: Invalid type. Expected: number, given: string",
        "violationField": "properties.total",
        "violationType": "Invalid Type",
    }
    # The same violation of the same message gets the same id (a replay is deduplicated).
    assert plan.violation_events(event, outcome.violations) == [generated]


def test_violation_records_for_each_target() -> None:
    raw = ViolationTarget("events.raw", (("write-key", b"wk-violations"),), by_user=True)
    review = ViolationTarget("events.violations")
    plan = compile_plan(PLAN, PlanEnforcement(plan="web-plan"), "web", forward_to=(raw, review))
    event = order(total="ten", currency="GBP")
    first, second, third, fourth = plan.violation_records(event, plan(event).violations)
    assert [(r.topic, r.key, r.headers) for r in (first, second, third, fourth)] == [
        ("events.raw", b"u", (("write-key", b"wk-violations"),)),
        ("events.raw", b"u", (("write-key", b"wk-violations"),)),
        ("events.violations", b"schema-violations", ()),
        ("events.violations", b"schema-violations", ()),
    ]
    assert (
        first.value == third.value
        and orjson.loads(second.value)["properties"]["violationField"] == "properties.currency"
    )
    assert (
        compile_plan(PLAN, PlanEnforcement(plan="web-plan"), "web").violation_records(
            event, plan(event).violations
        )
        == []
    )  # not forwarding


def test_a_violation_events_own_violations_are_not_forwarded() -> None:
    plan = compile_plan(
        PLAN,
        PlanEnforcement(plan="web-plan", forward_violations=True),
        "web",
        forward_to=(ViolationTarget("events.violations"),),
    )
    event = order(total="ten")
    (record,) = plan.violation_records(event, plan(event).violations)
    generated = orjson.loads(record.value)
    again = plan(generated)  # "Violation Generated" is not in the plan: a violation itself
    assert again.violations and plan.violation_events(generated, again.violations) == []
    assert plan.violation_records(generated, again.violations) == []


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


# ---------------------------------------------------------------- page, screen, alias


SCREENS = TrackingPlan(
    id="app-plan",
    name="App plan",
    rules={
        "page": {
            "Page Viewed": {
                "type": "object",
                "properties": {
                    "properties": {
                        "type": "object",
                        "properties": {"path": {"type": "string"}},
                        "required": ["path"],
                    }
                },
            },
            "Pricing": {
                "type": "object",
                "properties": {
                    "properties": {
                        "type": "object",
                        "properties": {"plan": {"enum": ["free", "pro"]}},
                        "required": ["plan"],
                    }
                },
            },
        },
        "screen": {
            "Feed": {
                "type": "object",
                "properties": {
                    "properties": {
                        "type": "object",
                        "properties": {"items": {"type": "integer"}},
                    }
                },
            }
        },
        "alias": {"type": "object", "properties": {"previousId": {"pattern": "^anon-"}}},
        "identify": {},
    },
)


def app_stage(**enforcement: Any) -> Any:
    return compile_plan(SCREENS, PlanEnforcement(plan="app-plan", **enforcement), "app")


def call(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "userId": "u", "messageId": f"m-{kind}", **fields}


def test_a_named_page_rule_checks_pages_of_that_name() -> None:
    plan = app_stage(violations="block")
    ok = plan(call("page", name="Pricing", properties={"plan": "pro"}))
    assert ok.event is not None and ok.violations == []
    bad = plan(call("page", name="Pricing", properties={"plan": "gold", "path": "/p"}))
    assert bad.event is None
    assert [(v["type"], v["field"]) for v in bad.violations] == [
        ("Invalid Enum", "properties.plan")
    ]


def test_page_viewed_checks_every_other_page_named_or_not() -> None:
    plan = app_stage(violations="block", unplanned_events="block")
    assert plan(call("page", name="Home", properties={"path": "/"})).violations == []
    assert plan(call("page", properties={"path": "/"})).violations == []
    missing = plan(call("page", name="Home", properties={}))
    assert missing.blocked_reason == "schema_violation"
    assert missing.violations[0]["description"] == "properties.path is required"


def test_screens_by_name_and_unplanned_screens() -> None:
    plan = app_stage(unplanned_events="block")
    assert plan(call("screen", name="Feed", properties={"items": 3})).violations == []
    wrong = plan(call("screen", name="Feed", properties={"items": 2.5}))
    assert wrong.event is not None  # violations allowed: annotated, delivered
    assert wrong.event["context"]["protocols"]["violations"][0]["field"] == "properties.items"
    # No "Screen Viewed" rule: a screen of another name is unplanned.
    blocked = plan(call("screen", name="Settings"))
    assert blocked.event is None and blocked.blocked_reason == "unplanned_event"
    assert blocked.violations == [
        {
            "type": "Unplanned Event",
            "field": "name",
            "description": "screen 'Settings' not in tracking plan app-plan",
        }
    ]


def test_alias_rule() -> None:
    plan = app_stage(violations="block")
    assert plan(call("alias", previousId="anon-1")).violations == []
    bad = plan(call("alias", previousId="u-1"))
    assert bad.event is None and bad.violations[0]["field"] == "previousId"


def test_unplanned_blocking_covers_every_call_type() -> None:
    plan = app_stage(unplanned_events="block")
    blocked = {
        kind: plan(call(kind, **fields)).blocked_reason
        for kind, fields in [
            ("track", {"event": "Anything"}),
            ("page", {}),  # planned: Page Viewed
            ("screen", {}),  # unplanned: no Screen Viewed
            ("identify", {}),  # planned: identify: {} (any shape)
            ("group", {"groupId": "g"}),  # unplanned: no group rule
            ("alias", {"previousId": "anon-2"}),
        ]
    }
    assert blocked == {
        "track": "unplanned_event",
        "page": None,
        "screen": "unplanned_event",
        "identify": None,
        "group": "unplanned_event",
        "alias": None,
    }
    # allowed, an unplanned event is delivered and says why it is one
    allowed = app_stage()(call("group", groupId="g"))
    assert allowed.event is not None
    assert allowed.event["context"]["protocols"]["violations"][0] == {
        "type": "Unplanned Event",
        "field": "type",
        "description": "group calls not in tracking plan app-plan",
    }


def test_unplanned_properties_omitted_from_pages() -> None:
    outcome = app_stage(unplanned_properties="omit")(
        call("page", name="Pricing", properties={"plan": "pro", "debug": True})
    )
    assert outcome.event is not None and outcome.event["properties"] == {"plan": "pro"}
    assert outcome.event["context"]["protocols"]["omitted"] == ["properties.debug"]


def test_violation_events_name_pages_like_segment() -> None:
    plan = compile_plan(
        SCREENS,
        PlanEnforcement(plan="app-plan", forward_violations=True),
        "app",
        source_name="Mobile app",
    )
    page = call("page", properties={})
    (generated,) = plan.violation_events(page, plan(page).violations)
    properties = generated["properties"]
    assert properties["eventName"] == "Page Viewed" and properties["eventType"] == "page"
    assert properties["sourceName"] == "Mobile app"
    assert properties["trackingPlanName"] == "App plan"


def test_invalid_page_screen_alias_schemas_are_config_problems() -> None:
    bad = TrackingPlan(
        id="p",
        rules={"page": {"Home": {"type": 1}}, "screen": {}, "alias": {"required": "x"}},
    )
    assert sorted(sub for sub, _ in plan_problems(bad)) == [".alias", ".page.Home"]
