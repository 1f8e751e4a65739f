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
from collections.abc import Callable, Sequence
from typing import Any

from router.config import DropEvent, RenameEvent, RenameProperties, SetValues, Transformation
from router.pipeline.conditions import (
    Condition,
    ConditionEvaluationError,
    compile_condition,
    field_test,
)
from router.pipeline.paths import (
    Edit,
    PathSpec,
    compile_rename,
    compile_set_value,
    compile_setter,
    split_path,
)
from router.spec import Event, edit_may_invalidate

logger = logging.getLogger(__name__)


_NAME_FIELD = {"track": "event", "page": "name", "screen": "name"}


class _Step:
    """One compiled transformation: ``run`` is a copy-on-write edit (None for drop_event)."""

    __slots__ = ("condition", "kind", "run")

    def __init__(self, item: Transformation) -> None:
        self.kind = item.type
        self.condition: Condition | None = (
            compile_condition(item.condition) if item.condition is not None else None
        )
        self.run: Edit | None = None
        if isinstance(item, RenameEvent):
            self.run = _rename_event(item.to)
        elif isinstance(item, RenameProperties):
            self.run = compile_rename(
                tuple((split_path(a), split_path(b)) for a, b in item.fields.items())
            )
        elif isinstance(item, SetValues):
            self.run = _set_values(tuple((split_path(path), v) for path, v in item.values.items()))
        elif not isinstance(item, DropEvent):  # pragma: no cover - config guards
            raise TypeError(f"unknown transformation {item!r}")


def _rename_event(to: str) -> Edit:
    setters = {kind: compile_setter((field,)) for kind, field in _NAME_FIELD.items()}

    def rename_event(event: Event) -> Event:
        kind = event.get("type")
        setter = setters.get(kind) if isinstance(kind, str) else None
        return event if setter is None else setter(event, to)

    return rename_event


def _set_values(values: tuple[tuple[PathSpec, Any], ...]) -> Edit:
    # (setter, value, whether it needs a fresh copy per event): config objects must never end
    # up shared by events that a later stage might mutate.
    steps = [(compile_setter(path), v, isinstance(v, dict | list)) for path, v in values]
    if len(steps) == 1 and not steps[0][2]:
        return compile_set_value(values[0][0], values[0][1])  # one scalar: value bound in

    def set_values(event: Event) -> Event:
        for setter, value, container in steps:
            event = setter(event, copy.deepcopy(value) if container else value)
        return event

    return set_values


class Transformer:
    """A source's or destination's compiled transformations.

    Attributes:
        errors: how many times a condition could not be evaluated (the transformation was
            skipped); for metrics.
    """

    __slots__ = ("_steps", "apply", "empty", "errors", "may_invalidate")

    def __init__(self, items: Sequence[Transformation]) -> None:
        self._steps = [(step.condition, step.kind, step.run) for step in map(_Step, items)]
        self.empty = not self._steps
        self.may_invalidate = any(map(_may_invalidate, items))
        """Some transformation can make a valid event invalid (``set_values: {event: ""}``):
        what this returns must be validated again."""
        self.errors = 0
        self.apply: Callable[[Event], Event | None] = self._compile()
        """Same as calling the transformer; the processor calls this attribute directly."""

    def __call__(self, event: Event) -> Event | None:
        return self.apply(event)

    def _skipped(self, kind: str, exc: ConditionEvaluationError) -> None:
        self.errors += 1
        logger.debug("transformation %s skipped: %s", kind, exc)

    def _compile(self) -> Callable[[Event], Event | None]:
        steps = tuple(self._steps)
        if not steps:
            return _unchanged
        if len(steps) == 1:
            # Fast path for a single transformation, the common configuration: one closure
            # call, no loop.
            condition, kind, run = steps[0]
            if condition is None:
                return _drop if run is None else run
            test = field_test(condition)
            if test is not None:
                return _on_field_test(*test, run)
            skipped = self._skipped

            def one(event: Event) -> Event | None:
                try:
                    if not condition(event):
                        return event
                except ConditionEvaluationError as exc:
                    skipped(kind, exc)
                    return event
                return None if run is None else run(event)

            return one

        def apply(event: Event) -> Event | None:
            for condition, kind, run in steps:
                if condition is not None:
                    try:
                        if not condition(event):
                            continue
                    except ConditionEvaluationError as exc:
                        self._skipped(kind, exc)
                        continue
                if run is None:  # drop_event
                    return None
                # Each step sees the event as the earlier ones left it.
                event = run(event)
            return event

        return apply


def _unchanged(event: Event) -> Event:
    return event


def _may_invalidate(item: Transformation) -> bool:
    if isinstance(item, RenameProperties):
        return any(
            edit_may_invalidate(split_path(path)) for pair in item.fields.items() for path in pair
        )
    if isinstance(item, SetValues):
        return any(
            edit_may_invalidate(split_path(path), value) for path, value in item.values.items()
        )
    return False  # rename_event writes 1-255 characters; drop_event drops


def _on_field_test(
    key: str, text: str, negated: bool, run: Edit | None
) -> Callable[[Event], Event | None]:
    """One transformation whose ``if`` is ``key = "text"`` or ``key != "text"``, tested inline:
    such a condition cannot fail, so nothing is skipped or counted as an error."""
    if negated:

        def unless_equal(event: Event) -> Event | None:
            if event.get(key) == text:
                return event
            return None if run is None else run(event)

        return unless_equal

    def if_equal(event: Event) -> Event | None:
        if event.get(key) == text:
            return None if run is None else run(event)
        return event

    return if_equal


def _drop(event: Event) -> None:
    return None


def compile_transformations(items: Sequence[Transformation]) -> Transformer:
    """Compile transformations once.

    Raises:
        ConditionSyntaxError: a transformation's ``if`` is not valid FQL.
    """
    return Transformer(items)
