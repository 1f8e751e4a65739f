"""FQL: every operator, function, null rule, precedence rule, syntax and evaluation error."""

from __future__ import annotations

import re
from typing import Any

import pytest

from router.pipeline.conditions import (
    ConditionEvaluationError,
    ConditionSyntaxError,
    compile_condition,
    glob_regex,
    json_equal,
    typeof,
)

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "properties": {
        "total": 30,
        "price": 9.5,
        "zero": 0,
        "flag": True,
        "off": False,
        "empty": "",
        "nothing": None,
        "tags": ["sale", "new", 1],
        "products": [{"sku": "a", "price": 10}, {"sku": "b", "price": 20}],
        "numeric": "42",
        "decimal": "-1.5e1",
        "word": "abc",
        "camel": "orderCompleted",
        "product 1": {"price": "19.99"},
        "a.b": "dotted",
        "obj": {"k": 1},
        "emptylist": [],
        "unicode": "ア",
    },
    "context": {
        "library": {"name": "analytics.js", "version": "1.0"},
        "page": {"url": "https://example.com/cart?x=1", "path": "/cart"},
    },
    "traits": {"email": "Jane@Example.com"},
}


def evaluate(source: str, event: dict[str, Any] | None = None) -> bool:
    return compile_condition(source)(EVENT if event is None else event)


