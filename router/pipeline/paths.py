"""Dot paths over event dicts: read, and edit either copy-on-write or in place.

A path is ``"properties.products.0.price"``: segments are dict keys, and a segment of ASCII
digits indexes a list. Keys that contain a dot cannot be addressed.

Copy-on-write editors never mutate their input. An event is shared by every destination it
fans out to, so an edit shallow-copies only the dicts and lists along the edited path and
shares every other sub-object with the input. When an edit changes nothing, the input object
itself comes back: the caller then reuses the bytes it already serialized. Consumers must
therefore treat every event they receive as read-only.

Deleting and restricting fan out over lists: dropping ``properties.products.price`` removes
``price`` from every item of ``properties.products`` (Segment's destination filter rule).
Reading and setting do not fan out; use a numeric segment to address one item.

The in-place variants (``*_in_place``) are for source middleware, which owns its events.

The ``compile_*`` functions at the end build the same edits, for fixed paths, as closures
specialised for the usual one- and two-segment paths over plain dicts; the stages compile
their configuration with them once and call them per event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, Final, TypeAlias


class _Missing:
    """Type of :data:`MISSING`; falsy. Compare with ``is``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()
"""Returned by :func:`get_path` when the path does not exist (distinct from a JSON null)."""

PathSpec: TypeAlias = str | tuple[str, ...]
"""A dot path, either as a string or pre-split by :func:`split_path`."""


@lru_cache(maxsize=4096)
def split_path(path: str) -> tuple[str, ...]:
    """Split ``"a.b.0"`` into ``("a", "b", "0")``, once per distinct string.

    Raises:
        ValueError: the path is empty or has an empty segment (``"a..b"``, ``".a"``).
    """
    parts = tuple(path.split("."))
    if not path or "" in parts:
        raise ValueError(f"invalid path {path!r}: empty segment")
    return parts


def _parts(path: PathSpec) -> tuple[str, ...]:
    return path if isinstance(path, tuple) else split_path(path)


def _index(segment: str) -> int | None:
    """The list index a segment names, or None when it is not a non-negative integer."""
    return int(segment) if segment.isdigit() and segment.isascii() else None


def get_path(obj: Any, path: PathSpec) -> Any:
    """The value at ``path`` in ``obj``, or :data:`MISSING` when any step is absent."""
    node = obj
    for key in _parts(path):
        if isinstance(node, dict):
            node = node.get(key, MISSING)
            if node is MISSING:
                return MISSING
        elif isinstance(node, list):
            index = _index(key)
            if index is None or index >= len(node):
                return MISSING
            node = node[index]
        else:
            return MISSING
    return node


def has_path(obj: Any, path: PathSpec) -> bool:
    """Whether ``path`` exists in ``obj`` (a JSON null value counts as present)."""
    return get_path(obj, path) is not MISSING


def _same(current: Any, value: Any) -> bool:
    # Type first: 1 == 1.0 == True in Python, but they serialize differently.
    return current is value or (type(current) is type(value) and current == value)


# ---------------------------------------------------------------- path sets


class _Node:
    """One level of a :class:`PathSet` trie; a child of None is a leaf (the whole value)."""

    __slots__ = ("children", "fan", "indexed")

    def __init__(self) -> None:
        self.children: dict[str, _Node | None] = {}
        # Precomputed for lists: index segments address one item; the others apply to all.
        self.fan: _Node | None = None
        self.indexed: dict[int, _Node | None] = {}

    def insert(self, parts: tuple[str, ...]) -> None:
        node = self
        for depth, key in enumerate(parts):
            last = depth + 1 == len(parts)
            if key in node.children and node.children[key] is None:
                return  # an ancestor already covers the whole value
            if last:
                node.children[key] = None
                return
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node()
            node = child

    def finish(self) -> None:
        fan = _Node()
        for key, child in self.children.items():
            if child is not None:
                child.finish()
            index = _index(key)
            if index is None:
                fan.children[key] = child
            else:
                self.indexed[index] = child
        if fan.children:
            fan.fan = fan  # a list nested in a list fans out again, with the same names
            self.fan = fan


