"""Stage 5: tracking plans (Segment Protocols): JSON Schema rules per event, enforced per source.

A plan holds a draft-07 schema per track event name, one for identify traits, one for group
traits and a common one for every event; each validates the whole payload. The source decides
what happens to unplanned events, unplanned properties and schema violations. Whatever is
omitted is recorded in ``context.protocols``; blocked events are not thrown away but written to
``events.violations`` by the processor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import fastjsonschema
from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError, ValidationError

from router.config import PlanEnforcement, TrackingPlan


@dataclass(frozen=True, slots=True)
class PlanOutcome:
    """``event`` is None when the event is blocked; ``violations`` describe what was wrong."""

    event: dict[str, Any] | None
    violations: list[dict[str, str]]
    blocked_reason: str | None = None


class _Checker:
    """One schema: fastjsonschema answers "valid?" quickly; jsonschema explains the failures.

    Most events are valid, and jsonschema's ``iter_errors`` costs ~25 µs an event even then;
    the compiled check costs about a tenth of that. Only events the fast check rejects (or
    schemas it cannot compile) pay for jsonschema, which lists every violation.
    """

    __slots__ = ("full", "quick")

    def __init__(self, schema: dict[str, Any]) -> None:
        self.full = Draft7Validator(schema)
        self.quick: Callable[[Any], Any] | None
        try:
            # No defaults written into the event, no format checks: jsonschema's behaviour.
            self.quick = fastjsonschema.compile(
                schema, use_default=False, use_formats=False, detailed_exceptions=False
            )
        except fastjsonschema.JsonSchemaDefinitionException:
            self.quick = None

    def errors(self, event: dict[str, Any]) -> Iterable[ValidationError]:
        if self.quick is not None:
            try:
                self.quick(event)
            except fastjsonschema.JsonSchemaValueException:
                pass
            else:
                return ()
        errors: Iterable[ValidationError] = self.full.iter_errors(event)
        return errors


def _validator(schema: dict[str, Any] | None) -> _Checker | None:
    return _Checker(schema) if schema else None


def _planned_keys(schema: dict[str, Any] | None, container: str) -> frozenset[str] | None:
    """Keys declared under ``properties.<container>.properties``; None if undeclared."""
    if not schema:
        return None
    node = schema.get("properties", {}).get(container, {})
    declared = node.get("properties") if isinstance(node, dict) else None
    return frozenset(declared) if isinstance(declared, dict) else None


def _violation_type(validator: str) -> str:
    return {
        "required": "Required",
        "type": "Invalid Type",
        "enum": "Invalid Enum",
        "additionalProperties": "Unplanned Property",
    }.get(validator, "Invalid Value")


class PlanStage:
    """One source's compiled plan enforcement; call it with an event (which it owns)."""

    def __init__(self, plan: TrackingPlan, enforcement: PlanEnforcement, source_id: str) -> None:
        self.plan_id = plan.id
        self.source_id = source_id
        self.enforcement = enforcement
        rules = plan.rules
        self._common = _validator(rules.common)
        self._track = {name: _Checker(schema) for name, schema in rules.track.items()}
        self._track_keys = {
            name: _planned_keys(schema, "properties") for name, schema in rules.track.items()
        }
        self._identify = _validator(rules.identify)
        self._identify_keys = _planned_keys(rules.identify, "traits")
        self._group = _validator(rules.group)
        self._group_keys = _planned_keys(rules.group, "traits")

    def __call__(self, event: dict[str, Any]) -> PlanOutcome:
        kind = event["type"]
        validator: _Checker | None = None
        planned: frozenset[str] | None = None
        container = "properties"
        if kind == "track":
            name = event["event"]
            validator = self._track.get(name)
            if validator is None:
                violation = {
                    "type": "Unplanned Event",
                    "field": "event",
                    "description": f"{name!r} is not in tracking plan {self.plan_id}",
                }
                if self.enforcement.unplanned_events == "block":
                    return PlanOutcome(None, [violation], "unplanned_event")
                return self._finish(event, [violation], [])
            planned = self._track_keys.get(name)
        elif kind == "identify":
            validator, planned, container = self._identify, self._identify_keys, "traits"
        elif kind == "group":
            validator, planned, container = self._group, self._group_keys, "traits"

        omitted: list[str] = []
        if planned is not None and self.enforcement.unplanned_properties == "omit":
            values = event.get(container)
            if isinstance(values, dict):
                extra = [key for key in values if key not in planned]
                for key in extra:
                    del values[key]
                    omitted.append(f"{container}.{key}")

        violations: list[dict[str, str]] = []
        offending: list[list[str | int]] = []
        for checker in (self._common, validator):
            if checker is None:
                continue
            for error in checker.errors(event):
                path = [str(p) if not isinstance(p, int) else p for p in error.absolute_path]
                if error.validator == "required" and isinstance(error.validator_value, list):
                    missing = error.message.split("'")[1] if "'" in error.message else ""
                    path = [*path, missing]
                violations.append(
                    {
                        "type": _violation_type(str(error.validator)),
                        "field": ".".join(str(p) for p in path),
                        "description": error.message,
                    }
                )
                offending.append(path)
        if violations and self.enforcement.violations == "block":
            return PlanOutcome(None, violations, "schema_violation")
        if violations and self.enforcement.violations == "omit":
            omitted.extend(
                ".".join(str(p) for p in path) for path in offending if _delete(event, path)
            )
        return self._finish(event, violations, omitted)

    def _finish(
        self, event: dict[str, Any], violations: list[dict[str, str]], omitted: list[str]
    ) -> PlanOutcome:
        if violations or omitted:
            context = event.get("context")
            if not isinstance(context, dict):
                context = {}
                event["context"] = context
            context["protocols"] = {
                "sourceId": self.source_id,
                "trackingPlanId": self.plan_id,
                "omitted": omitted,
                "violations": violations,
            }
        return PlanOutcome(event, violations)

    def violation_events(
        self, event: dict[str, Any], violations: list[dict[str, str]]
    ) -> list[dict[str, Any]]:
        """Segment's "Violation Generated" track events, one per violation."""
        return [
            {
                "type": "track",
                "event": "Violation Generated",
                "userId": "schema-violations",
                "messageId": f"{event.get('messageId')}-violation-{i}",
                "properties": {
                    "eventName": event.get("event") or event.get("name") or event["type"],
                    "eventType": event["type"],
                    "eventMessageID": event.get("messageId"),
                    "sourceID": self.source_id,
                    "trackingPlanID": self.plan_id,
                    "violationDescription": v["description"],
                    "violationField": v["field"],
                    "violationType": v["type"],
                },
            }
            for i, v in enumerate(violations)
        ]


def _delete(event: dict[str, Any], path: list[str | int]) -> bool:
    """Remove the offending field; only inside properties/traits/context, never top-level ids."""
    if len(path) < 2 or path[0] not in ("properties", "traits", "context"):
        return False
    node: Any = event
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    if isinstance(node, dict) and path[-1] in node:
        del node[path[-1]]
        return True
    return False


def compile_plan(plan: TrackingPlan, enforcement: PlanEnforcement, source_id: str) -> PlanStage:
    return PlanStage(plan, enforcement, source_id)


def plan_problems(plan: TrackingPlan) -> list[tuple[str, str]]:
    """Schemas that are not valid draft-07, as (sub-path, message)."""
    problems: list[tuple[str, str]] = []
    rules = plan.rules
    candidates: list[tuple[str, dict[str, Any] | None]] = [
        (".common", rules.common),
        (".identify", rules.identify),
        (".group", rules.group),
    ]
    candidates += [(f".track.{name}", schema) for name, schema in rules.track.items()]
    for sub, schema in candidates:
        if schema is None:
            continue
        try:
            Draft7Validator.check_schema(schema)
        except SchemaError as exc:
            problems.append((sub, f"not a valid JSON Schema (draft-07): {exc.message}"))
    return problems
