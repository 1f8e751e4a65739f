"""Transformations (Segment Protocols' model), applied in config order.

- ``rename_event``: a track event's ``event``, or a page/screen's ``name``; other types are
  left alone.
- ``rename_properties``: move values between dot paths from the event root
  (``properties.total -> properties.revenue``, ``traits.mail -> traits.email``); a missing
  source is a no-op.
- ``set_values``: set each dot path to a static value.
- ``drop_event``: drop the event (the transformer returns None).

Each applies only when its optional ``if`` matches. A condition that cannot be evaluated skips
that one transformation (the event goes on unchanged by it) and is counted in
:attr:`Transformer.errors`; unlike a filter, a transformation that cannot decide never drops.

Same contract as the filters: the input is never mutated; the same object comes back when
nothing changed, otherwise a copy-on-write copy.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any, TypeAlias

from router.config import DropEvent, RenameEvent, RenameProperties, SetValues, Transformation
from router.pipeline.conditions import Condition, ConditionEvaluationError, compile_condition
from router.pipeline.paths import Editor, PathSpec, split_path

logger = logging.getLogger(__name__)

Event: TypeAlias = dict[str, Any]

_NAME_FIELD = {"track": "event", "page": "name", "screen": "name"}


class _Step:
    """One compiled transformation."""

    __slots__ = ("condition", "kind", "renames", "to", "values")

    def __init__(self, item: Transformation) -> None:
        self.kind = item.type
        self.condition: Condition | None = (
            compile_condition(item.condition) if item.condition is not None else None
        )
        self.to = item.to if isinstance(item, RenameEvent) else ""
        self.renames: tuple[tuple[PathSpec, PathSpec], ...] = ()
        self.values: tuple[tuple[PathSpec, Any], ...] = ()
        if isinstance(item, RenameProperties):
            self.renames = tuple((split_path(a), split_path(b)) for a, b in item.fields.items())
        elif isinstance(item, SetValues):
            self.values = tuple((split_path(path), v) for path, v in item.values.items())
        elif not isinstance(item, RenameEvent | DropEvent):  # pragma: no cover - config guards
            raise TypeError(f"unknown transformation {item!r}")


class Transformer:
    """A source's or destination's compiled transformations.

    Attributes:
        errors: how many times a condition could not be evaluated (the transformation was
            skipped); for metrics.
    """

    __slots__ = ("_steps", "empty", "errors")

    def __init__(self, items: Sequence[Transformation]) -> None:
        self._steps = [_Step(item) for item in items]
        self.empty = not self._steps
        self.errors = 0

    def __call__(self, event: Event) -> Event | None:
        if self.empty:
            return event
        editor = Editor(event)
        for step in self._steps:
            if step.condition is not None:
                try:
                    if not step.condition(editor.root):
                        continue
                except ConditionEvaluationError as exc:
                    self.errors += 1
                    logger.debug("transformation %s skipped: %s", step.kind, exc)
                    continue
            if step.kind == "drop_event":
                return None
            if step.kind == "rename_event":
                kind = editor.root.get("type")
                field = _NAME_FIELD.get(kind) if isinstance(kind, str) else None
                if field is not None:
                    editor.set((field,), step.to)
            elif step.kind == "rename_properties":
                editor.rename(step.renames)
            else:  # set_values
                for path, value in step.values:
                    # A fresh copy per event: config objects must never end up shared by
                    # events that a later stage might mutate.
                    fresh = copy.deepcopy(value) if isinstance(value, dict | list) else value
                    editor.set(path, fresh)
        return editor.root


def compile_transformations(items: Sequence[Transformation]) -> Transformer:
    """Compile transformations once.

    Raises:
        ConditionSyntaxError: a transformation's ``if`` is not valid FQL.
    """
    return Transformer(items)