class PathSet:
    """Several paths compiled into a trie, for :func:`without_paths` and :func:`keep_only`."""

    __slots__ = ("paths", "root")

    def __init__(self, paths: Iterable[PathSpec]) -> None:
        self.paths = tuple(_parts(p) for p in paths)
        self.root = _Node()
        for parts in self.paths:
            self.root.insert(parts)
        self.root.finish()

    def __repr__(self) -> str:
        return f"PathSet({['.'.join(p) for p in self.paths]!r})"


def compile_paths(paths: Iterable[PathSpec] | PathSet) -> PathSet:
    """A :class:`PathSet`, built once so the hot path does not re-split strings."""
    return paths if isinstance(paths, PathSet) else PathSet(paths)


# ---------------------------------------------------------------- the editor


class Editor:
    """Applies several edits to one event, copying each container at most once.

    Copy-on-write (default): ``root`` starts as the input; the first change to a container
    replaces it, in its parent, by a shallow copy that later edits then mutate freely.
    ``in_place=True`` mutates the input instead (for events the caller owns).

    Setting through a missing (or non-container) intermediate creates a dict there; setting
    through a list needs an index segment (an index one past the end appends) and is a no-op
    otherwise.
    """

    __slots__ = ("_in_place", "_owned", "original", "root")

    def __init__(self, root: dict[str, Any], *, in_place: bool = False) -> None:
        self.original = root
        self.root = root
        self._in_place = in_place
        # id -> container for the copies made here; holding them keeps the ids unique.
        self._owned: dict[int, Any] = {}

    @property
    def changed(self) -> bool:
        """Whether a copy-on-write edit replaced the root (always False in place)."""
        return self.root is not self.original

    def _writable(self, node: Any) -> Any:
        if self._in_place or id(node) in self._owned:
            return node
        copy = node.copy()
        self._owned[id(copy)] = copy
        return copy

    def _fresh(self) -> dict[str, Any]:
        node: dict[str, Any] = {}
        self._owned[id(node)] = node
        return node

    # -- set

    def set(self, path: PathSpec, value: Any) -> None:
        """Set ``path`` to ``value`` (no change, and no copy, when it already holds it)."""
        self.root = self._set(self.root, _parts(path), 0, value)

    def _set(self, node: Any, parts: tuple[str, ...], depth: int, value: Any) -> Any:
        key = parts[depth]
        last = depth + 1 == len(parts)
        if isinstance(node, dict):
            current = node.get(key, MISSING)
            if last:
                if _same(current, value):
                    return node
                new = value
            elif isinstance(current, dict | list):
                new = self._set(current, parts, depth + 1, value)
                if new is current:
                    return node
            else:
                new = self._set(self._fresh(), parts, depth + 1, value)
            node = self._writable(node)
            node[key] = new
            return node
        if isinstance(node, list):
            index = _index(key)
            if index is None or index > len(node):
                return node
            current = node[index] if index < len(node) else MISSING
            if last:
                if _same(current, value):
                    return node
                new = value
            elif isinstance(current, dict | list):
                new = self._set(current, parts, depth + 1, value)
                if new is current:
                    return node
            else:
                new = self._set(self._fresh(), parts, depth + 1, value)
            node = self._writable(node)
            if index == len(node):
                node.append(new)
            else:
                node[index] = new
            return node
        return node

    # -- delete (fans out over lists)

    def delete(self, paths: Iterable[PathSpec] | PathSet) -> None:
        """Remove every path in ``paths``; non-index segments apply to every item of a list."""
        self.root = self._delete(self.root, compile_paths(paths).root)

    def _delete(self, node: Any, tree: _Node) -> Any:
        if isinstance(node, dict):
            out = node
            for key, sub in tree.children.items():
                if key not in out:
                    continue
                if sub is None:
                    out = self._writable(out)
                    del out[key]
                    continue
                child = out[key]
                new = self._delete(child, sub)
                if new is not child:
                    out = self._writable(out)
                    out[key] = new
            return out
        if isinstance(node, list):
            items: Any = node
            removals: list[int] = []
            for i, item in enumerate(node):
                sub = tree.indexed.get(i)
                if sub is None and i in tree.indexed:
                    removals.append(i)
                    continue
                new = item
                if tree.fan is not None:
                    new = self._delete(new, tree.fan)
                if sub is not None:
                    new = self._delete(new, sub)
                if new is not item:
                    items = self._writable(items)
                    items[i] = new
            if removals:
                items = self._writable(items)
                for i in reversed(removals):
                    del items[i]
            return items
        return node

    # -- pop (one exact path, no fan-out)

    def pop(self, path: PathSpec, default: Any = MISSING) -> Any:
        """Remove ``path`` and return its value, or ``default`` when it is absent."""
        parts = _parts(path)
        value = get_path(self.root, parts)
        if value is MISSING:
            return default
        self.root = self._remove(self.root, parts, 0)
        return value

    def _remove(self, node: Any, parts: tuple[str, ...], depth: int) -> Any:
        # Only called when the path exists, so every step below succeeds.
        key: Any = parts[depth]
        if isinstance(node, list):
            key = _index(key)
        child = node[key]
        if depth + 1 == len(parts):
            node = self._writable(node)
            del node[key]
            return node
        new = self._remove(child, parts, depth + 1)
        if new is not child:
            node = self._writable(node)
            node[key] = new
        return node

    # -- rename

    def rename(self, mapping: Mapping[str, str] | Iterable[tuple[PathSpec, PathSpec]]) -> None:
        """Move each old path's value to its new path, in order; a missing old path is skipped."""
        pairs = mapping.items() if isinstance(mapping, Mapping) else mapping
        for old, new in pairs:
            value = self.pop(old)
            if value is not MISSING:
                self.set(new, value)

    # -- keep only (Segment's "allow properties")

    def keep_only(self, paths: Iterable[PathSpec] | PathSet) -> None:
        """Restrict each parent named in ``paths`` to its listed children.

        ``["properties.total", "context.ip"]`` keeps only ``total`` in ``properties`` and
        only ``ip`` in ``context``. Top-level fields are never removed, and a one-segment path
        (``"properties"``) keeps that object whole. Lists fan out: the restriction applies
        to every item.
        """
        tree = compile_paths(paths).root
        out = self.root
        for key, sub in tree.children.items():
            if sub is None or key not in out:
                continue
            child = out[key]
            new = self._restrict(child, sub)
            if new is not child:
                out = self._writable(out)
                out[key] = new
        self.root = out

    def _restrict(self, node: Any, tree: _Node) -> Any:
        if isinstance(node, dict):
            out = node
            extra = [key for key in node if key not in tree.children]
            if extra:
                out = self._writable(out)
                for key in extra:
                    del out[key]
            for key, sub in tree.children.items():
                if sub is None or key not in out:
                    continue
                child = out[key]
                new = self._restrict(child, sub)
                if new is not child:
                    out = self._writable(out)
                    out[key] = new
            return out
        if isinstance(node, list):
            items: Any = node
            for i, item in enumerate(node):
                new = self._restrict(item, tree)
                if new is not item:
                    items = self._writable(items)
                    items[i] = new
            return items
        return node

    # -- update (fans out over lists)

    def update(self, path: PathSpec, fn: Callable[[Any], Any]) -> None:
        """Replace every existing value at ``path`` with ``fn(value)``; lists fan out."""
        self.root = self._update(self.root, _parts(path), 0, fn)

    def _update(
        self, node: Any, parts: tuple[str, ...], depth: int, fn: Callable[[Any], Any]
    ) -> Any:
        key = parts[depth]
        if isinstance(node, list):
            index = _index(key)
            if index is None:
                targets: Iterable[int] = range(len(node))
                step = depth  # fan out: the same segment applies inside each item
            elif index < len(node):
                targets, step = (index,), depth + 1
            else:
                return node
            out = node
            for i in targets:
                item = node[i]
                new = fn(item) if step == len(parts) else self._update(item, parts, step, fn)
                if new is not item:
                    out = self._writable(out)
                    out[i] = new
            return out
        if not isinstance(node, dict) or key not in node:
            return node
        child = node[key]
        last = depth + 1 == len(parts)
        new = fn(child) if last else self._update(child, parts, depth + 1, fn)
        if new is child:
            return node
        node = self._writable(node)
        node[key] = new
        return node


