"""Plans in Segment's JSON and in ours: conversion, and the workspace reading either."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from router.config import ConfigError, PlanEnforcement
from router.pipeline.plans import compile_plan
from router.plans.formats import (
    SHAPE_OURS,
    SHAPE_SEGMENT,
    SHAPE_SEGMENT_RULES,
    PlanFormatError,
    convert,
    suggested_id,
)
from router.workspace import load_workspace, validate_workspace

HERE = Path(__file__).parent
EXPORT = HERE / "segment_export.json"


def export() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(EXPORT.read_bytes())
    return data


def order(**properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "messageId": "m1",
        "context": {"library": {"name": "analytics.js"}},
        "properties": properties,
    }


GOOD_ORDER = {
    "order_id": "o-1",
    "total": 30.5,
    "currency": "EUR",
    "products": [{"product_id": "p1", "price": 30.5, "quantity": 1}],
}


def test_segment_export_converts_to_our_rules() -> None:
    converted = convert(export())
    assert converted.shape == SHAPE_SEGMENT
    plan = converted.plan
    assert plan["name"] == "Acme Ecommerce TP"
    rules = plan["rules"]
    assert sorted(rules) == ["common", "group", "identify", "page", "track"]
    assert sorted(rules["track"]) == [
        "Order Completed",
        "Page Viewed",
        "Product Viewed",
        "Signed Up",
    ]
    # The oldest version is kept (Segment's choice without context.protocols.event_version).
    order_rule = rules["track"]["Order Completed"]
    assert "subtotal" not in order_rule["properties"]["properties"]["properties"]
    assert order_rule["description"].startswith("A customer completed checkout")
    assert rules["page"] == {"Page Viewed": rules["track"]["Page Viewed"]}
    assert any("versions [1, 2]" in note for note in converted.notes)
    assert any("every page() call" in note for note in converted.notes)
    assert suggested_id(export(), "x") == "acme-ecommerce-tp"


def test_a_converted_segment_plan_enforces_like_segment() -> None:
    from router.config import TrackingPlan

    plan = TrackingPlan.model_validate({"id": "acme", **convert(export()).plan})
    stage = compile_plan(plan, PlanEnforcement(plan="acme", violations="block"), "web")
    assert stage(order(**GOOD_ORDER)).violations == []
    missing = stage(order(order_id="o-2", total=3, currency="EUR"))
    assert [v["description"] for v in missing.violations] == ["properties.products is required"]
    nested = stage(order(**{**GOOD_ORDER, "products": [{"product_id": "p1", "price": "1"}]}))
    assert [v["field"] for v in nested.violations] == ["properties.products.0.price"]
    no_library = stage({**order(**GOOD_ORDER), "context": {"library": {}}})
    assert [v["field"] for v in no_library.violations] == ["context.library.name"]  # global
    page = {"type": "page", "anonymousId": "a", "name": "Home", "properties": {"path": "/"}}
    assert [v["field"] for v in stage(page).violations] == ["properties.url"]
    group = {"type": "group", "userId": "u", "groupId": "g", "traits": {"employees": 10}}
    assert [v["description"] for v in stage(group).violations] == ["traits.name is required"]


def test_events_at_the_top_level_are_segment_too() -> None:
    converted = convert({"events": [{"name": "Signed Up", "rules": {"type": "object"}}]})
    assert converted.shape == SHAPE_SEGMENT
    assert converted.plan["rules"] == {"track": {"Signed Up": {"type": "object"}}}


def test_public_api_rule_list() -> None:
    schema = {"type": "object", "properties": {"properties": {"required": ["path"]}}}
    document = {
        "data": {
            "rules": [
                {
                    "type": "COMMON",
                    "key": None,
                    "version": 1,
                    "jsonSchema": {"required": ["userId"]},
                },
                {"type": "TRACK", "key": "Cart Viewed", "version": 1, "jsonSchema": {}},
                {"type": "TRACK", "key": "Cart Viewed", "version": 2, "jsonSchema": {"x": 1}},
                # Terraform writes the schema as a JSON string.
                {
                    "type": "PAGE",
                    "key": None,
                    "version": 1,
                    "json_schema": orjson.dumps(schema).decode(),
                },
                {"type": "SCREEN", "key": "Feed", "version": 1, "jsonSchema": {}},
                {"type": "IDENTIFY", "version": 1, "jsonSchema": {"type": "object"}},
                {"type": "GROUP", "version": 1, "jsonSchema": {}, "deprecatedAt": "2024-01-01"},
            ]
        }
    }
    converted = convert(document)
    assert converted.shape == SHAPE_SEGMENT_RULES
    assert converted.plan["rules"] == {
        "common": {"required": ["userId"]},
        "identify": {"type": "object"},
        "track": {"Cart Viewed": {}},
        "page": {"Page Viewed": schema},
        "screen": {"Feed": {}},
    }
    assert "1 deprecated rule(s) left out" in converted.notes


def test_our_shape_passes_through() -> None:
    ours = {"name": "Web", "rules": {"track": {"A": {}}, "alias": {}}}
    converted = convert(ours)
    assert converted.shape == SHAPE_OURS and converted.plan == ours


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([1, 2], ("", "a tracking plan must be a JSON or YAML object")),
        ({"events": [{"description": "no name"}]}, ("events[0].name", "an event needs a name")),
        (
            {"events": [{"name": "A", "rules": 3}]},
            ("events[0].rules", "a JSON Schema must be an object"),
        ),
        (
            {"rules": {"events": [], "tracks": {}}},
            ("rules.tracks", "unknown key in a Segment tracking plan"),
        ),
        ({"rules": [{"type": "FOO"}]}, ("rules[0].type", "unknown rule type 'FOO'")),
        ({"rules": {"track": {}, "pages": {}}}, ("rules.pages", "unknown key")),
        ({"description": "x"}, ("", "not a tracking plan")),
    ],
)
def test_broken_documents_say_where(document: Any, problem: tuple[str, str]) -> None:
    with pytest.raises(PlanFormatError) as caught:
        convert(document)
    path, message = caught.value.problems[0]
    assert path == problem[0] and message.startswith(problem[1])


# ---------------------------------------------------------------- the workspace


def workspace_file(tmp_path: Path, plans: list[dict[str, Any]]) -> Path:
    document = {
        "sources": [{"id": "web", "write_keys": ["k"], "tracking_plan": {"plan": "acme"}}],
        "tracking_plans": plans,
    }
    path = tmp_path / "workspace.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_workspace_references_a_segment_export_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "acme.json").write_bytes(EXPORT.read_bytes())
    workspace = load_workspace(
        workspace_file(tmp_path, [{"id": "acme", "file": "plans/acme.json"}])
    )
    (plan,) = workspace.tracking_plans
    assert plan.id == "acme" and plan.name == "Acme Ecommerce TP" and plan.file == "plans/acme.json"
    assert "Order Completed" in plan.rules.track and plan.rules.common is not None


def test_workspace_references_a_plan_file_in_our_shape(tmp_path: Path) -> None:
    ours = {"id": "ignored", "name": "Ours", "rules": {"page": {"Page Viewed": {}}, "identify": {}}}
    (tmp_path / "ours.yaml").write_text(yaml.safe_dump(ours))
    path = workspace_file(tmp_path, [{"id": "acme", "name": "Kept", "file": "ours.yaml"}])
    (plan,) = load_workspace(path).tracking_plans
    assert plan.id == "acme" and plan.name == "Kept"
    assert plan.rules.page == {"Page Viewed": {}} and plan.rules.identify == {}


def test_workspace_accepts_segments_shape_inline() -> None:
    data = {
        "sources": [{"id": "web", "write_keys": ["k"], "tracking_plan": {"plan": "acme"}}],
        "tracking_plans": [
            {"id": "acme", "events": [{"name": "Signed Up", "rules": {"type": "object"}}]}
        ],
    }
    (plan,) = validate_workspace(data).tracking_plans
    assert plan.rules.track == {"Signed Up": {"type": "object"}}


def test_workspace_plan_file_problems_have_paths(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"events": [{"name": "A", "rules": {"type": 5}}, {}]}')
    path = workspace_file(
        tmp_path,
        [
            {"id": "acme", "file": "broken.json"},
            {"id": "gone", "file": "missing.json"},
            {"id": "both", "file": "broken.json", "rules": {}},
        ],
    )
    with pytest.raises(ConfigError) as caught:
        load_workspace(path)
    problems = caught.value.problems
    assert ("tracking_plans[0].file", "events[1].name: an event needs a name") in problems
    assert any(p == "tracking_plans[1].file" and m.startswith("cannot read") for p, m in problems)
    assert ("tracking_plans[2].file", "give either file or rules, not both") in problems


def test_forward_violations_must_name_another_existing_source() -> None:
    def with_forward(target: str) -> dict[str, Any]:
        enforcement = {"plan": "p", "forward_violations": {"source": target}}
        return {
            "sources": [
                {"id": "web", "write_keys": ["k1"], "tracking_plan": enforcement},
                {"id": "violations", "write_keys": ["k2"]},
            ],
            "tracking_plans": [{"id": "p"}],
        }

    validate_workspace(with_forward("violations"))
    for target, message in [
        ("nowhere", "unknown source 'nowhere'"),
        ("web", "a source cannot receive its own violations"),
    ]:
        with pytest.raises(ConfigError) as caught:
            validate_workspace(with_forward(target))
        assert any(message in m for _, m in caught.value.problems), caught.value.problems
