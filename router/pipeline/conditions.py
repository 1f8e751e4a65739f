"""Segment's filter query language (FQL), compiled once into a Python closure per condition.

Grammar, loosest binding first::

    condition  := or
    or         := and ("or" and)*
    and        := comparison ("and" comparison)*
    comparison := unary (("=" | "!=" | ">" | ">=" | "<" | "<=" | "in") unary)?
    unary      := "!" unary | primary
    primary    := literal | array | field | function "(" [or ("," or)*] ")" | "(" or ")"

So ``!`` binds tighter than a comparison: ``!a = b`` is ``(!a) = b``; write ``!(a = b)``.

Values are JSON values. A field is a dot path (``context.page.url``, ``properties.items.0``);
characters other than letters, digits, ``_`` and ``-`` in a field name are escaped with a
backslash (``properties.product\\ 1.price``), as in Segment. A missing field is null.

Semantics (Segment's, documented at segment.com/docs/api/config-api/fql):

- ``=`` / ``!=``: JSON equality, no coercion (``1 = 1.0``, ``"1" != 1``, ``true != 1``).
- ``> >= < <=``: two numbers or two strings; any other pair is false, not an error.
- ``x in y``: ``y`` a list (literal or field) containing ``x``; otherwise false.
- ``and`` / ``or`` / ``!`` and a bare value as the whole condition use truthiness: null,
  false, 0, ``""``, ``[]`` and ``{}`` are false, everything else true (also what ``bool()``
  returns).
- ``typeof`` names Segment's types: ``string number bool list object null``.
- ``length`` of a string counts UTF-8 bytes, as Segment documents.
- ``match`` is a whole-string, case-sensitive glob: ``* ? [abc] [a-z] [!a] \\x``.

Mistakes in the text raise :class:`ConditionSyntaxError` at compile time. Values a function
cannot take (``number("abc")``, ``lowercase(5)``) raise :class:`ConditionEvaluationError`
when evaluated; callers decide (a destination filter drops the event, a transformation is
skipped).

Compilation builds nested closures specialized on constant operands (the usual
``field = "literal"``), so evaluating walks no tree and dispatches on no node type.
"""

from __future__ import annotations

import math
import operator
import re
import weakref
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Final, NamedTuple, TypeAlias

import orjson

from router.pipeline import casing
from router.pipeline.paths import MISSING, get_path
from router.spec import Event

Condition: TypeAlias = Callable[[Event], bool]
_Value: TypeAlias = Callable[[Event], Any]


class ConditionError(ValueError):
    """Root of the condition errors."""


class ConditionSyntaxError(ConditionError):
    """The condition text is not valid FQL; ``position`` is the 0-based character offset."""

    def __init__(self, message: str, position: int) -> None:
        self.message = message
        self.position = position
        super().__init__(f"position {position}: {message}")

    def __reduce__(self) -> tuple[type[ConditionSyntaxError], tuple[str, int]]:
        return type(self), (self.message, self.position)


class ConditionEvaluationError(ConditionError):
    """A value the condition cannot work with, such as ``number("abc")``."""


# ---------------------------------------------------------------- values


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``1 == 1.0`` but ``True != 1`` and ``"1" != 1``."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is list:
            return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            return a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
        return bool(a == b)
    if (ta is int and tb is float) or (ta is float and tb is int):
        return bool(a == b)
    if isinstance(a, dict) and isinstance(b, dict):  # dict subclasses from user middleware
        return a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
    return False


