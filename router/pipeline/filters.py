"""Destination filters, in Segment's fixed order whatever the order in the config.

1. ``sample``: keep ``fraction`` of the (matching) events.
2. ``drop`` / ``only``: drop events the condition matches / does not match.
3. ``drop_properties``: remove fields (lists fan out: ``properties.products.price``).
4. ``allow_properties``: keep only the listed children of each named parent.

Within one kind, filters apply in config order. A condition that cannot be evaluated drops
the event (``dropped_by="filter_error"``), as Segment does, so a broken filter never leaks
what it was meant to hold back.

The input event is shared by every destination, so it is never mutated: when nothing changes
the same object comes back (the caller then reuses its serialized bytes), otherwise a
copy-on-write copy sharing every untouched sub-object.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple, TypeAlias

import orjson

from router.config import (
    AllowPropertiesFilter,
    DropFilter,
    DropPropertiesFilter,
    Filter,
    OnlyFilter,
    SampleFilter,
)
from router.pipeline.conditions import (
    Condition,
    ConditionEvaluationError,
    compile_condition,
    field_test,
)
from router.pipeline.paths import (
    MISSING,
    Edit,
    compile_keep_only,
    compile_paths,
    compile_without,
    get_path,
    split_path,
)
from router.spec import Event, edit_may_invalidate

DropReason: TypeAlias = Literal["sample", "drop", "only", "filter_error"]

_HASH_SPACE = float(2**64)


class FilterResult(NamedTuple):
    """What the filters made of one event: the event to send, or None and why it was dropped."""

    event: Event | None
    dropped_by: DropReason | None


def sample_point(value: Any) -> float:
    """A stable point in [0, 1) for ``value``: the same value always lands on the same point.

    Strings hash their UTF-8 bytes, other values their JSON form; the first 8 bytes of a
    BLAKE2b digest, read as an integer, are scaled into [0, 1). Stable across processes and
    versions (unlike ``hash()``), so every processor replica makes the same choice.
    """
    if type(value) is str:
        data = value.encode()
    else:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


class _Sampler:
    """One sample filter: keep when the event's point falls below ``fraction``."""

    __slots__ = ("condition", "fraction", "path", "random")

    def __init__(self, rule: SampleFilter, rng: Callable[[], float]) -> None:
        self.fraction = rule.fraction
        self.path = split_path(rule.path) if rule.path else None
        self.condition = compile_condition(rule.condition) if rule.condition else None
        self.random = rng

    def keep(self, event: Event) -> bool:
        if self.condition is not None and not self.condition(event):
            return True  # the sample applies only to matching events
        if self.fraction >= 1.0:
            return True
        if self.fraction <= 0.0:
            return False
        if self.path is not None:
            value = get_path(event, self.path)
            # Without a value to hash (anonymous events sampled by userId) fall back to a
            # random choice, so those events are sampled at the same rate, not all-or-none.
            if value is not MISSING and value is not None:
                return sample_point(value) < self.fraction
        return self.random() < self.fraction


