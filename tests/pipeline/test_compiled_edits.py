"""The compiled edits (paths.compile_*) against the generic Editor functions they stand for.

Each compiled closure is a fast path for one- and two-segment paths over plain dicts and falls
back to the generic function otherwise. Over many generated events and paths, fast and generic
must give equal results (types included: 1, 1.0 and True differ in JSON), leave the input as
it was, return the input itself in exactly the same cases, and share exactly the same
sub-objects with the input.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import pytest

from router.pipeline.paths import (
    MISSING,
    compile_delete_in_place,
    compile_keep_only,
    compile_paths,
    compile_rename,
    compile_set_value,
    compile_setter,
    compile_update_in_place,
    compile_without,
    delete_in_place,
    keep_only,
    update_in_place,
    with_renamed,
    with_value,
    without_paths,
)

Event = dict[str, Any]

TOPS = ["properties", "context", "traits", "event", "type", "0"]
KEYS = ["total", "ip", "a", "b", "0", "1", "email"]


class Sub(dict[str, Any]):
    """A dict subclass, as a user middleware function might return."""


def strict_equal(a: Any, b: Any) -> bool:
    """Equality that also compares types all the way down (1 == True == 1.0 in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def sharing(result: Any, original: Any, path: tuple[Any, ...] = ()) -> list[Any]:
    """For each container in ``result``: its path and whether it *is* the input's object there."""
    out: list[Any] = []
    if isinstance(result, dict | list):
        out.append((path, result is original))
        items = result.items() if isinstance(result, dict) else enumerate(result)
        for key, value in items:
            if isinstance(original, dict):
                before = original.get(key, MISSING)
            elif isinstance(original, list) and isinstance(key, int) and key < len(original):
                before = original[key]
            else:
                before = MISSING
            out.extend(sharing(value, before, (*path, key)))
    return out


def scalar(rng: random.Random) -> Any:
    return rng.choice([None, 0, 1, 1.0, True, False, "", "x", "EUR", 30, 30.0, [], {}])


def value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth <= 0 or roll < 0.45:
        return scalar(rng)
    if roll < 0.8:
        return obj(rng, depth - 1, KEYS)
    if roll < 0.9:
        return [value(rng, depth - 1) for _ in range(rng.randrange(0, 3))]
    return Sub(obj(rng, depth - 1, KEYS))


def obj(rng: random.Random, depth: int, names: list[str]) -> Event:
    return {name: value(rng, depth) for name in rng.sample(names, rng.randrange(0, 4))}


def make_event(rng: random.Random) -> Event:
    event: Event = {"type": "track", "userId": "u"}
    for top in rng.sample(TOPS, rng.randrange(1, len(TOPS) + 1)):
        roll = rng.random()
        if roll < 0.7:
            event[top] = obj(rng, 2, KEYS)
        elif roll < 0.8:
            event[top] = [obj(rng, 1, KEYS) for _ in range(rng.randrange(0, 3))]
        else:
            event[top] = value(rng, 1)
    return event


def make_path(rng: random.Random) -> str:
    parts = [rng.choice(TOPS)]
    for _ in range(rng.choices([0, 1, 2], weights=[2, 6, 1])[0]):
        parts.append(rng.choice(KEYS))
    return ".".join(parts)


def events(count: int, seed: int) -> list[Event]:
    rng = random.Random(seed)
    out = [make_event(rng) for _ in range(count)]
    out.append(Sub(make_event(rng)))  # the event itself a dict subclass
    return out


def check_copy_on_write(fast: Callable[[Event], Event], slow: Callable[[Event], Event]) -> int:
    """Compare on generated events; returns how many events the edit changed."""
    changed = 0
    for event in events(300, seed=11):
        before = copy.deepcopy(event)
        expected = slow(event)
        got = fast(event)
        assert strict_equal(event, before), "the input must never be mutated"
        assert strict_equal(got, expected), (event, got, expected)
        assert (got is event) == (expected is event)
        assert sharing(got, event) == sharing(expected, event)
        changed += got is not event
    return changed


PATH_SETS = [
    ["context.ip"],
    ["properties.total"],
    ["properties.total", "properties.a"],
    ["context.ip", "properties.0", "traits"],
    ["event"],
    ["properties.a.b"],  # three segments: the generic walk
    ["properties", "properties.a"],
    ["0.1", "properties.a"],
]


@pytest.mark.parametrize("paths", PATH_SETS)
def test_compile_without_matches_without_paths(paths: list[str]) -> None:
    pathset = compile_paths(paths)
    fast = compile_without(paths)
    assert check_copy_on_write(fast, lambda e: without_paths(e, pathset))


@pytest.mark.parametrize("paths", PATH_SETS)
def test_compile_keep_only_matches_keep_only(paths: list[str]) -> None:
    pathset = compile_paths(paths)
    fast = compile_keep_only(paths)
    changed = check_copy_on_write(fast, lambda e: keep_only(e, pathset))
    assert changed or paths in (["event"], ["properties", "properties.a"])


SET_CASES = [
    ("properties.total", 30),
    ("properties.total", 30.0),
    ("properties.total", True),
    ("properties.a", None),
    ("context.ip", "x"),
    ("traits.email", ""),
    ("event", "Sign Up"),
    ("type", "track"),
    ("0.1", 1),
    ("properties.a.b", "deep"),  # three segments: the generic walk
]


@pytest.mark.parametrize(("path", "new"), SET_CASES)
def test_compile_setter_matches_with_value(path: str, new: Any) -> None:
    setter = compile_setter(path)
    check_copy_on_write(lambda e: setter(e, new), lambda e: with_value(e, path, new))


@pytest.mark.parametrize(("path", "new"), SET_CASES)
def test_compile_set_value_matches_with_value(path: str, new: Any) -> None:
    check_copy_on_write(compile_set_value(path, new), lambda e: with_value(e, path, new))


RENAMES = [
    {"properties.total": "properties.value"},
    {"properties.a": "properties.a"},  # the same path: the key moves to the end
    {"properties.a": "properties.b"},
    {"traits.email": "context.email"},
    {"properties.total": "properties"},
    {"properties": "traits.a"},
    {"event": "traits.0"},
    {"event": "type"},
    {"properties.a": "traits.b", "traits.b": "properties.a"},
    {"properties.a.b": "properties.c"},  # three segments: the generic walk
    {"0.1": "0.0"},
]


@pytest.mark.parametrize("mapping", RENAMES)
def test_compile_rename_matches_with_renamed(mapping: dict[str, str]) -> None:
    fast = compile_rename(list(mapping.items()))
    check_copy_on_write(fast, lambda e: with_renamed(e, mapping))


def check_in_place(fast: Callable[[Event], Event], slow: Callable[[Event], None]) -> None:
    for event in events(300, seed=7):
        expected = copy.deepcopy(event)
        slow(expected)
        got = fast(event)
        assert got is event
        assert strict_equal(event, expected)


@pytest.mark.parametrize("paths", PATH_SETS)
def test_compile_delete_in_place_matches_delete_in_place(paths: list[str]) -> None:
    pathset = compile_paths(paths)
    check_in_place(compile_delete_in_place(paths), lambda e: delete_in_place(e, pathset))


@pytest.mark.parametrize("path", ["traits.email", "properties.total", "event", "a.b.c", "0.1"])
def test_compile_update_in_place_matches_update_in_place(path: str) -> None:
    def fn(value: Any) -> Any:
        return value if value is None else f"h({value!r})"

    check_in_place(compile_update_in_place(path, fn), lambda e: update_in_place(e, path, fn))


def test_common_shapes_take_the_fast_paths() -> None:
    """The bench's and Segment's usual configurations do not fall back to the Editor."""
    assert compile_without(["context.ip"]).__name__ == "drop_one"
    assert compile_without(["context.ip", "properties.a"]).__name__ == "drop_many"
    assert compile_keep_only(["properties.total", "properties.currency"]).__name__ == "keep_one"
    assert compile_setter("properties.source").__name__ == "set_2"
    assert compile_set_value("event", "x").__name__ == "set_1"
    assert compile_rename([("properties.total", "properties.value")]).__name__ == "rename_within"
    assert compile_rename([("traits.mail", "context.mail")]).__name__ == "rename"
    assert compile_delete_in_place(["context.library"]).__name__ == "drop_one"
    assert compile_update_in_place("traits.email", str).__name__ == "update"
    assert compile_without(["properties.a.b"]).__name__ == "generic"


def test_fast_paths_hand_lists_and_subclasses_to_the_generic_walk() -> None:
    event = {"context": [{"ip": 1, "x": 2}, {"ip": 3}], "properties": Sub(total=1, sku=2)}
    assert compile_without(["context.ip"])(event) == {
        "context": [{"x": 2}, {}],
        "properties": {"total": 1, "sku": 2},
    }
    kept = compile_keep_only(["properties.total"])(event)
    assert kept["properties"] == {"total": 1} and kept["context"] is event["context"]
    assert event == {
        "context": [{"ip": 1, "x": 2}, {"ip": 3}],
        "properties": {"total": 1, "sku": 2},
    }


def test_unchanged_returns_the_input_itself() -> None:
    event: Event = {"type": "identify", "traits": {"email": "x"}, "context": {"ip": "1"}}
    assert compile_without(["properties.total"])(event) is event
    assert compile_keep_only(["properties.total"])(event) is event
    assert compile_keep_only(["traits.email"])(event) is event
    assert compile_set_value("traits.email", "x")(event) is event
    assert compile_rename([("properties.total", "properties.value")])(event) is event
    # The same value but another JSON type is a change.
    assert compile_set_value("context.ip", 1)(event) is not event


@pytest.mark.parametrize(
    "mapping",
    [{"properties.a": "properties.b"}, {"traits.a": "properties.b"}, {"context": "properties.b"}],
)
def test_rename_onto_an_equal_value_keeps_the_one_there(mapping: dict[str, str]) -> None:
    """The Editor leaves an equal value of the same type in place (its _same rule)."""
    event: Event = {
        "properties": {"a": {"x": 1}, "b": {"x": 1}},
        "traits": {"a": {"x": 1}},
        "context": {"x": 1},
    }
    expected = with_renamed(event, mapping)
    got = compile_rename(list(mapping.items()))(event)
    assert strict_equal(got, expected)
    assert got["properties"]["b"] is event["properties"]["b"]
    assert sharing(got, event) == sharing(expected, event)