def typeof(value: Any) -> str:
    """Segment's type name of a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def run(a: Any, b: Any) -> bool:
        if (_is_number(a) and _is_number(b)) or (type(a) is str and type(b) is str):
            return compare(a, b)
        return False

    return run


_ORDERINGS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_MIRROR: Final = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "!=": "!="}

# ---------------------------------------------------------------- functions


def _fn_contains(haystack: Any, needle: Any) -> bool:
    if type(haystack) is str:
        return type(needle) is str and needle in haystack
    if type(haystack) is list:
        return any(json_equal(item, needle) for item in haystack)
    return False


def _fn_length(value: Any) -> int:
    if value is None:
        return 0
    if type(value) is str:
        return len(value) if value.isascii() else len(value.encode())
    if isinstance(value, list | dict):
        return len(value)
    raise ConditionEvaluationError(f"length() takes a string, list or object, not {typeof(value)}")


def _string_function(name: str, convert: Callable[[str], str]) -> Callable[[Any], Any]:
    def run(value: Any) -> Any:
        if value is None:
            return None
        if type(value) is str:
            return convert(value)
        raise ConditionEvaluationError(f"{name}() takes a string, not {typeof(value)}")

    return run


def _fn_typeof(value: Any) -> str:
    return typeof(value)


def _fn_bool(value: Any) -> bool:
    return bool(value)


def _fn_string(value: Any) -> Any:
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # JSON semantics: 2.0 is the number 2, so it prints as "2".
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    if isinstance(value, list | dict):
        return orjson.dumps(value).decode()
    raise ConditionEvaluationError(f"string() cannot convert {typeof(value)}")


_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _fn_number(value: Any) -> Any:
    if value is None or _is_number(value):
        return value
    if isinstance(value, bool):
        return 1 if value else 0
    if type(value) is str:
        if _NUMBER_TEXT.fullmatch(value) is not None:
            try:
                number = float(value) if any(c in value for c in ".eE") else int(value)
            except ValueError:  # over Python's digit limit for int()
                pass
            else:
                if math.isfinite(number):
                    return number
        raise ConditionEvaluationError(f"number() cannot convert the string {value[:40]!r}")
    raise ConditionEvaluationError(f"number() cannot convert {typeof(value)}")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a Segment glob (``* ? [abc] [a-z] [!a] \\x``) into a whole-string regex.

    Raises:
        re.error: the pattern has an invalid character class (``[z-a]``).
    """
    return _glob_regex(pattern)


@lru_cache(maxsize=1024)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i, size = 0, len(pattern)
    while i < size:
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < size:
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            end, body = _glob_class(pattern, i + 1)
            if end < 0:
                out.append(re.escape(char))  # no closing bracket: a literal "["
            else:
                out.append(body)
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _glob_class(pattern: str, start: int) -> tuple[int, str]:
    """Translate ``[...]`` starting after the ``[``; returns (index of ``]``, regex) or (-1, "")."""
    i, size = start, len(pattern)
    parts = ["["]
    if i < size and pattern[i] in "!^":
        parts.append("^")
        i += 1
    first = True
    while i < size:
        char = pattern[i]
        if char == "]" and not first:
            parts.append("]")
            return i, "".join(parts)
        if char == "\\" and i + 1 < size:
            i += 1
            char = pattern[i]
            parts.append(re.escape(char))
        elif char == "-":
            parts.append("-")
        else:
            parts.append(re.escape(char))
        first = False
        i += 1
    return -1, ""


def _fn_match(text: Any, pattern: Any) -> bool:
    if type(text) is not str:
        return False
    if type(pattern) is not str:
        raise ConditionEvaluationError(f"match() takes a string pattern, not {typeof(pattern)}")
    try:
        regex = _glob_regex(pattern)
    except re.error as exc:
        raise ConditionEvaluationError(f"match() pattern {pattern[:40]!r} is invalid") from exc
    return regex.fullmatch(text) is not None


class _Function(NamedTuple):
    arity: int
    run: Callable[..., Any]
    boolean: bool  # always returns a bool, so no truthiness wrapper is needed


_FUNCTIONS: Final[dict[str, _Function]] = {
    "contains": _Function(2, _fn_contains, True),
    "length": _Function(1, _fn_length, False),
    "lowercase": _Function(1, _string_function("lowercase", casing.lowercase), False),
    "uppercase": _Function(1, _string_function("uppercase", casing.uppercase), False),
    "snakecase": _Function(1, _string_function("snakecase", casing.snakecase), False),
    "kebabcase": _Function(1, _string_function("kebabcase", casing.kebabcase), False),
    "titlecase": _Function(1, _string_function("titlecase", casing.titlecase), False),
    "typeof": _Function(1, _fn_typeof, False),
    "match": _Function(2, _fn_match, True),
    "bool": _Function(1, _fn_bool, True),
    "string": _Function(1, _fn_string, False),
    "number": _Function(1, _fn_number, False),
}

# ---------------------------------------------------------------- tokens


class _Token(NamedTuple):
    kind: str  # "string" "number" "field" "keyword" "op" "end"
    value: Any  # decoded literal, field parts, keyword or operator text
    position: int
    text: str