class DestinationFilter:
    """A destination's compiled filters; call it with an event to get a :class:`FilterResult`.

    The processor calls :meth:`apply` instead, which returns the event or the drop reason
    without building a result tuple per event and destination.
    """

    __slots__ = ("_edits", "_gates", "_samplers", "apply", "empty", "may_invalidate")

    def __init__(
        self,
        filters: Sequence[Filter],
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._samplers: list[_Sampler] = []
        # (condition, drop_when): "drop" drops when it matches, "only" when it does not.
        self._gates: list[tuple[Condition, bool, DropReason]] = []
        # (allow, compiled copy-on-write edit, condition): drop_properties / allow_properties.
        edits: list[tuple[bool, Edit, Condition | None]] = []
        # Only drop_properties can make an event invalid (``event``, ``properties``):
        # allow_properties never removes a top-level field, and the ids are refused at load.
        self.may_invalidate = any(
            edit_may_invalidate(split_path(path))
            for rule in filters
            if isinstance(rule, DropPropertiesFilter)
            for path in rule.fields
        )
        for rule in filters:
            if isinstance(rule, SampleFilter):
                self._samplers.append(_Sampler(rule, rng))
            elif isinstance(rule, DropFilter):
                self._gates.append((compile_condition(rule.condition), True, "drop"))
            elif isinstance(rule, OnlyFilter):
                self._gates.append((compile_condition(rule.condition), False, "only"))
            elif isinstance(rule, DropPropertiesFilter | AllowPropertiesFilter):
                allow = isinstance(rule, AllowPropertiesFilter)
                paths = compile_paths(rule.fields)
                edits.append(
                    (
                        allow,
                        compile_keep_only(paths) if allow else compile_without(paths),
                        compile_condition(rule.condition) if rule.condition else None,
                    )
                )
        # Segment's order: every drop_properties before any allow_properties (stable sort).
        edits.sort(key=lambda edit: edit[0])
        self._edits = [(edit, condition) for _, edit, condition in edits]
        self.empty = not (self._samplers or self._gates or self._edits)
        self.apply: Callable[[Event], Event | DropReason] = self._compile()
        """The event to send (the input itself when no edit changed it), or why it was
        dropped; what the processor calls, without a result tuple per event and destination."""

    def __call__(self, event: Event) -> FilterResult:
        result = self.apply(event)
        if isinstance(result, str):
            return FilterResult(None, result)
        return FilterResult(result, None)

    def _compile(self) -> Callable[[Event], Event | DropReason]:
        samplers, gates, edits = tuple(self._samplers), tuple(self._gates), tuple(self._edits)
        # Fast paths for a destination with a single filter, the common configuration: one
        # closure call instead of a walk over three lists inside a try block.
        if not (samplers or gates or edits):
            return _unchanged
        if not (samplers or gates) and len(edits) == 1 and edits[0][1] is None:
            return edits[0][0]  # an edit without a condition evaluates nothing, cannot fail
        if not (samplers or edits) and len(gates) == 1:
            condition, drop_when, reason = gates[0]
            test = field_test(condition)
            if test is not None:
                return _field_gate(*test, drop_when=drop_when, reason=reason)
            # Conditions return bools, so testing truth is the generic ``== drop_when``.
            if drop_when:

                def drop_gate(event: Event) -> Event | DropReason:
                    try:
                        if condition(event):
                            return reason
                    except ConditionEvaluationError:
                        return "filter_error"
                    return event

                return drop_gate

            def only_gate(event: Event) -> Event | DropReason:
                try:
                    if not condition(event):
                        return reason
                except ConditionEvaluationError:
                    return "filter_error"
                return event

            return only_gate

        def apply(event: Event) -> Event | DropReason:
            try:
                for sampler in samplers:
                    if not sampler.keep(event):
                        return "sample"
                for condition, drop_when, reason in gates:
                    if condition(event) == drop_when:
                        return reason
                # Conditions see the event as the earlier edits left it.
                for edit, edit_condition in edits:
                    if edit_condition is None or edit_condition(event):
                        event = edit(event)
            except ConditionEvaluationError:
                return "filter_error"
            return event

        return apply


def _unchanged(event: Event) -> Event:
    return event


def _field_gate(
    key: str, text: str, negated: bool, *, drop_when: bool, reason: DropReason
) -> Callable[[Event], Event | DropReason]:
    """A drop/only gate on ``key = "text"`` or ``key != "text"``, with the test inline.

    Such a condition cannot fail, so there is no error to catch either. The gate drops when
    the condition's truth is ``drop_when``; the condition holds when the field equals the text
    (or, negated, when it does not).
    """
    if drop_when != negated:

        def drop_if_equal(event: Event) -> Event | DropReason:
            if event.get(key) == text:
                return reason
            return event

        return drop_if_equal

    def drop_unless_equal(event: Event) -> Event | DropReason:
        if event.get(key) == text:
            return event
        return reason

    return drop_unless_equal


def compile_filters(
    filters: Sequence[Filter], *, rng: Callable[[], float] = random.random
) -> DestinationFilter:
    """Compile a destination's filters once.

    Args:
        filters: the destination's ``filters`` from the workspace, in any order.
        rng: source of randomness for sampling without a path (tests pass a seeded one).

    Raises:
        ConditionSyntaxError: a filter's ``if`` is not valid FQL.
    """
    return DestinationFilter(filters, rng=rng)
