"""Transformations: every kind, conditions, drop, error counting, copy-on-write."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import TypeAdapter

from router.config import Transformation
from router.pipeline.conditions import ConditionSyntaxError
from router.pipeline.transforms import Transformer, compile_transformations
from tests.pipeline.conftest import make_event as base_event

ITEMS = TypeAdapter(list[Transformation])


def transformer(*items: dict[str, Any]) -> Transformer:
    return compile_transformations(ITEMS.validate_python(list(items)))


def make_event(**overrides: Any) -> dict[str, Any]:
    return (
        base_event(
            properties={"total": 30, "currency": "EUR", "items": [{"sku": "a"}]},
            traits={"mail": "x@example.com"},
        )
        | overrides
    )


def test_empty_returns_same_object() -> None:
    event = make_event()
    assert compile_transformations([])(event) is event


def test_rename_event_for_track() -> None:
    event = make_event()
    before = copy.deepcopy(event)
    out = transformer({"type": "rename_event", "to": "Purchase"})(event)
    assert event == before
    assert out == {**before, "event": "Purchase"}
    assert out is not None and out["properties"] is event["properties"]


@pytest.mark.parametrize("kind", ["page", "screen"])
def test_rename_event_sets_name_for_page_and_screen(kind: str) -> None:
    event = {"type": kind, "name": "Home", "userId": "u"}
    out = transformer({"type": "rename_event", "to": "Start"})(event)
    assert out == {"type": kind, "name": "Start", "userId": "u"}
    assert event["name"] == "Home"


@pytest.mark.parametrize("kind", ["identify", "group", "alias", None])
def test_rename_event_ignores_other_types(kind: str | None) -> None:
    event: dict[str, Any] = {"type": kind, "userId": "u", "traits": {}}
    assert transformer({"type": "rename_event", "to": "X"})(event) is event


def test_rename_event_to_same_name_is_identity() -> None:
    event = make_event()
    assert transformer({"type": "rename_event", "to": "Order Completed"})(event) is event


def test_rename_properties() -> None:
    event = make_event()
    before = copy.deepcopy(event)
    out = transformer(
        {
            "type": "rename_properties",
            "fields": {
                "properties.total": "properties.revenue",
                "traits.mail": "traits.email",
                "context.ip": "context.client.ip",
                "properties.missing": "properties.other",
            },
        }
    )(event)
    assert event == before
    assert out is not None
    assert out["properties"] == {"revenue": 30, "currency": "EUR", "items": [{"sku": "a"}]}
    assert out["traits"] == {"email": "x@example.com"}
    assert out["context"] == {"client": {"ip": "1.2.3.4"}, "library": {"name": "analytics.js"}}
    assert out["properties"]["items"] is event["properties"]["items"]
    assert out["context"]["library"] is event["context"]["library"]


def test_rename_properties_missing_source_is_identity() -> None:
    event = make_event()
    run = transformer({"type": "rename_properties", "fields": {"properties.no": "properties.x"}})
    assert run(event) is event


def test_set_values() -> None:
    event = make_event()
    before = copy.deepcopy(event)
    run = transformer(
        {
            "type": "set_values",
            "values": {
                "properties.currency": "USD",
                "properties.meta.source": "router",
                "context.tags": ["a", "b"],
            },
        }
    )
    out = run(event)
    assert event == before
    assert out is not None
    assert out["properties"] == {
        "total": 30,
        "currency": "USD",
        "items": [{"sku": "a"}],
        "meta": {"source": "router"},
    }
    assert out["context"]["tags"] == ["a", "b"]
    assert out["traits"] is event["traits"]
    # container values are fresh per event, never the config's own object
    again = run(make_event())
    assert again is not None and again["context"]["tags"] is not out["context"]["tags"]


def test_set_values_already_set_is_identity() -> None:
    event = make_event()
    run = transformer({"type": "set_values", "values": {"properties.currency": "EUR"}})
    assert run(event) is event
    run = transformer({"type": "set_values", "values": {"properties.items": [{"sku": "a"}]}})
    assert run(event) is event


def test_drop_event() -> None:
    run = transformer({"type": "drop_event", "if": "event = 'Order Completed'"})
    assert run(make_event()) is None
    other = make_event(event="Viewed")
    assert run(other) is other


def test_conditions_select_events() -> None:
    run = transformer(
        {"type": "rename_event", "to": "Purchase", "if": "properties.total > 100"},
        {"type": "set_values", "values": {"properties.big": True}, "if": "properties.total > 20"},
    )
    small = make_event(properties={"total": 5})
    assert run(small) is small
    medium = run(make_event())
    assert medium is not None
    assert medium["event"] == "Order Completed"
    assert medium["properties"]["big"] is True
    large = run(make_event(properties={"total": 500}))
    assert large == {**make_event(properties={"total": 500, "big": True}), "event": "Purchase"}


def test_applied_in_list_order_and_conditions_see_earlier_steps() -> None:
    run = transformer(
        {"type": "rename_event", "to": "Purchase"},
        {"type": "drop_event", "if": "event = 'Order Completed'"},
        {"type": "set_values", "values": {"properties.seen": 1}, "if": "event = 'Purchase'"},
    )
    out = run(make_event())
    assert out is not None
    assert out["event"] == "Purchase"
    assert out["properties"]["seen"] == 1
    run = transformer(
        {"type": "drop_event", "if": "event = 'Order Completed'"},
        {"type": "rename_event", "to": "Purchase"},
    )
    assert run(make_event()) is None


def test_evaluation_error_skips_the_transformation_and_counts() -> None:
    run = transformer(
        {"type": "drop_event", "if": "number(properties.currency) > 1"},
        {"type": "rename_event", "to": "Bad", "if": "lowercase(properties.total) = 'x'"},
        {"type": "set_values", "values": {"properties.ok": True}},
    )
    assert run.errors == 0
    event = make_event()
    out = run(event)
    assert out is not None
    assert out["event"] == "Order Completed"
    assert out["properties"]["ok"] is True
    assert run.errors == 2
    run(make_event())
    assert run.errors == 4


def test_bad_condition_fails_at_compile_time() -> None:
    with pytest.raises(ConditionSyntaxError):
        transformer({"type": "drop_event", "if": "event = 'x' and"})


def test_protected_fields_rejected_by_config() -> None:
    with pytest.raises(ValueError, match="top-level id"):
        ITEMS.validate_python([{"type": "set_values", "values": {"userId": "x"}}])