_KEYWORDS: Final = frozenset({"true", "false", "null", "and", "or", "in"})
_OPERATORS: Final = ("!=", ">=", "<=", "=", ">", "<", "!", "(", ")", "[", "]", ",")
_HINTS: Final = {"==": "'=' compares, not '=='", "&&": "use 'and'", "||": "use 'or'"}
_NUMBER: Final = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?")
_ESCAPES: Final = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def _is_name_char(char: str) -> bool:
    return char.isalnum() or char in "_-"


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, size = 0, len(source)
    while i < size:
        char = source[i]
        if char.isspace():
            i += 1
            continue
        start = i
        if char in "\"'":
            value, i = _read_string(source, i)
            tokens.append(_Token("string", value, start, source[start:i]))
            continue
        if char.isdigit() or (char in "-." and i + 1 < size and source[i + 1].isdigit()):
            found = _NUMBER.match(source, i)
            if found is None or (found.end() < size and _is_name_char(source[found.end()])):
                raise ConditionSyntaxError("invalid number", start)
            text = found.group()
            number: int | float = float(text) if any(c in text for c in ".eE") else int(text)
            i = found.end()
            tokens.append(_Token("number", number, start, text))
            continue
        if char.isalpha() or char in "_\\":
            parts, escaped, i = _read_field(source, i)
            text = source[start:i]
            if not escaped and len(parts) == 1 and parts[0] in _KEYWORDS:
                tokens.append(_Token("keyword", parts[0], start, text))
            else:
                tokens.append(_Token("field", parts, start, text))
            continue
        pair = source[i : i + 2]
        if pair in _HINTS:
            raise ConditionSyntaxError(_HINTS[pair], start)
        for op in _OPERATORS:
            if source.startswith(op, i):
                tokens.append(_Token("op", op, start, op))
                i += len(op)
                break
        else:
            raise ConditionSyntaxError(f"unexpected character {char!r}", start)
    tokens.append(_Token("end", None, size, ""))
    return tokens


def _read_string(source: str, start: int) -> tuple[str, int]:
    quote = source[start]
    out: list[str] = []
    i, size = start + 1, len(source)
    while i < size:
        char = source[i]
        if char == quote:
            return "".join(out), i + 1
        if char == "\\":
            if i + 1 >= size:
                break
            code = source[i + 1]
            if code == "u":
                digits = source[i + 2 : i + 6]
                if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise ConditionSyntaxError("\\u needs four hex digits", i)
                out.append(chr(int(digits, 16)))
                i += 6
                continue
            if code not in _ESCAPES:
                raise ConditionSyntaxError(f"unknown escape '\\{code}' in string", i)
            out.append(_ESCAPES[code])
            i += 2
            continue
        out.append(char)
        i += 1
    raise ConditionSyntaxError(f"unterminated string (missing closing {quote})", start)


def _read_field(source: str, start: int) -> tuple[tuple[str, ...], bool, int]:
    """Read ``a.b\\ c.0``; returns (segments, whether any escape was used, end offset)."""
    parts: list[str] = []
    segment: list[str] = []
    escaped = False
    i, size = start, len(source)
    while True:
        while i < size:
            char = source[i]
            if char == "\\":
                if i + 1 >= size:
                    raise ConditionSyntaxError("'\\' at the end of a field name", i)
                segment.append(source[i + 1])
                escaped = True
                i += 2
            elif _is_name_char(char):
                segment.append(char)
                i += 1
            else:
                break
        parts.append("".join(segment))
        segment = []
        if i < size and source[i] == ".":
            if i + 1 >= size or not (_is_name_char(source[i + 1]) or source[i + 1] == "\\"):
                raise ConditionSyntaxError("expected a field name after '.'", i + 1)
            i += 1
            continue
        return tuple(parts), escaped, i


# ---------------------------------------------------------------- compiled expressions


class _Expr:
    """A compiled sub-expression: a closure, plus what is known about it at compile time."""

    __slots__ = ("boolean", "const", "key", "run")

    def __init__(
        self, run: _Value, *, boolean: bool = False, const: Any = MISSING, key: str | None = None
    ) -> None:
        self.run = run
        self.boolean = boolean  # run() always returns a bool
        self.const = const  # the value, when it does not depend on the event
        # For a one-segment field (``event``, ``type``, ``userId``): its key, so comparisons
        # and calls can read ``event.get(key)`` inline instead of calling ``run``.
        self.key = key


def _constant(value: Any) -> _Expr:
    return _Expr(lambda event: value, boolean=isinstance(value, bool), const=value)


def _predicate(expr: _Expr) -> Condition:
    if expr.const is not MISSING:
        truth = bool(expr.const)
        return lambda event: truth
    if expr.boolean:
        return expr.run
    run = expr.run
    return lambda event: bool(run(event))


