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
from router.pipeline.conditions import Condition, ConditionEvaluationError, compile_condition
from router.pipeline.paths import MISSING, Editor, PathSet, compile_paths, get_path, split_path

Event: TypeAlias = dict[str, Any]
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


class _Edit(NamedTuple):
    """One drop_properties / allow_properties filter."""

    allow: bool
    paths: PathSet
    condition: Condition | None


class DestinationFilter:
    """A destination's compiled filters; call it with an event to get a :class:`FilterResult`."""

    __slots__ = ("_edits", "_gates", "_samplers", "empty")

    def __init__(
        self,
        filters: Sequence[Filter],
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._samplers: list[_Sampler] = []
        # (condition, drop_when): "drop" drops when it matches, "only" when it does not.
        self._gates: list[tuple[Condition, bool, DropReason]] = []
        self._edits: list[_Edit] = []
        for rule in filters:
            if isinstance(rule, SampleFilter):
                self._samplers.append(_Sampler(rule, rng))
            elif isinstance(rule, DropFilter):
                self._gates.append((compile_condition(rule.condition), True, "drop"))
            elif isinstance(rule, OnlyFilter):
                self._gates.append((compile_condition(rule.condition), False, "only"))
            elif isinstance(rule, DropPropertiesFilter | AllowPropertiesFilter):
                self._edits.append(
                    _Edit(
                        allow=isinstance(rule, AllowPropertiesFilter),
                        paths=compile_paths(rule.fields),
                        condition=compile_condition(rule.condition) if rule.condition else None,
                    )
                )
        # Segment's order: every drop_properties before any allow_properties.
        self._edits.sort(key=lambda edit: edit.allow)
        self.empty = not (self._samplers or self._gates or self._edits)

    def __call__(self, event: Event) -> FilterResult:
        if self.empty:
            return FilterResult(event, None)
        try:
            for sampler in self._samplers:
                if not sampler.keep(event):
                    return FilterResult(None, "sample")
            for condition, drop_when, reason in self._gates:
                if condition(event) == drop_when:
                    return FilterResult(None, reason)
            if self._edits:
                event = self._edit(event)
        except ConditionEvaluationError:
            return FilterResult(None, "filter_error")
        return FilterResult(event, None)

    def _edit(self, event: Event) -> Event:
        editor = Editor(event)
        for edit in self._edits:
            # Conditions see the event as the earlier edits left it.
            if edit.condition is not None and not edit.condition(editor.root):
                continue
            if edit.allow:
                editor.keep_only(edit.paths)
            else:
                editor.delete(edit.paths)
        return editor.root


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