# ---------------------------------------------------------------- copy-on-write functions


def with_value(event: dict[str, Any], path: PathSpec, value: Any) -> dict[str, Any]:
    """A copy of ``event`` with ``path`` set to ``value`` (``event`` itself if unchanged)."""
    editor = Editor(event)
    editor.set(path, value)
    return editor.root


def without_paths(event: dict[str, Any], paths: Iterable[PathSpec] | PathSet) -> dict[str, Any]:
    """A copy of ``event`` without ``paths``, fanning out over lists (``event`` if unchanged)."""
    editor = Editor(event)
    editor.delete(paths)
    return editor.root


def with_renamed(
    event: dict[str, Any], mapping: Mapping[str, str] | Iterable[tuple[PathSpec, PathSpec]]
) -> dict[str, Any]:
    """A copy of ``event`` with each ``old -> new`` path moved (``event`` if unchanged)."""
    editor = Editor(event)
    editor.rename(mapping)
    return editor.root


def keep_only(event: dict[str, Any], paths: Iterable[PathSpec] | PathSet) -> dict[str, Any]:
    """A copy of ``event`` restricted as :meth:`Editor.keep_only` says (``event`` if unchanged)."""
    editor = Editor(event)
    editor.keep_only(paths)
    return editor.root


# ---------------------------------------------------------------- in-place functions


