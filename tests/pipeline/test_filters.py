"""Destination filters: every kind, Segment's fixed order, sampling, errors, copy-on-write."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from pydantic import TypeAdapter

from router.config import ConfigError, Filter
from router.pipeline.conditions import ConditionSyntaxError
from router.pipeline.filters import FilterResult, compile_filters, sample_point
from router.workspace import validate_workspace
from tests.pipeline.conftest import make_event

FILTERS = TypeAdapter(list[Filter])


def filters(*items: dict[str, Any], rng: Any = None) -> Any:
    parsed = FILTERS.validate_python(list(items))
    return compile_filters(parsed) if rng is None else compile_filters(parsed, rng=rng)


def test_empty_filter_list_returns_the_event_itself() -> None:
    event = make_event()
    result = compile_filters([])(event)
    assert result == FilterResult(event, None)
    assert result.event is event


def test_result_is_a_named_tuple() -> None:
    result = compile_filters([])(make_event())
    event, dropped_by = result
    assert dropped_by is None and event is result.event


# ---------------------------------------------------------------- drop / only


def test_drop() -> None:
    run = filters({"type": "drop", "if": "event = 'Order Completed'"})
    assert run(make_event()) == FilterResult(None, "drop")
    other = make_event(event="Viewed")
    assert run(other).event is other
    assert run(other).dropped_by is None


def test_only() -> None:
    run = filters({"type": "only", "if": "type = 'track' and properties.total > 10"})
    kept = make_event()
    assert run(kept) == FilterResult(kept, None)
    assert run(kept).event is kept
    assert run(make_event(type="page")) == FilterResult(None, "only")


def test_several_drop_and_only_filters_all_apply() -> None:
    run = filters(
        {"type": "only", "if": "type = 'track'"},
        {"type": "drop", "if": "event = 'Secret'"},
        {"type": "drop", "if": "userId = 'bot'"},
    )
    assert run(make_event()).dropped_by is None
    assert run(make_event(type="identify")).dropped_by == "only"
    assert run(make_event(event="Secret")).dropped_by == "drop"
    assert run(make_event(userId="bot")).dropped_by == "drop"


def test_drop_with_evaluation_error_drops_as_filter_error() -> None:
    run = filters({"type": "drop", "if": "number(properties.currency) > 1"})
    assert run(make_event()) == FilterResult(None, "filter_error")


def test_only_with_evaluation_error_drops_as_filter_error() -> None:
    run = filters({"type": "only", "if": "lowercase(properties.total) = 'x'"})
    assert run(make_event()) == FilterResult(None, "filter_error")


def test_bad_condition_fails_at_compile_time() -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        filters({"type": "drop", "if": "event = "})
    assert caught.value.position == 8


# ---------------------------------------------------------------- drop_properties


def test_drop_properties_copy_on_write_with_array_fan_out() -> None:
    event = make_event()
    before = copy.deepcopy(event)
    run = filters(
        {"type": "drop_properties", "fields": ["properties.products.price", "context.ip"]}
    )
    result = run(event)
    assert result.dropped_by is None
    assert event == before
    out = result.event
    assert out is not None
    assert out["properties"]["products"] == [{"sku": "a"}, {"sku": "b"}]
    assert out["context"] == {"library": {"name": "analytics.js"}}
    assert out["context"]["library"] is event["context"]["library"]
    assert out["traits"] is event["traits"]
    assert {k: out[k] for k in ("type", "event", "userId", "messageId")} == {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "messageId": "m1",
    }


def test_drop_properties_nothing_to_drop_returns_same_object() -> None:
    event = make_event()
    run = filters({"type": "drop_properties", "fields": ["properties.nope", "context.x.y"]})
    assert run(event).event is event


def test_drop_properties_with_condition() -> None:
    run = filters(
        {"type": "drop_properties", "fields": ["properties.email"], "if": "traits.plan = 'free'"}
    )
    pro = make_event()
    assert run(pro).event is pro
    free = make_event(traits={"plan": "free"})
    out = run(free).event
    assert out is not None and "email" not in out["properties"]
    assert "email" in free["properties"]


def test_drop_properties_condition_error_drops_the_event() -> None:
    run = filters(
        {"type": "drop_properties", "fields": ["properties.email"], "if": "number(event) = 1"}
    )
    assert run(make_event()) == FilterResult(None, "filter_error")


# ---------------------------------------------------------------- allow_properties


def test_allow_properties() -> None:
    event = make_event()
    before = copy.deepcopy(event)
    run = filters({"type": "allow_properties", "fields": ["properties.total", "traits.plan"]})
    out = run(event).event
    assert event == before
    assert out == {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "messageId": "m1",
        "properties": {"total": 30},
        "context": event["context"],
        "traits": {"plan": "pro"},
    }
    assert out["context"] is event["context"]
    assert out["traits"] is event["traits"]


def test_allow_properties_everything_allowed_returns_same_object() -> None:
    event = make_event(properties={"total": 1})
    run = filters({"type": "allow_properties", "fields": ["properties.total"]})
    assert run(event).event is event


def test_allow_properties_with_condition() -> None:
    run = filters(
        {"type": "allow_properties", "fields": ["properties.total"], "if": "type = 'page'"}
    )
    track = make_event()
    assert run(track).event is track
    page = run(make_event(type="page")).event
    assert page is not None and page["properties"] == {"total": 30}


# ---------------------------------------------------------------- order


def test_fixed_order_drop_runs_before_allow_properties() -> None:
    # Listed as [allow_properties, drop]; the drop still sees (and matches) the full event.
    run = filters(
        {"type": "allow_properties", "fields": ["properties.total"]},
        {"type": "drop", "if": "properties.currency = 'EUR'"},
    )
    assert run(make_event()) == FilterResult(None, "drop")


def test_fixed_order_drop_properties_before_allow_properties() -> None:
    # allow first in the list; drop_properties still applies first, then allow restricts.
    run = filters(
        {"type": "allow_properties", "fields": ["properties.total", "properties.currency"]},
        {"type": "drop_properties", "fields": ["properties.currency"]},
    )
    out = run(make_event()).event
    assert out is not None and out["properties"] == {"total": 30}


def test_fixed_order_drop_properties_condition_sees_event_before_allow() -> None:
    run = filters(
        {"type": "allow_properties", "fields": ["properties.total"]},
        {
            "type": "drop_properties",
            "fields": ["properties.total"],
            "if": "properties.currency = 'EUR'",
        },
    )
    out = run(make_event()).event
    assert out is not None and out["properties"] == {}


def test_fixed_order_conditions_see_the_unedited_event_for_drop() -> None:
    run = filters(
        {"type": "drop_properties", "fields": ["properties.email"]},
        {"type": "only", "if": "contains(properties.email, '@')"},
    )
    out = run(make_event()).event
    assert out is not None and "email" not in out["properties"]


def test_fixed_order_sample_before_drop() -> None:
    run = filters(
        {"type": "drop", "if": "true"},
        {"type": "sample", "fraction": 0},
    )
    assert run(make_event()).dropped_by == "sample"


def test_later_edit_conditions_see_earlier_edits() -> None:
    run = filters(
        {"type": "drop_properties", "fields": ["properties.email"]},
        {
            "type": "allow_properties",
            "fields": ["properties.total"],
            "if": "properties.email = null",
        },
    )
    out = run(make_event()).event
    assert out is not None and out["properties"] == {"total": 30}


# ---------------------------------------------------------------- sample


def test_sample_fraction_one_and_zero() -> None:
    event = make_event()
    assert filters({"type": "sample", "fraction": 1})(event).event is event
    assert filters({"type": "sample", "fraction": 0})(event) == FilterResult(None, "sample")
    assert filters({"type": "sample", "fraction": 0, "path": "userId"})(event).dropped_by == (
        "sample"
    )


def test_sample_by_path_is_deterministic() -> None:
    run = filters({"type": "sample", "fraction": 0.5, "path": "userId"})
    for i in range(200):
        event = make_event(userId=f"user-{i}")
        first = run(event).dropped_by
        assert all(run(make_event(userId=f"user-{i}")).dropped_by == first for _ in range(3))
        # another compile (another process) decides the same way
        other = filters({"type": "sample", "fraction": 0.5, "path": "userId"})
        assert other(event).dropped_by == first


def test_sample_by_path_keeps_about_the_fraction() -> None:
    run = filters({"type": "sample", "fraction": 0.5, "path": "userId"})
    kept = sum(run(make_event(userId=f"user-{i}")).event is not None for i in range(10_000))
    # Deterministic for these ids; the band is wide so a hash change cannot make it flaky.
    assert 4_500 <= kept <= 5_500
    run = filters({"type": "sample", "fraction": 0.1, "path": "userId"})
    kept = sum(run(make_event(userId=f"user-{i}")).event is not None for i in range(10_000))
    assert 700 <= kept <= 1_300


def test_sample_by_path_decision_matches_sample_point() -> None:
    run = filters({"type": "sample", "fraction": 0.3, "path": "properties.total"})
    for total in range(100):
        event = make_event(properties={"total": total})
        kept = run(event).event is not None
        assert kept is (sample_point(total) < 0.3)


def test_sample_point_is_stable_and_in_range() -> None:
    # Pinned values: changing the hash would re-shuffle every customer's sample.
    assert sample_point("user-1") == sample_point("user-1")
    assert sample_point("user-1") != sample_point("user-2")
    assert sample_point(1) == sample_point(1)
    assert sample_point({"b": 1, "a": 2}) == sample_point({"a": 2, "b": 1})
    for value in ["", "x", 0, 1.5, True, [1], {"a": 1}]:
        assert 0.0 <= sample_point(value) < 1.0
    assert sample_point("user-1") == pytest.approx(0.6041924073669338)
    assert sample_point(42) == pytest.approx(0.3425939642242156)


def test_sample_without_path_uses_rng() -> None:
    values = iter([0.1, 0.9, 0.49, 0.5])
    run = filters({"type": "sample", "fraction": 0.5}, rng=lambda: next(values))
    assert [run(make_event()).dropped_by for _ in range(4)] == [None, "sample", None, "sample"]


def test_sample_without_path_keeps_about_the_fraction() -> None:
    rng = random.Random(7)
    run = filters({"type": "sample", "fraction": 0.25}, rng=rng.random)
    kept = sum(run(make_event()).event is not None for _ in range(10_000))
    assert 2_000 <= kept <= 3_000


def test_sample_by_path_falls_back_to_rng_without_a_value() -> None:
    values = iter([0.1, 0.9])
    run = filters({"type": "sample", "fraction": 0.5, "path": "userId"}, rng=lambda: next(values))
    anonymous = make_event(userId=None)
    assert run(anonymous).dropped_by is None
    assert run({"type": "track"}).dropped_by == "sample"


def test_sample_with_condition_only_samples_matching_events() -> None:
    run = filters({"type": "sample", "fraction": 0, "if": "event = 'Page Scrolled'"})
    event = make_event()
    assert run(event).event is event
    assert run(make_event(event="Page Scrolled")) == FilterResult(None, "sample")


def test_sample_condition_error_drops() -> None:
    run = filters({"type": "sample", "fraction": 1, "if": "length(properties.total) = 1"})
    assert run(make_event()) == FilterResult(None, "filter_error")


# ---------------------------------------------------------------- everything together


def test_all_kinds_together() -> None:
    run = filters(
        {"type": "allow_properties", "fields": ["properties.total", "properties.products"]},
        {"type": "drop_properties", "fields": ["properties.products.price"]},
        {"type": "only", "if": "type = 'track'"},
        {"type": "drop", "if": "userId = 'bot'"},
        {"type": "sample", "fraction": 1, "path": "userId"},
    )
    event = make_event()
    before = copy.deepcopy(event)
    result = run(event)
    assert event == before
    assert result.dropped_by is None
    assert result.event is not None
    assert result.event["properties"] == {"total": 30, "products": [{"sku": "a"}, {"sku": "b"}]}
    assert result.event["context"] is event["context"]
    assert run(make_event(userId="bot")) == FilterResult(None, "drop")
    assert run(make_event(type="page")) == FilterResult(None, "only")


@pytest.mark.parametrize("kind", ["drop_properties", "allow_properties"])
@pytest.mark.parametrize("field", ["type", "userId", "anonymousId", "messageId", "receivedAt"])
def test_top_level_ids_cannot_be_filtered_out(kind: str, field: str) -> None:
    """As for transformations: an event without its ids cannot be delivered or deduplicated."""
    problems = _config_problems(
        {
            "id": "hook",
            "name": "Hook",
            "type": "webhook",
            "sources": ["web"],
            "settings": {"url": "http://127.0.0.1:1/"},
            "filters": [
                {"type": "drop", "if": 'event = "x"'},
                {"type": kind, "fields": ["properties.ok", field]},
                {"type": kind, "fields": [f"{field}.inner"]},
            ],
        }
    )
    assert [path for path, _ in problems] == [
        "destinations[0].filters[1].fields",
        "destinations[0].filters[2].fields",
    ]
    assert all("top-level id" in message for _, message in problems)
    FILTERS.validate_python([{"type": kind, "fields": ["properties.userId", "context.messageId"]}])


def _config_problems(destination: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate_workspace(
            {"sources": [{"id": "web", "write_keys": ["k"]}], "destinations": [destination]}
        )
    return info.value.problems