def _field(parts: tuple[str, ...]) -> _Expr:
    # Fixed-depth getters for the common shapes; a missing value reads as null.
    if any(part.isdigit() for part in parts) or len(parts) > 3:

        def get_any(event: Event) -> Any:
            value = get_path(event, parts)
            return None if value is MISSING else value

        return _Expr(get_any)
    if len(parts) == 1:
        (key,) = parts
        return _Expr(lambda event: event.get(key), key=key)
    if len(parts) == 2:
        first, second = parts

        def get_2(event: Event) -> Any:
            node = event.get(first)
            return node.get(second) if isinstance(node, dict) else None

        return _Expr(get_2)
    first, second, third = parts

    def get_3(event: Event) -> Any:
        node = event.get(first)
        if isinstance(node, dict):
            node = node.get(second)
            if isinstance(node, dict):
                return node.get(third)
        return None

    return _Expr(get_3)


# Conditions that are exactly ``field = "text"`` (False) or ``field != "text"`` (True), for a
# one-segment field: filters and transformations test these inline, without calling them.
_FIELD_TESTS: weakref.WeakKeyDictionary[Condition, tuple[str, str, bool]] = (
    weakref.WeakKeyDictionary()
)


def field_test(condition: Condition) -> tuple[str, str, bool] | None:
    """``(field, text, negated)`` when ``condition`` is exactly ``field = "text"`` (negated
    False) or ``field != "text"`` (True) on a one-segment field, else None.

    Such a condition is ``event.get(field) == text``, or its negation, and cannot raise, so a
    caller may evaluate it inline; that saves a call per event and destination.
    """
    return _FIELD_TESTS.get(condition)


def _equals_constant(expr: _Expr, value: Any) -> Condition:
    run, key = expr.run, expr.key
    if key is not None and (value is None or isinstance(value, bool) or type(value) is str):
        # The usual ``type = "track"``: one closure, no nested call to read the field.
        if value is None:
            return lambda event: event.get(key) is None
        if isinstance(value, bool):
            return lambda event: event.get(key) is value
        text = value

        def equals(event: Event) -> bool:
            return event.get(key) == text

        _FIELD_TESTS[equals] = (key, text, False)
        return equals
    if value is None:
        return lambda event: run(event) is None
    if isinstance(value, bool):
        return lambda event: run(event) is value
    if type(value) is str:
        return lambda event: run(event) == value
    if _is_number(value):

        def number_equals(event: Event) -> bool:
            found = run(event)
            kind = type(found)
            return (kind is int or kind is float) and found == value

        return number_equals
    return lambda event: json_equal(run(event), value)


def _compare(op: str, left: _Expr, right: _Expr) -> _Expr:
    if left.const is not MISSING and right.const is MISSING:
        left, right, op = right, left, _MIRROR[op]
    if left.const is not MISSING:  # both constant: fold
        a, b = left.const, right.const
        if op in ("=", "!="):
            return _constant(json_equal(a, b) is (op == "="))
        return _constant(_ordered(_ORDERINGS[op])(a, b))
    run = left.run
    if right.const is not MISSING:
        value = right.const
        if op == "=":
            return _Expr(_equals_constant(left, value), boolean=True)
        if op == "!=":
            key = left.key
            if key is not None and type(value) is str:
                # The usual ``type != "page"``: negate inline rather than call "=" and negate.
                # ``not ==`` as the generic path does, for objects a user function put there.
                text = value

                def differs(event: Event) -> bool:
                    return not (event.get(key) == text)  # noqa: SIM201

                _FIELD_TESTS[differs] = (key, text, True)
                return _Expr(differs, boolean=True)
            equals = _equals_constant(left, value)
            return _Expr(lambda event: not equals(event), boolean=True)
        compare = _ORDERINGS[op]
        if _is_number(value):

            def number_order(event: Event) -> bool:
                found = run(event)
                kind = type(found)
                return (kind is int or kind is float) and compare(found, value)

            return _Expr(number_order, boolean=True)
        if type(value) is str:

            def string_order(event: Event) -> bool:
                found = run(event)
                return type(found) is str and compare(found, value)

            return _Expr(string_order, boolean=True)
        ordered = _ordered(compare)
        return _Expr(lambda event: ordered(run(event), value), boolean=True)
    other = right.run
    if op == "=":
        return _Expr(lambda event: json_equal(run(event), other(event)), boolean=True)
    if op == "!=":
        return _Expr(lambda event: not json_equal(run(event), other(event)), boolean=True)
    ordered = _ordered(_ORDERINGS[op])
    return _Expr(lambda event: ordered(run(event), other(event)), boolean=True)