def set_in_place(obj: dict[str, Any], path: PathSpec, value: Any) -> None:
    """Set ``path`` in ``obj`` itself, creating intermediate dicts."""
    Editor(obj, in_place=True).set(path, value)


def delete_in_place(obj: dict[str, Any], path: PathSpec | PathSet) -> None:
    """Remove ``path`` (or every path of a :class:`PathSet`) from ``obj``; lists fan out."""
    paths = path if isinstance(path, PathSet) else (path,)
    Editor(obj, in_place=True).delete(paths)


def pop_in_place(obj: dict[str, Any], path: PathSpec, default: Any = MISSING) -> Any:
    """Remove ``path`` from ``obj`` and return its value (``default`` if absent)."""
    return Editor(obj, in_place=True).pop(path, default)


def update_in_place(obj: dict[str, Any], path: PathSpec, fn: Callable[[Any], Any]) -> None:
    """Replace every value at ``path`` in ``obj`` with ``fn(value)``; lists fan out."""
    Editor(obj, in_place=True).update(path, fn)


# ---------------------------------------------------------------- compiled edits (fast paths)
#
# Why these exist: destination filters and transformations run once per event *per
# destination*, and the configured paths are nearly always ``parent.field`` or ``field`` over
# plain dicts (``properties.total``, ``context.ip``, ``traits.email``). The generic Editor pays
# for recursion, an owned-copies table and isinstance dispatch on every call; on the processor
# benchmark that machinery cost more than parsing and serializing the event. The closures below
# do the same edit with a few dict operations.
#
# Each closure handles only the shape it was compiled for, over exact ``dict`` containers. On
# anything else (a list to fan out over, a dict subclass a user function returned, a deeper
# path) it hands the *untouched* input to the generic function, so results, copy-on-write and
# identity-when-unchanged are the generic ones by construction.
# tests/pipeline/test_compiled_edits.py checks every closure against the generic path.

Edit: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]
"""A copy-on-write edit: never mutates its input; returns the input itself when unchanged."""

Setter: TypeAlias = Callable[[dict[str, Any], Any], dict[str, Any]]
"""A copy-on-write ``set(event, value)`` with the contract of :data:`Edit`."""

InPlace: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]
"""An edit that mutates the event it is given and returns it (source middleware owns its
events, and its steps have this shape)."""

_CONTAINERS: Final = (dict, list)


def _shallow_plan(tree: _Node) -> list[tuple[str, tuple[str, ...] | None]] | None:
    """``[(top, children or None for the whole top-level field)]`` when every path of the
    trie has one or two segments; None when a deeper path needs the generic walk."""
    plan: list[tuple[str, tuple[str, ...] | None]] = []
    for top, sub in tree.children.items():
        if sub is None:
            plan.append((top, None))
        elif any(child is not None for child in sub.children.values()):
            return None
        else:
            plan.append((top, tuple(sub.children)))
    return plan