CASES: list[tuple[str, bool]] = [
    # = and != with JSON semantics
    ("event = 'Order Completed'", True),
    ('event = "Order Completed"', True),
    ("event = 'order completed'", False),
    ("event != 'Order Completed'", False),
    ("event != 'Other'", True),
    ("properties.total = 30", True),
    ("properties.total = 30.0", True),
    ("properties.total = '30'", False),
    ("properties.total != '30'", True),
    ("properties.numeric = 42", False),
    ("properties.flag = true", True),
    ("properties.flag = 1", False),
    ("properties.flag != 1", True),
    ("properties.zero = false", False),
    ("properties.off = false", True),
    ("properties.nothing = null", True),
    ("properties.missing = null", True),
    ("properties.missing != null", False),
    ("properties.total != null", True),
    ("properties.tags = ['sale', 'new', 1.0]", True),
    ("properties.tags = ['sale', 'new']", False),
    ("properties.tags != ['sale', 'new', 1]", False),
    ("properties.total = properties.total", True),
    ("properties.total = properties.price", False),
    ("properties.total != properties.price", True),
    ("properties.obj = properties.obj", True),
    ("'Order Completed' = event", True),
    ("1 = 1.0", True),
    ("1 != 1", False),
    ("'a' = 'a'", True),
    ("null = null", True),
    ("true = 1", False),
    # ordering: numbers with numbers, strings with strings, anything else false
    ("properties.total > 29", True),
    ("properties.total > 30", False),
    ("properties.total >= 30", True),
    ("properties.total >= 30.5", False),
    ("properties.total < 31", True),
    ("properties.total < 30", False),
    ("properties.total <= 30", True),
    ("properties.total <= 29.99", False),
    ("properties.price > 9", True),
    ("properties.price < -1", False),
    ("-2 < properties.price", True),
    ("10 > properties.price", True),
    ("10 <= properties.price", False),
    ("30 >= properties.total", True),
    ("event > 'A'", True),
    ("event < 'A'", False),
    ("event >= 'Order Completed'", True),
    ("event <= 'Order'", False),
    ("properties.numeric > 1", False),
    ("properties.numeric < 1", False),
    ("properties.flag > 0", False),
    ("properties.nothing < 1", False),
    ("properties.missing >= 0", False),
    ("properties.total > '1'", False),
    ("properties.total > null", False),
    ("properties.total > properties.price", True),
    ("properties.price > properties.total", False),
    ("properties.total > properties.numeric", False),
    ("event > properties.word", False),
    ("2 > 1", True),
    ("'b' < 'a'", False),
    ("1 < 'a'", False),
    # in
    ("type in ['track', 'page']", True),
    ("type in ['identify']", False),
    ("type in []", False),
    ("properties.total in [1, 30.0]", True),
    ("properties.total in ['30']", False),
    ("properties.flag in [1]", False),
    ("properties.flag in [true]", True),
    ("properties.off in [0, false]", True),
    ("properties.nothing in [null]", True),
    ("properties.missing in ['x', null]", True),
    ("properties.tags in [['sale', 'new', 1]]", True),
    ("'sale' in properties.tags", True),
    ("1.0 in properties.tags", True),
    ("'blink' in properties.tags", False),
    ("'a' in properties.word", False),
    ("'a' in properties.missing", False),
    ("properties.word in properties.tags", False),
    ("'x' in 'xyz'", False),
    # and / or / ! / parentheses
    ("type = 'track' and event = 'Order Completed'", True),
    ("type = 'track' and event = 'Other'", False),
    ("type = 'page' or event = 'Order Completed'", True),
    ("type = 'page' or event = 'Other'", False),
    ("!(type = 'page')", True),
    ("!(type = 'track')", False),
    ("!!(type = 'track')", True),
    ("type = 'track' and (event = 'Click' or match(event, 'Order *'))", True),
    ("(type = 'page' or type = 'track') and properties.total > 10", True),
    ("!contains(context.library.name, 'js')", False),
    ("! type in ['page']", False),  # (!type) in [...]: false in ['page']
    # precedence: and binds tighter than or
    ("true or true and false", True),
    ("(true or true) and false", False),
    ("false and true or true", True),
    ("false and (true or true)", False),
    # ! binds tighter than a comparison: (!x) = y
    ("!properties.missing = true", True),
    ("!properties.total = false", True),
    ("!(properties.total = false)", True),
    ("!properties.total", False),
    ("!properties.zero", True),
    # bare values are truthy tests
    ("properties.flag", True),
    ("properties.off", False),
    ("properties.total", True),
    ("properties.zero", False),
    ("properties.word", True),
    ("properties.empty", False),
    ("properties.nothing", False),
    ("properties.missing", False),
    ("properties.tags", True),
    ("properties.emptylist", False),
    ("properties.obj", True),
    ("true", True),
    ("false", False),
    ("null", False),
    ("0", False),
    ("'x'", True),
    ("properties.flag and properties.word", True),
    ("properties.off or properties.empty", False),
    # field paths
    ("properties.products.1.sku = 'b'", True),
    ("properties.products.5.sku = null", True),
    ("properties.product\\ 1.price = '19.99'", True),
    ("properties.a\\.b = 'dotted'", True),
    ("context.page.url = 'https://example.com/cart?x=1'", True),
    ("traits.email = 'Jane@Example.com'", True),
    ("properties.total.deep = null", True),
    ("properties.products.sku = null", True),
    # contains
    ("contains(context.page.url, 'cart')", True),
    ("contains(context.page.url, 'CART')", False),
    ("contains(properties.tags, 'sale')", True),
    ("contains(properties.tags, 1.0)", True),
    ("contains(properties.tags, 'sal')", False),
    ("contains(properties.missing, 'x')", False),
    ("contains(null, 'x')", False),
    ("contains(properties.total, '3')", False),
    ("contains(properties.word, 1)", False),
    ("contains(properties.obj, 'k')", False),
    # length (strings count UTF-8 bytes, as Segment documents)
    ("length(properties.word) = 3", True),
    ("length(properties.unicode) = 3", True),
    ("length(properties.tags) = 3", True),
    ("length(properties.obj) = 1", True),
    ("length(properties.emptylist) = 0", True),
    ("length(null) = 0", True),
    ("length(properties.missing) = 0", True),
    ("length(userId) > 0", True),
    # case functions (null stays null)
    ("lowercase(traits.email) = 'jane@example.com'", True),
    ("uppercase(traits.email) = 'JANE@EXAMPLE.COM'", True),
    ("snakecase(event) = 'order_completed'", True),
    ("snakecase(properties.camel) = 'order_completed'", True),
    ("kebabcase(event) = 'order-completed'", True),
    ("kebabcase(properties.camel) = 'order-completed'", True),
    ("titlecase('order_completed') = 'Order Completed'", True),
    ("titlecase(properties.camel) = 'Order Completed'", True),
    ("lowercase(null) = null", True),
    ("uppercase(properties.missing) = null", True),
    ("snakecase(null) = null", True),
    ("kebabcase(null) = null", True),
    ("titlecase(null) = null", True),
    # typeof (Segment's names)
    ("typeof(event) = 'string'", True),
    ("typeof(properties.total) = 'number'", True),
    ("typeof(properties.price) = 'number'", True),
    ("typeof(properties.flag) = 'bool'", True),
    ("typeof(properties.tags) = 'list'", True),
    ("typeof(properties.obj) = 'object'", True),
    ("typeof(properties.nothing) = 'null'", True),
    ("typeof(properties.missing) = 'null'", True),
    ("typeof(null) = 'null'", True),
    # match: whole string, case-sensitive glob
    ("match(context.library.version, '1.*')", True),
    ("match(context.library.version, '2.*')", False),
    ("match(event, 'Order*')", True),
    ("match(event, 'order*')", False),
    ("match(event, 'Order')", False),
    ("match(event, '?rder Completed')", True),
    ("match(event, '??der Completed')", True),
    ("match(event, '?der Completed')", False),
    ("match(event, '*Complete?')", True),
    ("match(event, '[oO]rder*')", True),
    ("match(event, '[a-z]rder*')", False),
    ("match(event, '[A-Z]rder*')", True),
    ("match(event, '[!A-Z]rder*')", False),
    ("match(event, 'Order.Completed')", False),
    ("match('a.b', 'a.b')", True),
    ("match('ab*d', 'ab\\\\*d')", True),
    ("match('abcd', 'ab\\\\*d')", False),
    ("match('', '*')", True),
    ("match('a[b', 'a[b')", True),
    ("match(context.page.url, 'https://*/cart*')", True),
    ("match(null, '*')", False),
    ("match(properties.missing, '*')", False),
    ("match(properties.total, '*')", False),
    # conversions
    ("bool(properties.word)", True),
    ("bool(properties.empty)", False),
    ("bool(properties.zero) = false", True),
    ("bool(null) = false", True),
    ("bool('false') = true", True),
    ("string(properties.total) = '30'", True),
    ("string(properties.price) = '9.5'", True),
    ("string(30.0) = '30'", True),
    ("string(properties.flag) = 'true'", True),
    ("string(properties.off) = 'false'", True),
    ('string(properties.tags) = \'["sale","new",1]\'', True),
    ("string(properties.word) = 'abc'", True),
    ("string(null) = null", True),
    ("number(properties.numeric) = 42", True),
    ("number(properties.numeric) > 41", True),
    ("number(properties.decimal) = -15", True),
    ("number(' 7 ') = 7", True),
    ("number('.5') = 0.5", True),
    ("number(properties.total) = 30", True),
    ("number(properties.flag) = 1", True),
    ("number(properties.off) = 0", True),
    ("number(null) = null", True),
    # literals
    ("'it\\'s' = \"it's\"", True),
    ("'a\\tb' = \"a\\u0009b\"", True),
    ("'\\\\' = \"\\\\\"", True),
    ("1e2 = 100", True),
    ("-0.5 < 0", True),
    ("[1, 'a', true, null, [2]] = [1.0, 'a', true, null, [2]]", True),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_condition(source: str, expected: bool) -> None:
    assert evaluate(source) is expected


def test_missing_values_are_null_everywhere() -> None:
    empty: dict[str, Any] = {}
    assert compile_condition("userId = null")(empty) is True
    assert compile_condition("contains(userId, 'a')")(empty) is False
    assert compile_condition("length(userId) = 0")(empty) is True
    assert compile_condition("context.page.url != 'x'")(empty) is True


def test_field_shapes_of_every_depth() -> None:
    event = {"a": {"b": {"c": {"d": {"e": 1}}}}, "s": "x"}
    assert compile_condition("a.b.c.d.e = 1")(event) is True
    assert compile_condition("a.b.c.d = null")(event) is False
    assert compile_condition("a.b.x = null")(event) is True
    assert compile_condition("s.b.c = null")(event) is True
    assert compile_condition("s.b = null")(event) is True


def test_ordering_of_dynamic_operands_of_incompatible_types() -> None:
    assert compile_condition("a < b")({"a": 1, "b": "2"}) is False
    assert compile_condition("a < b")({"a": "1", "b": "2"}) is True
    assert compile_condition("a = b")({"a": [1, {"x": True}], "b": [1.0, {"x": True}]}) is True
    assert compile_condition("a = b")({"a": [1, {"x": True}], "b": [1.0, {"x": 1}]}) is False


def test_in_with_dynamic_list() -> None:
    check = compile_condition("properties.x in properties.allowed")
    assert check({"properties": {"x": 2, "allowed": [1, 2.0]}}) is True
    assert check({"properties": {"x": True, "allowed": [1]}}) is False
    assert check({"properties": {"x": 2, "allowed": "2"}}) is False


def test_in_with_non_scalar_left() -> None:
    check = compile_condition("properties.x in [[1, 2], 'a']")
    assert check({"properties": {"x": [1, 2]}}) is True
    assert check({"properties": {"x": [2, 1]}}) is False
    assert check({"properties": {"x": {"a": 1}}}) is False


def test_results_are_real_booleans() -> None:
    for source in ["properties.total", "properties.word and properties.total", "event"]:
        assert type(evaluate(source)) is bool


def test_compile_is_cached() -> None:
    assert compile_condition("type = 'track'") is compile_condition("type = 'track'")


def test_whitespace_is_free() -> None:
    assert evaluate("  (type='track')and(properties.total>=30)  ") is True
    assert evaluate("contains ( event , 'Order' )") is True


# ---------------------------------------------------------------- errors


SYNTAX_ERRORS: list[tuple[str, int, str]] = [
    ("", 0, "the condition is empty"),
    ("   ", 0, "the condition is empty"),
    ("event =", 7, "expected a value, a field, a function or '(', found the end of the condition"),
    ("event = = 'x'", 8, "found '='"),
    ("(event = 'x'", 12, "expected ')'"),
    ("event = 'x')", 11, "expected an operator, 'and', 'or' or the end of the condition, found"),
    ("event 'x'", 6, "found \"'x'\""),
    ("event = 'x' AND type = 'y'", 12, "found 'AND'"),
    ("a = 1 = 2", 6, "found '='"),
    ("event == 'x'", 6, "'=' compares, not '=='"),
    ("a && b", 2, "use 'and'"),
    ("a || b", 2, "use 'or'"),
    ("event = 'x", 8, "unterminated string"),
    ('event = "x', 8, "unterminated string"),
    ("event = 'a\\qb'", 10, "unknown escape"),
    ("event = '\\u12'", 9, "\\u needs four hex digits"),
    ("properties. = 1", 11, "expected a field name after '.'"),
    ("properties.", 11, "expected a field name after '.'"),
    ("a\\", 1, "'\\' at the end of a field name"),
    ("event = 12abc", 8, "invalid number"),
    ("event # 1", 6, "unexpected character '#'"),
    ("foo(event)", 0, "unknown function 'foo'"),
    ("properties.contains(event, 'x')", 0, "unknown function 'properties.contains'"),
    ("x and length(a, b)", 6, "length() takes 1 argument, got 2"),
    ("contains(a)", 0, "contains() takes 2 arguments, got 1"),
    ("contains(a 'b')", 11, "expected ',' or ')'"),
    ("type in ['a' 'b']", 13, "expected ',' or ']'"),
    ("type in ['a', event]", 14, "expected a literal value (lists hold literals only)"),
    ("type in [", 9, "expected a literal value"),
    ("match(event, '[z-a]')", 0, "invalid match() pattern"),
    ("!", 1, "found the end of the condition"),
    ("type = 'a' and", 14, "found the end of the condition"),
    ("or", 0, "expected a value, a field, a function or '(', found 'or'"),
]


@pytest.mark.parametrize(("source", "position", "message"), SYNTAX_ERRORS)
def test_syntax_errors(source: str, position: int, message: str) -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        compile_condition(source)
    assert caught.value.position == position
    assert message in caught.value.message
    assert str(caught.value) == f"position {position}: {caught.value.message}"
    assert isinstance(caught.value, ValueError)


def test_syntax_error_pickles() -> None:
    import pickle

    error = ConditionSyntaxError("boom", 3)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.position) == ("boom", 3)


