"""``router plan infer``: draft a tracking plan from observed events, the way teams start one.

Every event name seen becomes a rule (track by ``event``, page / screen by ``name``, unnamed
ones as ``Page Viewed`` / ``Screen Viewed``; identify, group and alias one rule each), with
its properties (traits for identify and group) typed from the values seen: one JSON type, or
a list of them when values differed (integers and numbers together are ``number``), nested
objects and arrays of objects described the same way. A key present in every sample of its
object is ``required``. The draft is a starting point for a person to edit, not a contract:
rare optional properties are only as known as the sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from router.config import PAGE_VIEWED, SCREEN_VIEWED
from router.observability.source_schema import json_type

MAX_DEPTH = 4
MAX_EVENT_NAMES = 2000


class _Node:
    """What the values at one place looked like: types, and for objects their keys."""

    __slots__ = ("count", "items", "keys", "objects", "types")

    def __init__(self) -> None:
        self.count = 0  # values seen here
        self.types: set[str] = set()
        self.objects = 0  # how many of them were objects
        self.keys: dict[str, _Node] = {}
        self.items: _Node | None = None  # array items

    def add(self, value: Any, depth: int = 0) -> None:
        self.count += 1
        kind = json_type(value)
        self.types.add(kind)
        if depth >= MAX_DEPTH:
            return
        if kind == "object":
            self.add_object(value, depth)
        elif kind == "array":
            if self.items is None:
                self.items = _Node()
            for item in value:
                self.items.add(item, depth + 1)

    def add_object(self, value: Mapping[str, Any], depth: int = 0) -> None:
        self.objects += 1
        for key, item in value.items():
            node = self.keys.get(key)
            if node is None:
                node = self.keys[key] = _Node()
            node.add(item, depth + 1)

    def schema(self) -> dict[str, Any]:
        types = set(self.types)
        if {"integer", "number"} <= types:
            types.discard("integer")
        schema: dict[str, Any] = {}
        if types:
            ordered = sorted(types)
            schema["type"] = ordered[0] if len(ordered) == 1 else ordered
        if "object" in types and self.keys:
            schema.update(self.object_schema())
        if "array" in types and self.items is not None and self.items.count:
            schema["items"] = self.items.schema()
        return schema

    def object_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "properties": {key: node.schema() for key, node in sorted(self.keys.items())}
        }
        required = sorted(key for key, node in self.keys.items() if node.count >= self.objects)
        if required:
            schema["required"] = required
        return schema


class _EventDraft:
    __slots__ = ("container", "count", "values", "with_container")

    def __init__(self, container: str | None) -> None:
        self.container = container
        self.count = 0
        self.with_container = 0
        self.values = _Node()

    def add(self, event: Mapping[str, Any]) -> None:
        self.count += 1
        if self.container is None:
            return
        values = event.get(self.container)
        if isinstance(values, dict):
            self.with_container += 1
            self.values.add_object(values)

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "description": f"seen {self.count} time(s) in the sample",
        }
        if self.container is None or not self.with_container:
            return schema
        inner: dict[str, Any] = {"type": "object"}
        if self.values.keys:
            inner.update(self.values.object_schema())
        schema["properties"] = {self.container: inner}
        if self.with_container == self.count:
            schema["required"] = [self.container]
        return schema


class PlanDraft:
    """Collects events, then writes a plan in our shape (:meth:`plan`)."""

    def __init__(self) -> None:
        self.events = 0
        self.skipped = 0
        self._drafts: dict[tuple[str, str | None], _EventDraft] = {}

    def add(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "track":
            name: str | None = event.get("event") if isinstance(event.get("event"), str) else None
            if name is None:
                self.skipped += 1
                return
        elif kind in ("page", "screen"):
            raw = event.get("name")
            name = raw if isinstance(raw, str) and raw else None
            if name is None:
                name = PAGE_VIEWED if kind == "page" else SCREEN_VIEWED
        elif kind in ("identify", "group", "alias"):
            name = None
        else:
            self.skipped += 1
            return
        key = (kind, name)
        draft = self._drafts.get(key)
        if draft is None:
            if len(self._drafts) >= MAX_EVENT_NAMES:
                self.skipped += 1
                return
            container = {"identify": "traits", "group": "traits", "alias": None}.get(
                kind, "properties"
            )
            draft = self._drafts[key] = _EventDraft(container)
        draft.add(event)
        self.events += 1

    def add_all(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in events:
            self.add(event)

    def plan(self, plan_id: str, name: str = "") -> dict[str, Any]:
        rules: dict[str, Any] = {}
        for (kind, event_name), draft in sorted(
            self._drafts.items(), key=lambda item: (item[0][0], item[0][1] or "")
        ):
            if event_name is None:
                rules[kind] = draft.schema()
            else:
                rules.setdefault(kind, {})[event_name] = draft.schema()
        plan: dict[str, Any] = {"id": plan_id}
        if name:
            plan["name"] = name
        plan["rules"] = rules
        return plan
