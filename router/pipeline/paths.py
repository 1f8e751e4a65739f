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