def compile_without(paths: Iterable[PathSpec] | PathSet) -> Edit:
    """:func:`without_paths` for fixed ``paths``, specialised for one- and two-segment paths."""
    pathset = compile_paths(paths)

    def generic(event: dict[str, Any]) -> dict[str, Any]:
        return without_paths(event, pathset)

    plan = _shallow_plan(pathset.root)
    if plan is None:
        return generic
    if len(plan) == 1 and plan[0][1] is not None and len(plan[0][1]) == 1:
        # The usual drop_properties: one ``parent.field``.
        top, (key,) = plan[0][0], plan[0][1]

        def drop_one(event: dict[str, Any]) -> dict[str, Any]:
            if type(event) is not dict:
                return generic(event)
            child = event.get(top)
            if type(child) is dict:
                if key not in child:
                    return event
                child = child.copy()
                del child[key]
                out = event.copy()
                out[top] = child
                return out
            if isinstance(child, _CONTAINERS):
                return generic(event)  # a list fans out; a dict subclass copies its own way
            return event  # absent, null or a scalar: nothing below it to drop

        return drop_one

    def drop_many(event: dict[str, Any]) -> dict[str, Any]:
        if type(event) is not dict:
            return generic(event)
        out = event
        for top, keys in plan:
            if keys is None:
                if top in out:
                    if out is event:
                        out = event.copy()
                    del out[top]
                continue
            child = out.get(top)
            if type(child) is dict:
                copied: dict[str, Any] | None = None
                for key in keys:
                    if key in child:
                        if copied is None:
                            copied = child.copy()
                        del copied[key]
                if copied is not None:
                    if out is event:
                        out = event.copy()
                    out[top] = copied
            elif isinstance(child, _CONTAINERS):
                return generic(event)
        return out

    return drop_many