class _Tag:
    """Hash keys for JSON scalars that Python would confuse (``True == 1``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_TRUE, _FALSE, _NULL, _UNHASHABLE = _Tag("true"), _Tag("false"), _Tag("null"), _Tag("-")


def _member_key(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is float:
        return value  # 1 and 1.0 share a hash and compare equal: JSON semantics already
    if value is None:
        return _NULL
    if kind is bool:
        return _TRUE if value else _FALSE
    return _UNHASHABLE


def _member(left: _Expr, right: _Expr) -> _Expr:
    run = left.run
    if right.const is not MISSING:
        items = right.const
        if type(items) is not list:
            return _constant(False)
        keys = {_member_key(item) for item in items} - {_UNHASHABLE}
        others = [item for item in items if _member_key(item) is _UNHASHABLE]

        def in_constant(event: Event) -> bool:
            value = run(event)
            key = _member_key(value)
            if key is not _UNHASHABLE:
                return key in keys
            return any(json_equal(value, other) for other in others)

        if left.const is not MISSING:
            return _constant(in_constant({}))
        return _Expr(in_constant, boolean=True)
    lookup = right.run

    def in_value(event: Event) -> bool:
        value, items = run(event), lookup(event)
        return type(items) is list and any(json_equal(value, item) for item in items)

    return _Expr(in_value, boolean=True)


def _call(name: str, args: Sequence[_Expr], position: int) -> _Expr:
    function = _FUNCTIONS.get(name)
    if function is None:
        known = ", ".join(sorted(_FUNCTIONS))
        raise ConditionSyntaxError(f"unknown function {name!r} (known: {known})", position)
    if len(args) != function.arity:
        plural = "s" if function.arity > 1 else ""
        raise ConditionSyntaxError(
            f"{name}() takes {function.arity} argument{plural}, got {len(args)}", position
        )
    run = function.run
    if all(arg.const is not MISSING for arg in args):
        try:
            return _constant(run(*(arg.const for arg in args)))
        except ConditionEvaluationError:
            pass  # leave it to evaluation time, where callers handle it per event
    if name == "match" and args[1].const is not MISSING and type(args[1].const) is str:
        # The usual case: a literal pattern, translated and checked once.
        try:
            regex = _glob_regex(args[1].const)
        except re.error:
            raise ConditionSyntaxError("invalid match() pattern", position) from None
        text = args[0].run
        fullmatch = regex.fullmatch

        def match_constant(event: Event) -> bool:
            value = text(event)
            return type(value) is str and fullmatch(value) is not None

        return _Expr(match_constant, boolean=True)
    if function.arity == 1:
        arg = args[0].run
        return _Expr(lambda event: run(arg(event)), boolean=function.boolean)
    first, second = args[0].run, args[1].run
    if args[1].const is not MISSING:
        # A literal second argument (``contains(userId, "bot")``): pass it, do not call for it.
        literal = args[1].const
        key = args[0].key
        if name == "contains" and key is not None and type(literal) is str:
            # ``contains(userId, "bot")`` on a string field: the substring test inline.
            needle = literal

            def contains_literal(event: Event) -> bool:
                haystack = event.get(key)
                if type(haystack) is str:
                    return needle in haystack
                return _fn_contains(haystack, needle)

            return _Expr(contains_literal, boolean=True)
        if key is not None:
            return _Expr(lambda event: run(event.get(key), literal), boolean=function.boolean)
        return _Expr(lambda event: run(first(event), literal), boolean=function.boolean)
    return _Expr(lambda event: run(first(event), second(event)), boolean=function.boolean)


def _and(left: _Expr, right: _Expr) -> _Expr:
    a, b = _predicate(left), _predicate(right)
    if left.const is not MISSING and right.const is not MISSING:
        return _constant(a({}) and b({}))
    return _Expr(lambda event: a(event) and b(event), boolean=True)


def _or(left: _Expr, right: _Expr) -> _Expr:
    a, b = _predicate(left), _predicate(right)
    if left.const is not MISSING and right.const is not MISSING:
        return _constant(a({}) or b({}))
    return _Expr(lambda event: a(event) or b(event), boolean=True)


def _not(operand: _Expr) -> _Expr:
    if operand.const is not MISSING:
        return _constant(not operand.const)
    test = _predicate(operand)
    return _Expr(lambda event: not test(event), boolean=True)


# ---------------------------------------------------------------- parser


_COMPARISONS: Final = frozenset({"=", "!=", ">", ">=", "<", "<="})


def _describe(token: _Token) -> str:
    return "the end of the condition" if token.kind == "end" else repr(token.text)


class _Parser:
    """Recursive descent over the token list, compiling as it goes."""

    def __init__(self, source: str) -> None:
        self.tokens = _tokenize(source)
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, kind: str, value: Any) -> bool:
        token = self.tokens[self.index]
        return token.kind == kind and token.value == value

    def fail(self, expected: str) -> ConditionSyntaxError:
        token = self.token
        message = f"expected {expected}, found {_describe(token)}"
        return ConditionSyntaxError(message, token.position)

    def expect_op(self, op: str, expected: str) -> None:
        if not self.at("op", op):
            raise self.fail(expected)
        self.advance()

    def parse(self) -> _Expr:
        if self.token.kind == "end":
            raise ConditionSyntaxError("the condition is empty", 0)
        expr = self.parse_or()
        if self.token.kind != "end":
            raise self.fail("an operator, 'and', 'or' or the end of the condition")
        return expr

    def parse_or(self) -> _Expr:
        expr = self.parse_and()
        while self.at("keyword", "or"):
            self.advance()
            expr = _or(expr, self.parse_and())
        return expr

    def parse_and(self) -> _Expr:
        expr = self.parse_comparison()
        while self.at("keyword", "and"):
            self.advance()
            expr = _and(expr, self.parse_comparison())
        return expr

    def parse_comparison(self) -> _Expr:
        left = self.parse_unary()
        token = self.token
        if token.kind == "op" and token.value in _COMPARISONS:
            self.advance()
            return _compare(token.value, left, self.parse_unary())
        if token.kind == "keyword" and token.value == "in":
            self.advance()
            return _member(left, self.parse_unary())
        return left

    def parse_unary(self) -> _Expr:
        if self.at("op", "!"):
            self.advance()
            return _not(self.parse_unary())
        return self.parse_primary()

    def parse_primary(self) -> _Expr:
        token = self.token
        if token.kind in ("string", "number"):
            self.advance()
            return _constant(token.value)
        if token.kind == "keyword" and token.value in ("true", "false", "null"):
            self.advance()
            return _constant({"true": True, "false": False, "null": None}[token.value])
        if self.at("op", "["):
            return _constant(self.parse_array())
        if self.at("op", "("):
            self.advance()
            expr = self.parse_or()
            self.expect_op(")", "')'")
            return expr
        if token.kind == "field":
            self.advance()
            if self.at("op", "("):
                return self.parse_call(token)
            return _field(token.value)
        raise self.fail("a value, a field, a function or '('")

    def parse_call(self, name: _Token) -> _Expr:
        self.advance()  # "("
        if len(name.value) != 1 or name.value[0] not in _FUNCTIONS:
            known = ", ".join(sorted(_FUNCTIONS))
            raise ConditionSyntaxError(
                f"unknown function {name.text!r} (known: {known})", name.position
            )
        args: list[_Expr] = []
        if not self.at("op", ")"):
            args.append(self.parse_or())
            while self.at("op", ","):
                self.advance()
                args.append(self.parse_or())
        self.expect_op(")", "',' or ')'")
        return _call(name.value[0], args, name.position)

    def parse_array(self) -> list[Any]:
        self.advance()  # "["
        items: list[Any] = []
        if self.at("op", "]"):
            self.advance()
            return items
        while True:
            items.append(self.parse_literal())
            if self.at("op", ","):
                self.advance()
                continue
            self.expect_op("]", "',' or ']'")
            return items

    def parse_literal(self) -> Any:
        token = self.token
        if token.kind in ("string", "number"):
            self.advance()
            return token.value
        if token.kind == "keyword" and token.value in ("true", "false", "null"):
            self.advance()
            return {"true": True, "false": False, "null": None}[token.value]
        if self.at("op", "["):
            return self.parse_array()
        raise self.fail("a literal value (lists hold literals only)")


@lru_cache(maxsize=1024)
def compile_condition(source: str) -> Condition:
    """Compile FQL ``source`` into a predicate over an event dict.

    The predicate is pure and shared: the same text compiles once (cached) for every
    destination that uses it.

    Raises:
        ConditionSyntaxError: ``source`` is not valid FQL; the error names the position.
    """
    return _predicate(_Parser(source).parse())