EVALUATION_ERRORS: list[tuple[str, str]] = [
    ("number(properties.word) > 1", "number() cannot convert the string 'abc'"),
    ("number('abc') = 1", "number() cannot convert the string 'abc'"),
    ("number('1_000') = 1000", "number() cannot convert"),
    ("number('nan') = 1", "number() cannot convert"),
    ("number(properties.tags) = 1", "number() cannot convert list"),
    ("length(properties.total) = 1", "length() takes a string, list or object, not number"),
    ("length(properties.flag) = 1", "not bool"),
    ("lowercase(properties.total) = '30'", "lowercase() takes a string, not number"),
    ("uppercase(properties.tags) = 'x'", "uppercase() takes a string, not list"),
    ("snakecase(properties.flag) = 'x'", "snakecase() takes a string, not bool"),
    ("kebabcase(properties.obj) = 'x'", "kebabcase() takes a string, not object"),
    ("titlecase(1) = 'x'", "titlecase() takes a string, not number"),
    ("match(event, properties.missing)", "match() takes a string pattern, not null"),
    ("match(event, properties.badglob)", "match() pattern '[z-a]' is invalid"),
]


@pytest.mark.parametrize(("source", "message"), EVALUATION_ERRORS)
def test_evaluation_errors(source: str, message: str) -> None:
    check = compile_condition(source)  # compiles fine; fails per event
    event = {**EVENT, "properties": {**EVENT["properties"], "badglob": "[z-a]"}}
    with pytest.raises(ConditionEvaluationError, match=re.escape(message)):
        check(event)


