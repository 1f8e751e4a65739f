"""Dot paths: reading, copy-on-write editing (no mutation, maximal sharing) and in-place edits."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from router.pipeline.paths import (
    MISSING,
    Editor,
    compile_paths,
    delete_in_place,
    get_path,
    has_path,
    keep_only,
    pop_in_place,
    set_in_place,
    split_path,
    update_in_place,
    with_renamed,
    with_value,
    without_paths,
)
from tests.pipeline.conftest import make_event as base_event


def make_event() -> dict[str, Any]:
    return base_event(
        properties={
            "total": 30,
            "currency": "EUR",
            "coupon": None,
            "products": [
                {"sku": "a", "price": 10, "name": "A"},
                {"sku": "b", "price": 20, "name": "B"},
                "not-a-dict",
            ],
        },
        context={"ip": "1.2.3.4", "library": {"name": "analytics.js", "version": "1.0"}},
        traits={"email": "x@example.com"},
    )


# ---------------------------------------------------------------- split / get / has


def test_split_path() -> None:
    assert split_path("a.b.0") == ("a", "b", "0")
    assert split_path("a") == ("a",)
    assert split_path("a.b") is split_path("a.b")  # cached


@pytest.mark.parametrize("bad", ["", ".a", "a.", "a..b"])
def test_split_path_rejects_empty_segments(bad: str) -> None:
    with pytest.raises(ValueError, match="empty segment"):
        split_path(bad)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("type", "track"),
        ("properties.total", 30),
        ("context.library.version", "1.0"),
        ("properties.products.1.sku", "b"),
        ("properties.products.2", "not-a-dict"),
        (("properties", "products", "0", "price"), 10),
        ("properties.coupon", None),
        ("properties.missing", MISSING),
        ("nothing.at.all", MISSING),
        ("properties.products.3", MISSING),
        ("properties.products.sku", MISSING),  # reading does not fan out
        ("properties.total.deeper", MISSING),
        ("properties.products.2.x", MISSING),
    ],
)
def test_get_path(path: str | tuple[str, ...], expected: Any) -> None:
    assert get_path(make_event(), path) == expected or get_path(make_event(), path) is expected


def test_get_path_numeric_key_in_dict() -> None:
    assert get_path({"a": {"0": "zero"}}, "a.0") == "zero"


def test_has_path_counts_null_as_present() -> None:
    event = make_event()
    assert has_path(event, "properties.coupon")
    assert has_path(event, "properties.products.0")
    assert not has_path(event, "properties.nope")


def test_missing_sentinel() -> None:
    assert not MISSING
    assert repr(MISSING) == "MISSING"


# ---------------------------------------------------------------- copy-on-write


def test_with_value_copies_only_the_edited_path() -> None:
    event = make_event()
    before = copy.deepcopy(event)
    out = with_value(event, "properties.total", 99)
    assert event == before
    assert out["properties"]["total"] == 99
    assert out is not event and out["properties"] is not event["properties"]
    assert out["context"] is event["context"]
    assert out["traits"] is event["traits"]
    assert out["properties"]["products"] is event["properties"]["products"]
    assert {k: v for k, v in out.items() if k != "properties"} == {
        k: v for k, v in before.items() if k != "properties"
    }


def test_with_value_returns_input_when_value_already_there() -> None:
    event = make_event()
    assert with_value(event, "properties.total", 30) is event
    assert with_value(event, "context.library", {"name": "analytics.js", "version": "1.0"}) is event


@pytest.mark.parametrize("value", [30.0, True, "30"])
def test_with_value_distinguishes_json_types(value: Any) -> None:
    event = {"properties": {"total": 30, "flag": 1}}
    out = with_value(event, "properties.total", value)
    assert out is not event
    assert type(out["properties"]["total"]) is type(value)


def test_with_value_creates_intermediate_dicts() -> None:
    event = make_event()
    out = with_value(event, "context.campaign.name", "spring")
    assert out["context"]["campaign"] == {"name": "spring"}
    assert out["context"]["library"] is event["context"]["library"]
    assert "campaign" not in event["context"]


def test_with_value_replaces_scalar_intermediate() -> None:
    out = with_value({"a": 5}, "a.b", 1)
    assert out == {"a": {"b": 1}}


def test_with_value_into_lists() -> None:
    event = make_event()
    out = with_value(event, "properties.products.0.price", 11)
    assert out["properties"]["products"][0] == {"sku": "a", "price": 11, "name": "A"}
    assert out["properties"]["products"][1] is event["properties"]["products"][1]
    assert event["properties"]["products"][0]["price"] == 10
    appended = with_value(event, "properties.products.3", "new")
    assert appended["properties"]["products"][3] == "new"
    assert len(event["properties"]["products"]) == 3
    # beyond the end, or a name segment on a list: nothing to set
    assert with_value(event, "properties.products.9", "x") is event
    assert with_value(event, "properties.products.sku", "x") is event


def test_with_value_through_list_creates_dict_in_item() -> None:
    out = with_value({"l": [None]}, "l.0.a", 1)
    assert out == {"l": [{"a": 1}]}


def test_without_paths_fans_out_over_lists() -> None:
    event = make_event()
    before = copy.deepcopy(event)
    out = without_paths(event, ["properties.products.price", "context.ip"])
    assert event == before
    assert out["properties"]["products"] == [
        {"sku": "a", "name": "A"},
        {"sku": "b", "name": "B"},
        "not-a-dict",
    ]
    assert out["context"] == {"library": {"name": "analytics.js", "version": "1.0"}}
    assert out["context"]["library"] is event["context"]["library"]
    assert out["traits"] is event["traits"]


def test_without_paths_by_index() -> None:
    event = make_event()
    out = without_paths(event, ["properties.products.0", "properties.products.1.name"])
    assert out["properties"]["products"] == [{"sku": "b", "price": 20}, "not-a-dict"]
    assert len(event["properties"]["products"]) == 3


def test_without_paths_index_and_fan_out_together() -> None:
    event = {"l": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}
    out = without_paths(event, ["l.a", "l.1.b"])
    assert out == {"l": [{"b": 2}, {}]}
    assert event == {"l": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}


def test_without_paths_returns_input_when_nothing_to_drop() -> None:
    event = make_event()
    assert without_paths(event, ["properties.nope", "x.y", "properties.total.z"]) is event
    assert without_paths(event, ["properties.products.nope"]) is event
    assert without_paths(event, []) is event


def test_without_paths_ancestor_wins() -> None:
    event = make_event()
    out = without_paths(event, ["context.library.name", "context"])
    assert "context" not in out
    out = without_paths(event, ["context", "context.library.name"])
    assert "context" not in out


def test_without_paths_accepts_precompiled_sets() -> None:
    paths = compile_paths(["properties.total", ("traits", "email")])
    assert compile_paths(paths) is paths
    out = without_paths(make_event(), paths)
    assert "total" not in out["properties"]
    assert out["traits"] == {}
    assert "properties.total" in repr(paths)


def test_with_renamed() -> None:
    event = make_event()
    before = copy.deepcopy(event)
    mapping = {"properties.total": "properties.revenue", "traits.email": "traits.mail"}
    out = with_renamed(event, mapping)
    assert event == before
    assert out["properties"]["revenue"] == 30
    assert "total" not in out["properties"]
    assert out["traits"] == {"mail": "x@example.com"}
    assert out["context"] is event["context"]
    assert out["properties"]["products"] is event["properties"]["products"]


def test_with_renamed_to_new_parent_and_missing_source() -> None:
    event = make_event()
    out = with_renamed(event, [("properties.currency", "properties.money.currency")])
    assert out["properties"]["money"] == {"currency": "EUR"}
    assert with_renamed(event, {"properties.nope": "properties.other"}) is event


def test_with_renamed_moves_null_values() -> None:
    out = with_renamed(make_event(), {"properties.coupon": "properties.code"})
    assert out["properties"]["code"] is None
    assert "coupon" not in out["properties"]


def test_keep_only_restricts_each_named_parent() -> None:
    event = make_event()
    before = copy.deepcopy(event)
    out = keep_only(event, ["properties.total", "properties.currency", "context.ip"])
    assert event == before
    assert out == {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "messageId": "m1",
        "properties": {"total": 30, "currency": "EUR"},
        "context": {"ip": "1.2.3.4"},
        "traits": {"email": "x@example.com"},
    }
    assert out["traits"] is event["traits"]


def test_keep_only_nested_and_lists() -> None:
    event = make_event()
    out = keep_only(event, ["properties.products.sku", "context.library"])
    assert out["properties"] == {"products": [{"sku": "a"}, {"sku": "b"}, "not-a-dict"]}
    assert out["context"] == {"library": event["context"]["library"]}
    assert out["context"]["library"] is event["context"]["library"]


def test_keep_only_top_level_path_keeps_everything() -> None:
    event = make_event()
    assert keep_only(event, ["properties", "userId"]) is event
    assert keep_only(event, ["properties", "properties.total"]) is event


def test_keep_only_returns_input_when_all_allowed_or_absent() -> None:
    event = {"type": "track", "properties": {"a": 1, "b": 2}}
    assert keep_only(event, ["properties.a", "properties.b", "properties.c"]) is event
    assert keep_only(event, ["traits.email"]) is event
    assert keep_only({"properties": "scalar"}, ["properties.a"]) == {"properties": "scalar"}


def test_editor_copies_each_container_once() -> None:
    event = make_event()
    editor = Editor(event)
    assert not editor.changed
    editor.set("properties.a", 1)
    first = editor.root["properties"]
    editor.set("properties.b", 2)
    editor.delete(["properties.total"])
    editor.rename({"properties.currency": "properties.cur"})
    assert editor.changed
    assert editor.root["properties"] is first  # mutated in place after the first copy
    assert editor.root["properties"] == {
        "coupon": None,
        "products": event["properties"]["products"],
        "a": 1,
        "b": 2,
        "cur": "EUR",
    }
    assert event == make_event()


def test_editor_pop() -> None:
    event = make_event()
    editor = Editor(event)
    assert editor.pop("properties.products.1.sku") == "b"
    assert editor.pop("properties.nope", "default") == "default"
    assert editor.root["properties"]["products"][1] == {"price": 20, "name": "B"}
    assert event["properties"]["products"][1]["sku"] == "b"
    assert editor.root["properties"]["products"][0] is event["properties"]["products"][0]


def test_editor_update_fans_out_and_copies() -> None:
    event = make_event()
    editor = Editor(event)
    editor.update("properties.products.price", lambda v: v * 2)
    editor.update("properties.nope", lambda v: 1 / 0)
    assert [p["price"] for p in editor.root["properties"]["products"][:2]] == [20, 40]
    assert [p["price"] for p in event["properties"]["products"][:2]] == [10, 20]
    assert editor.root["context"] is event["context"]


def test_editor_update_by_index_and_identity() -> None:
    event = {"l": [1, 2, 3]}
    editor = Editor(event)
    editor.update("l.1", lambda v: v + 10)
    editor.update("l.7", lambda v: 1 / 0)
    assert editor.root == {"l": [1, 12, 3]}
    same = Editor(event)
    same.update("l", lambda v: v)
    assert same.root is event


# ---------------------------------------------------------------- in place


def test_set_in_place() -> None:
    event = make_event()
    props = event["properties"]
    set_in_place(event, "properties.total", 1)
    set_in_place(event, "context.app.env", "prod")
    assert event["properties"] is props
    assert props["total"] == 1
    assert event["context"]["app"] == {"env": "prod"}


def test_delete_in_place_fans_out() -> None:
    event = make_event()
    products = event["properties"]["products"]
    delete_in_place(event, "properties.products.price")
    assert event["properties"]["products"] is products
    assert products[:2] == [{"sku": "a", "name": "A"}, {"sku": "b", "name": "B"}]
    delete_in_place(event, compile_paths(["traits", "context.ip"]))
    assert "traits" not in event
    assert "ip" not in event["context"]


def test_pop_in_place() -> None:
    event = make_event()
    assert pop_in_place(event, "traits.email") == "x@example.com"
    assert event["traits"] == {}
    assert pop_in_place(event, "traits.email") is MISSING
    assert pop_in_place(event, "traits.email", None) is None


def test_update_in_place() -> None:
    event = make_event()
    update_in_place(event, "properties.products.sku", str.upper)
    assert [p["sku"] for p in event["properties"]["products"][:2]] == ["A", "B"]


def test_without_paths_fans_out_through_nested_lists() -> None:
    event = {"l": [[{"a": 1, "b": 2}], {"a": 3}]}
    assert without_paths(event, ["l.a"]) == {"l": [[{"b": 2}], {}]}
    assert event == {"l": [[{"a": 1, "b": 2}], {"a": 3}]}
