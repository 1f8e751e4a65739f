"""Specialised closures in conditions, filters and transformations against their general path.

- Conditions: ``field = "literal"``, ``field != "literal"`` and ``contains(field, "literal")``
  read a one-segment field inline; they must agree with the FQL semantics computed directly.
- Filters and transformations compile a single rule into one closure; adding a rule that
  never acts (an ``if: false`` condition, a gate that never drops) forces the general loop,
  which must give the same result, the same identity and the same drop reason.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from pydantic import TypeAdapter

from router.config import Filter, Transformation
from router.pipeline.conditions import (
    ConditionEvaluationError,
    compile_condition,
    field_test,
    json_equal,
)
from router.pipeline.filters import compile_filters
from router.pipeline.transforms import compile_transformations

FILTERS = TypeAdapter(list[Filter])
TRANSFORMATIONS = TypeAdapter(list[Transformation])

VALUES: list[Any] = [
    None,
    "",
    "track",
    "page",
    "Cart Viewed",
    "user-1999",
    "xx user-1999 yy",
    1,
    1.0,
    True,
    False,
    ["track"],
    ["user-1999", 1],
    {"a": 1},
]


def sample_events(count: int = 400) -> list[dict[str, Any]]:
    rng = random.Random(5)
    events: list[dict[str, Any]] = []
    for _ in range(count):
        event: dict[str, Any] = {}
        for name in ("type", "event", "userId", "name"):
            if rng.random() < 0.8:
                event[name] = rng.choice(VALUES)
        if rng.random() < 0.7:
            event["properties"] = {
                k: rng.choice(VALUES) for k in rng.sample(["total", "currency", "sku"], 2)
            }
        if rng.random() < 0.5:
            event["traits"] = {"email": rng.choice(VALUES)}
        if rng.random() < 0.5:
            event["context"] = {"ip": rng.choice(VALUES), "page": {"path": "/"}}
        events.append(event)
    return events


def outcome(function: Any, event: dict[str, Any]) -> Any:
    try:
        return ("ok", function(event))
    except ConditionEvaluationError:
        return ("error", None)


@pytest.mark.parametrize("field", ["type", "event", "userId", "missing"])
@pytest.mark.parametrize("literal", ["track", "", "user-1999", "Cart Viewed"])
def test_field_literal_comparisons(field: str, literal: str) -> None:
    equals = compile_condition(f'{field} = "{literal}"')
    differs = compile_condition(f'{field} != "{literal}"')
    mirrored = compile_condition(f'"{literal}" = {field}')
    contains = compile_condition(f'contains({field}, "{literal}")')
    for event in sample_events():
        value = event.get(field)
        assert equals(event) is json_equal(value, literal)
        assert differs(event) is (not json_equal(value, literal))
        assert mirrored(event) is equals(event)
        if isinstance(value, str):
            expected = literal in value
        elif isinstance(value, list):
            expected = any(json_equal(item, literal) for item in value)
        else:
            expected = False
        assert contains(event) is expected


@pytest.mark.parametrize("literal", ["null", "true", "false", "1", "1.0", '["a"]'])
def test_field_non_string_literals(literal: str) -> None:
    import orjson

    constant = orjson.loads(literal)
    equals = compile_condition(f"userId = {literal}")
    for event in sample_events():
        assert equals(event) is json_equal(event.get("userId"), constant)


def never(kind: str) -> dict[str, Any]:
    """A rule of the same family that never acts: it makes the filter take its general loop."""
    if kind == "gate":
        return {"type": "drop", "if": "false"}
    return {"type": "drop_properties", "if": "false", "fields": ["nothing.here"]}


FILTER_RULES = [
    {"type": "drop", "if": 'event = "Cart Viewed"'},
    {"type": "only", "if": 'type != "page"'},
    {"type": "drop", "if": 'contains(userId, "user-1999")'},
    {"type": "drop", "if": "number(properties.total) > 0"},  # errors on strings
    {"type": "drop_properties", "fields": ["context.ip"]},
    {"type": "allow_properties", "fields": ["properties.total", "properties.currency"]},
    {"type": "drop_properties", "if": 'type = "track"', "fields": ["properties.sku"]},
]


@pytest.mark.parametrize("rule", FILTER_RULES)
@pytest.mark.parametrize("padding", ["gate", "edit"])
def test_single_filter_closure_matches_the_general_loop(rule: dict[str, Any], padding: str) -> None:
    single = compile_filters(FILTERS.validate_python([rule]))
    general = compile_filters(FILTERS.validate_python([rule, never(padding)]))
    assert general.apply.__name__ == "apply"
    for event in sample_events():
        before = copy.deepcopy(event)
        mine, theirs = single.apply(event), general.apply(event)
        assert event == before
        assert mine == theirs and type(mine) is type(theirs)
        assert (mine is event) == (theirs is event)
        assert single(event) == general(event)


TRANSFORM_STEPS = [
    {"type": "rename_event", "if": 'event = "Signed Up"', "to": "Sign Up"},
    {"type": "rename_event", "to": "Renamed"},
    {"type": "set_values", "values": {"properties.source": "router"}},
    {"type": "set_values", "values": {"properties.meta": {"a": [1]}, "traits.tier": "x"}},
    {"type": "set_values", "if": 'type = "identify"', "values": {"traits.tier": "x"}},
    {"type": "rename_properties", "fields": {"properties.total": "properties.value"}},
    {"type": "rename_properties", "fields": {"properties.sku": "context.sku", "event": "x"}},
    {"type": "drop_event", "if": 'type = "page"'},
    {"type": "set_values", "if": "number(userId) > 1", "values": {"a": 1}},  # may error
]


@pytest.mark.parametrize("step", TRANSFORM_STEPS)
def test_single_transformation_closure_matches_the_general_loop(step: dict[str, Any]) -> None:
    single = compile_transformations(TRANSFORMATIONS.validate_python([step]))
    padding = {"type": "set_values", "if": "false", "values": {"never": 1}}
    general = compile_transformations(TRANSFORMATIONS.validate_python([step, padding]))
    assert general.apply.__name__ == "apply"
    for event in sample_events():
        before = copy.deepcopy(event)
        mine, theirs = single(event), general(event)
        assert event == before
        assert mine == theirs
        assert (mine is event) == (theirs is event)
        if mine is not None and theirs is not None:
            for key, value in mine.items():
                assert (value is event.get(key)) == (theirs[key] is event.get(key))
    assert single.errors == general.errors


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('type = "page"', ("type", "page", False)),
        ('"page" = type', ("type", "page", False)),
        ('type != "page"', ("type", "page", True)),
        ("type = 5", None),
        ("type = null", None),
        ('context.ip = "x"', None),
        ('type = "a" and event = "b"', None),
        ('!(type = "a")', None),
        ('lowercase(type) = "a"', None),
    ],
)
def test_field_test_recognises_only_the_plain_shapes(
    source: str, expected: tuple[str, str, bool] | None
) -> None:
    assert field_test(compile_condition(source)) == expected


def test_plain_field_conditions_are_tested_inline() -> None:
    gate = compile_filters(FILTERS.validate_python([{"type": "drop", "if": 'event = "X"'}]))
    only = compile_filters(FILTERS.validate_python([{"type": "only", "if": 'type != "page"'}]))
    step = compile_transformations(
        TRANSFORMATIONS.validate_python([{"type": "rename_event", "if": 'type = "t"', "to": "y"}])
    )
    assert gate.apply.__name__ == "drop_if_equal"
    assert only.apply.__name__ == "drop_if_equal"  # "only if not page": drop pages
    assert step.apply.__name__ == "if_equal"