def test_evaluation_error_only_on_the_offending_event() -> None:
    check = compile_condition("number(properties.v) > 1")
    assert check({"properties": {"v": "2"}}) is True
    assert check({"properties": {}}) is False
    with pytest.raises(ConditionEvaluationError):
        check({"properties": {"v": "two"}})


def test_short_circuit_skips_errors() -> None:
    check = compile_condition("type = 'page' and number(properties.word) > 1")
    assert check(EVENT) is False
    check = compile_condition("type = 'track' or number(properties.word) > 1")
    assert check(EVENT) is True


# ---------------------------------------------------------------- helpers


def test_json_equal() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal(None, False)
    assert json_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not json_equal({"a": 1}, {"b": 1})
    assert not json_equal([1], [1, 2])


def test_typeof() -> None:
    assert [typeof(v) for v in ["", 1, 1.5, True, [], {}, None]] == [
        "string",
        "number",
        "number",
        "bool",
        "list",
        "object",
        "null",
    ]


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("a*d", "abcd", True),
        ("a*d", "abcde", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("*", "line\nbreak", True),
        ("[abc]x", "bx", True),
        ("[^abc]x", "bx", False),
        ("[]]", "]", True),
        ("a\\?", "a?", True),
        ("a\\?", "ab", False),
        ("(a)+", "(a)+", True),
        ("a\\", "a\\", True),
    ],
)
def test_glob(pattern: str, text: str, matches: bool) -> None:
    assert (glob_regex(pattern).fullmatch(text) is not None) is matches


@pytest.mark.parametrize("text", ["1e999", "9" * 5000, "", " ", "1.2.3", "0x10"])
def test_number_rejects_non_json_numbers(text: str) -> None:
    with pytest.raises(ConditionEvaluationError):
        compile_condition("number(properties.v) = 1")({"properties": {"v": text}})