def compile_keep_only(paths: Iterable[PathSpec] | PathSet) -> Edit:
    """:func:`keep_only` for fixed ``paths``, specialised for one- and two-segment paths."""
    pathset = compile_paths(paths)

    def generic(event: dict[str, Any]) -> dict[str, Any]:
        return keep_only(event, pathset)

    shallow = _shallow_plan(pathset.root)
    if shallow is None:
        return generic
    # A one-segment path keeps its top-level field whole: nothing to do for it.
    plan = [(top, frozenset(keys)) for top, keys in shallow if keys is not None]

    def restricted(child: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
        # A copy without the other keys, in the original order (faster than a comprehension).
        out = child.copy()
        for key in child:
            if key not in allowed:
                del out[key]
        return out

    if len(plan) == 1:
        # The usual allow_properties: children of one object (``properties.total`` ...).
        ((top, allowed),) = plan

        def keep_one(event: dict[str, Any]) -> dict[str, Any]:
            child = event.get(top)
            if type(child) is dict and type(event) is dict:
                if allowed.issuperset(child):
                    return event  # only allowed children: keep the event itself
                out = event.copy()
                out[top] = restricted(child, allowed)
                return out
            if isinstance(child, _CONTAINERS) or type(event) is not dict:
                return generic(event)  # a list fans out; dict subclasses take the generic walk
            return event

        return keep_one

    def keep(event: dict[str, Any]) -> dict[str, Any]:
        if type(event) is not dict:
            return generic(event)
        out = event
        for top, allowed in plan:
            child = out.get(top)
            if type(child) is dict:
                if allowed.issuperset(child):
                    continue  # only allowed children: keep the object itself
                if out is event:
                    out = event.copy()
                out[top] = restricted(child, allowed)
            elif isinstance(child, _CONTAINERS):
                return generic(event)
        return out

    return keep


def compile_setter(path: PathSpec) -> Setter:
    """:func:`with_value` for a fixed ``path``, specialised for one and two segments."""
    parts = _parts(path)

    def generic(event: dict[str, Any], value: Any) -> dict[str, Any]:
        return with_value(event, parts, value)

    if len(parts) == 1:
        (key,) = parts

        def set_1(event: dict[str, Any], value: Any) -> dict[str, Any]:
            if type(event) is not dict:
                return generic(event, value)
            current = event.get(key, MISSING)
            if current is value or (type(current) is type(value) and current == value):
                return event  # _same(): already holds it
            out = event.copy()
            out[key] = value
            return out

        return set_1
    if len(parts) == 2:
        top, key = parts

        def set_2(event: dict[str, Any], value: Any) -> dict[str, Any]:
            if type(event) is not dict:
                return generic(event, value)
            child = event.get(top, MISSING)
            if type(child) is dict:
                current = child.get(key, MISSING)
                if current is value or (type(current) is type(value) and current == value):
                    return event  # _same(): already holds it
                child = child.copy()
                child[key] = value
            elif isinstance(child, _CONTAINERS):
                return generic(event, value)
            else:
                child = {key: value}  # absent or not a container: a fresh object, as _set does
            out = event.copy()
            out[top] = child
            return out

        return set_2
    return generic


def compile_set_value(path: PathSpec, value: Any) -> Edit:
    """:func:`with_value` for a fixed ``path`` and ``value``: :func:`compile_setter` with the
    value bound, one call less per event. The value is shared by every event it is set in, so
    pass only immutable values (the caller copies containers per event)."""
    parts = _parts(path)

    def generic(event: dict[str, Any]) -> dict[str, Any]:
        return with_value(event, parts, value)

    if len(parts) == 1:
        (key,) = parts

        def set_1(event: dict[str, Any]) -> dict[str, Any]:
            if type(event) is not dict:
                return generic(event)
            current = event.get(key, MISSING)
            if current is value or (type(current) is type(value) and current == value):
                return event  # _same(): already holds it
            out = event.copy()
            out[key] = value
            return out

        return set_1
    if len(parts) == 2:
        top, key = parts

        def set_2(event: dict[str, Any]) -> dict[str, Any]:
            if type(event) is not dict:
                return generic(event)
            child = event.get(top, MISSING)
            if type(child) is dict:
                current = child.get(key, MISSING)
                if current is value or (type(current) is type(value) and current == value):
                    return event  # _same(): already holds it
                child = child.copy()
                child[key] = value
            elif isinstance(child, _CONTAINERS):
                return generic(event)
            else:
                child = {key: value}  # absent or not a container: a fresh object, as _set does
            out = event.copy()
            out[top] = child
            return out

        return set_2
    return generic


def compile_rename(pairs: Iterable[tuple[PathSpec, PathSpec]]) -> Edit:
    """:func:`with_renamed` for fixed ``old -> new`` pairs, specialised for one- and
    two-segment paths; several pairs apply one after the other, as the generic rename does."""
    steps = [_compile_rename_one(_parts(old), _parts(new)) for old, new in pairs]
    if len(steps) == 1:
        return steps[0]

    def rename_all(event: dict[str, Any]) -> dict[str, Any]:
        for step in steps:
            event = step(event)
        return event

    return rename_all


def _compile_rename_one(old: tuple[str, ...], new: tuple[str, ...]) -> Edit:
    pair = ((old, new),)

    def generic(event: dict[str, Any]) -> dict[str, Any]:
        return with_renamed(event, pair)

    if len(old) > 2 or len(new) > 2:
        return generic
    if len(old) == 2 and len(new) == 2 and old[0] == new[0]:
        return _compile_rename_within(old[0], old[1], new[1], generic)
    old_top, old_key = old[0], old[1] if len(old) == 2 else None
    new_top, new_key = new[0], new[1] if len(new) == 2 else None

    def rename(event: dict[str, Any]) -> dict[str, Any]:
        if type(event) is not dict:
            return generic(event)
        # Pop the old path: copy the event (and the old parent); missing is a no-op.
        moved: dict[str, Any] | None = None
        if old_key is not None:
            node = event.get(old_top)
            if type(node) is not dict:
                if isinstance(node, _CONTAINERS):
                    return generic(event)  # a list item by index, or a dict subclass
                return event
            if old_key not in node:
                return event
            value = node[old_key]
            moved = node.copy()
            del moved[old_key]
            out = event.copy()
            out[old_top] = moved
        else:
            if old_top not in event:
                return event
            value = event[old_top]
            out = event.copy()
            del out[old_top]
        # Set the new path on the copies made above, which this call owns; like the Editor,
        # leave a value that already holds an equal one of the same type (see _same).
        if new_key is None:
            current = out.get(new_top, MISSING)
            if not (current is value or (type(current) is type(value) and current == value)):
                out[new_top] = value
            return out
        parent = out.get(new_top, MISSING)
        if type(parent) is dict:
            current = parent.get(new_key, MISSING)
            if not (current is value or (type(current) is type(value) and current == value)):
                if parent is not moved:
                    parent = parent.copy()
                    out[new_top] = parent
                parent[new_key] = value
        elif isinstance(parent, _CONTAINERS):
            return generic(event)
        else:
            out[new_top] = {new_key: value}
        return out

    return rename


def _compile_rename_within(top: str, old_key: str, new_key: str, generic: Edit) -> Edit:
    """The usual rename, inside one object (``properties.total -> properties.value``)."""

    def rename_within(event: dict[str, Any]) -> dict[str, Any]:
        node = event.get(top)
        if type(node) is not dict or type(event) is not dict:
            if isinstance(node, _CONTAINERS) or type(event) is not dict:
                return generic(event)  # a list item by index, or a dict subclass
            return event  # no such object: nothing to move
        if old_key not in node:
            return event
        # Pop then set, on one copy of the object: the Editor's order of keys and its _same()
        # rule (an equal value of the same type already there is left in place).
        moved = node.copy()
        value = moved.pop(old_key)
        current = moved.get(new_key, MISSING)
        if not (current is value or (type(current) is type(value) and current == value)):
            moved[new_key] = value
        out = event.copy()
        out[top] = moved
        return out

    return rename_within


def compile_delete_in_place(paths: Iterable[PathSpec] | PathSet) -> InPlace:
    """:func:`delete_in_place` for fixed ``paths``, specialised for one and two segments."""
    pathset = compile_paths(paths)

    def generic(event: dict[str, Any]) -> dict[str, Any]:
        delete_in_place(event, pathset)
        return event

    plan = _shallow_plan(pathset.root)
    if plan is None:
        return generic
    if len(plan) == 1 and plan[0][1] is not None and len(plan[0][1]) == 1:
        # The usual drop_fields: one ``parent.field``.
        top, (key,) = plan[0][0], plan[0][1]

        def drop_one(event: dict[str, Any]) -> dict[str, Any]:
            child = event.get(top)
            if type(child) is dict and type(event) is dict:
                child.pop(key, None)
            elif isinstance(child, _CONTAINERS) or type(event) is not dict:
                return generic(event)  # a list fans out; dict subclasses take the generic walk
            return event

        return drop_one

    def drop(event: dict[str, Any]) -> dict[str, Any]:
        if type(event) is not dict:
            return generic(event)
        for top, keys in plan:
            if keys is None:
                event.pop(top, None)
                continue
            child = event.get(top)
            if type(child) is dict:
                for key in keys:
                    child.pop(key, None)
            elif isinstance(child, _CONTAINERS):
                # Deleting is idempotent, so the generic walk may redo what is done already.
                return generic(event)
        return event

    return drop


def compile_update_in_place(path: PathSpec, fn: Callable[[Any], Any]) -> InPlace:
    """:func:`update_in_place` for a fixed ``path`` and ``fn``, specialised for two segments."""
    parts = _parts(path)

    def generic(event: dict[str, Any]) -> dict[str, Any]:
        update_in_place(event, parts, fn)
        return event

    if len(parts) != 2:
        return generic
    top, key = parts

    def update(event: dict[str, Any]) -> dict[str, Any]:
        if type(event) is not dict:
            return generic(event)
        child = event.get(top)
        if type(child) is dict:
            if key in child:
                value = child[key]
                new = fn(value)
                if new is not value:
                    child[key] = new
        elif isinstance(child, _CONTAINERS):
            return generic(event)  # a list fans out over its items
        return event

    return update
