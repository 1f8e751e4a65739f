"""Source middleware: every built-in, and user functions in each accepted and failing form."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from router.config import Middleware
from router.pipeline.middleware import (
    MiddlewareChain,
    MiddlewareError,
    MiddlewareImportError,
    compile_middleware,
    load_function,
)
from tests.pipeline import user_functions
from tests.pipeline.conftest import ABSENT
from tests.pipeline.conftest import make_event as base_event

ITEMS = TypeAdapter(list[Middleware])
MODULE = "tests.pipeline.user_functions"


def chain(*items: dict[str, Any]) -> MiddlewareChain:
    return compile_middleware(ITEMS.validate_python(list(items)))


def make_event(**overrides: Any) -> dict[str, Any]:
    return (
        base_event(
            properties={
                "total": 30,
                "email": "x@example.com",
                "products": [{"sku": "a", "price": 10}, {"sku": "b", "price": 20}],
            },
            context={"ip": "1.2.3.4", "app": {"name": "shop", "version": "1"}},
            traits=ABSENT,
        )
        | overrides
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_empty_chain_returns_the_event() -> None:
    event = make_event()
    run = compile_middleware([])
    assert run.empty
    assert run(event) is event


# ---------------------------------------------------------------- drop_fields


def test_drop_fields_in_place_with_fan_out() -> None:
    event = make_event()
    properties = event["properties"]
    out = chain({"type": "drop_fields", "fields": ["context.ip", "properties.products.price"]})(
        event
    )
    assert out is event
    assert event["properties"] is properties
    assert event["context"] == {"app": {"name": "shop", "version": "1"}}
    assert event["properties"]["products"] == [{"sku": "a"}, {"sku": "b"}]


def test_drop_fields_missing_is_a_no_op() -> None:
    event = make_event()
    assert chain({"type": "drop_fields", "fields": ["traits.email"]})(event) == make_event()


# ---------------------------------------------------------------- hash_fields


def test_hash_fields_default_sha256_with_salt() -> None:
    event = make_event()
    run = chain(
        {"type": "hash_fields", "fields": ["properties.email", "traits.none"], "salt": "pepper"}
    )
    out = run(event)
    assert out is event
    assert event["properties"]["email"] == sha256("pepperx@example.com")
    assert "traits" not in event


@pytest.mark.parametrize("algorithm", ["sha256", "sha1", "md5"])
def test_hash_fields_algorithms(algorithm: str) -> None:
    event = make_event()
    chain({"type": "hash_fields", "fields": ["userId"], "algorithm": algorithm})(event)
    assert event["userId"] == hashlib.new(algorithm, b"u1").hexdigest()


def test_hash_fields_value_forms() -> None:
    event = make_event(
        properties={
            "n": 30,
            "f": 1.5,
            "b": True,
            "null": None,
            "obj": {"b": 1, "a": [1, 2]},
            "list": ["x", 1],
        }
    )
    chain({"type": "hash_fields", "fields": [f"properties.{k}" for k in event["properties"]]})(
        event
    )
    assert event["properties"] == {
        "n": sha256("30"),
        "f": sha256("1.5"),
        "b": sha256("true"),
        "null": None,
        "obj": sha256('{"a":[1,2],"b":1}'),
        "list": sha256('["x",1]'),
    }


def test_hash_fields_fans_out_over_lists() -> None:
    event = make_event()
    chain({"type": "hash_fields", "fields": ["properties.products.sku"]})(event)
    assert [p["sku"] for p in event["properties"]["products"]] == [sha256("a"), sha256("b")]
    assert [p["price"] for p in event["properties"]["products"]] == [10, 20]


# ---------------------------------------------------------------- rename_fields


def test_rename_fields() -> None:
    event = make_event()
    chain(
        {
            "type": "rename_fields",
            "fields": {
                "properties.email": "traits.email",
                "context.ip": "context.client.ip",
                "properties.nothing": "properties.else",
            },
        }
    )(event)
    assert event["traits"] == {"email": "x@example.com"}
    assert "email" not in event["properties"]
    assert event["context"]["client"] == {"ip": "1.2.3.4"}
    assert "ip" not in event["context"]
    assert "else" not in event["properties"]


# ---------------------------------------------------------------- add_context


def test_add_context_merges_and_config_wins() -> None:
    event = make_event()
    chain(
        {
            "type": "add_context",
            "values": {
                "app.env": "prod",
                "app": {"version": "2", "build": {"id": 7}},
                "region": "eu",
                "tags": ["x"],
            },
        }
    )(event)
    assert event["context"] == {
        "ip": "1.2.3.4",
        "app": {"name": "shop", "version": "2", "env": "prod", "build": {"id": 7}},
        "region": "eu",
        "tags": ["x"],
    }


def test_add_context_creates_context_and_copies_containers() -> None:
    run = chain({"type": "add_context", "values": {"tags": ["x"], "env": "prod"}})
    first = run({"type": "track", "event": "E"})
    second = run({"type": "track", "event": "E", "context": "not-a-dict"})
    assert first == {"type": "track", "event": "E", "context": {"tags": ["x"], "env": "prod"}}
    assert second is not None and second["context"] == {"tags": ["x"], "env": "prod"}
    assert first is not None and first["context"]["tags"] is not second["context"]["tags"]
    first["context"]["tags"].append("mutated")
    third = run({"type": "track"})
    assert third is not None and third["context"]["tags"] == ["x"]


# ---------------------------------------------------------------- event_name_case


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("lower", "order completed"),
        ("upper", "ORDER COMPLETED"),
        ("title", "Order Completed"),
        ("snake", "order_completed"),
        ("kebab", "order-completed"),
        ("camel", "orderCompleted"),
    ],
)
def test_event_name_case(case: str, expected: str) -> None:
    event = make_event(event="Order completed")
    chain({"type": "event_name_case", "case": case})(event)
    assert event["event"] == expected


@pytest.mark.parametrize(
    ("name", "case", "expected"),
    [
        ("orderCompleted", "snake", "order_completed"),
        ("order_completed", "title", "Order Completed"),
        ("Order-Completed now", "camel", "orderCompletedNow"),
        ("HTTPRequest sent", "kebab", "http-request-sent"),
        ("  spaced   out  ", "snake", "spaced_out"),
        ("Step2Done", "snake", "step2_done"),
    ],
)
def test_event_name_case_word_splitting(name: str, case: str, expected: str) -> None:
    event = make_event(event=name)
    chain({"type": "event_name_case", "case": case})(event)
    assert event["event"] == expected


@pytest.mark.parametrize("kind", ["page", "screen"])
def test_event_name_case_page_and_screen_names(kind: str) -> None:
    event = {"type": kind, "name": "Home Page", "event": "Not Touched"}
    chain({"type": "event_name_case", "case": "snake"})(event)
    assert event == {"type": kind, "name": "home_page", "event": "Not Touched"}


def test_event_name_case_leaves_other_types_and_non_strings() -> None:
    identify = {"type": "identify", "event": "Some Thing"}
    chain({"type": "event_name_case", "case": "snake"})(identify)
    assert identify["event"] == "Some Thing"
    odd = {"type": "track", "event": 5}
    chain({"type": "event_name_case", "case": "snake"})(odd)
    assert odd["event"] == 5


# ---------------------------------------------------------------- user functions


def test_function_one_parameter() -> None:
    event = make_event()
    out = chain({"type": "function", "function": f"{MODULE}:tag"})(event)
    assert out is event
    assert event["context"]["tagged"] is True


def test_function_two_parameters_gets_options_and_may_replace_the_event() -> None:
    event = make_event()
    run = chain(
        {"type": "function", "function": f"{MODULE}:with_options", "options": {"plan": "pro"}}
    )
    out = run(event)
    assert out is not event
    assert out is not None and out["properties"]["plan"] == "pro"
    assert out["properties"]["total"] == 30


def test_function_with_defaulted_second_parameter_gets_options() -> None:
    user_functions.CALLS.clear()
    chain({"type": "function", "function": f"{MODULE}:defaulted", "options": {"k": 1}})(
        make_event()
    )
    assert user_functions.CALLS == [{"options": {"k": 1}}]


def test_function_variadic_gets_both() -> None:
    user_functions.CALLS.clear()
    chain({"type": "function", "function": f"{MODULE}:variadic"})(make_event())
    assert user_functions.CALLS == [{"args": 2}]


def test_function_callable_instance() -> None:
    event = make_event()
    chain({"type": "function", "function": f"{MODULE}:enricher"})(event)
    assert event["enriched"] is True


def test_function_dropping_stops_the_chain() -> None:
    run = chain(
        {"type": "function", "function": f"{MODULE}:drop_bots"},
        {"type": "function", "function": f"{MODULE}:explode"},
    )
    assert run(make_event(userId="bot")) is None
    with pytest.raises(MiddlewareError):
        run(make_event())


def test_function_raising_becomes_middleware_error() -> None:
    run = chain({"type": "function", "function": f"{MODULE}:explode"})
    with pytest.raises(MiddlewareError) as caught:
        run(make_event())
    error = caught.value
    assert error.name == f"{MODULE}:explode"
    assert isinstance(error.cause, RuntimeError)
    assert error.__cause__ is error.cause
    assert error.reason == "middleware_error"
    assert str(error) == f"middleware function '{MODULE}:explode' failed: RuntimeError: kaboom"


def test_function_returning_non_dict_is_an_error() -> None:
    run = chain({"type": "function", "function": f"{MODULE}:returns_list"})
    with pytest.raises(MiddlewareError, match="returned list, expected a dict or None"):
        run(make_event())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.pipeline.no_such_module:f", "cannot import module 'tests.pipeline.no_such_module'"),
        (f"{MODULE}:missing", f"module '{MODULE}' has no 'missing'"),
        (f"{MODULE}:not_callable", "'not_callable' is not callable"),
        (f"{MODULE}:too_many", "must accept (event) or (event, options)"),
        (f"{MODULE}:needs_keyword", "must accept (event) or (event, options)"),
        (f"{MODULE}:no_params", "must accept (event) or (event, options)"),
    ],
)
def test_function_import_errors(spec: str, message: str) -> None:
    item = ITEMS.validate_python([{"type": "function", "function": spec}])
    with pytest.raises(MiddlewareImportError) as caught:
        compile_middleware(item)
    assert caught.value.name == spec
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"function {spec!r}: ")
    assert isinstance(caught.value, ValueError)


def test_load_function_checks_the_signature() -> None:
    assert load_function(f"{MODULE}:tag") is user_functions.tag
    with pytest.raises(MiddlewareImportError, match="must accept"):
        load_function(f"{MODULE}:too_many")
    with pytest.raises(MiddlewareImportError, match=r"expected 'module\.path:callable'"):
        load_function("no_colon")


def test_function_module_failing_on_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_user_module_xyz.py").write_text("raise RuntimeError('broken on import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    item = ITEMS.validate_python([{"type": "function", "function": "broken_user_module_xyz:f"}])
    with pytest.raises(MiddlewareImportError, match="RuntimeError: broken on import"):
        compile_middleware(item)


# ---------------------------------------------------------------- the chain


def test_chain_applies_in_order() -> None:
    run = chain(
        {"type": "rename_fields", "fields": {"properties.email": "traits.email"}},
        {"type": "hash_fields", "fields": ["traits.email"]},
        {"type": "event_name_case", "case": "snake"},
        {"type": "function", "function": f"{MODULE}:with_options", "options": {"v": 1}},
        {"type": "drop_fields", "fields": ["context"]},
        {"type": "add_context", "values": {"env": "prod"}},
    )
    out = run(make_event())
    assert out == {
        "type": "track",
        "event": "order_completed",
        "userId": "u1",
        "messageId": "m1",
        "properties": {
            "total": 30,
            "products": [{"sku": "a", "price": 10}, {"sku": "b", "price": 20}],
            "v": 1,
        },
        "traits": {"email": sha256("x@example.com")},
        "context": {"env": "prod"},
    }
