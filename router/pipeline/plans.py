"""Stage 5: tracking plans (Segment Protocols): JSON Schema rules per event, enforced per source.

A plan holds draft-07 schemas, each over the whole payload: one per track event name, one per
page or screen name (``Page Viewed`` / ``Screen Viewed`` cover every page / screen call without
a rule of its own name, as Segment's plans list those calls), one each for identify, group and
alias, and a common one for every event. An event with no rule is unplanned. The source
decides what happens to unplanned events, unplanned properties and schema violations. Whatever
is omitted is recorded in ``context.protocols``; blocked events are not thrown away but
written to ``events.violations`` by the processor. With ``forward_violations`` each violation
also becomes a Segment "Violation Generated" track event (:meth:`PlanStage.violation_records`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import fastjsonschema
import orjson
from jsonschema import Draft7Validator
from jsonschema.exceptions import SchemaError, ValidationError

from router import __version__
from router.broker.clients import OutRecord
from router.config import PAGE_VIEWED, SCREEN_VIEWED, PlanEnforcement, PlanRules, TrackingPlan

VIOLATION_EVENT: Final = "Violation Generated"
VIOLATION_USER: Final = "schema-violations"
#: Descriptions quote offending values; a violation event stays small whatever was sent.
MAX_DESCRIPTION_CHARS: Final = 500
# messageIds of violation events: derived, so a replayed batch regenerates the same ids and
# dedup drops the copies.
_VIOLATION_NAMESPACE: Final = uuid.UUID("3c1f0d52-5d0e-4c55-a7f0-8f7bd1d0b7a4")
_JSON_TYPES: Final = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
    type(None): "null",
}


@dataclass(frozen=True, slots=True)
class PlanOutcome:
    """``event`` is None when the event is blocked; ``violations`` describe what was wrong."""

    event: dict[str, Any] | None
    violations: list[dict[str, str]]
    blocked_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ViolationTarget:
    """Where forwarded violations are written.

    ``headers`` carry the receiving source's write key when the target is ``events.raw``;
    ``by_user`` keys each violation like the event it describes (so violations spread over
    partitions as the traffic does, and a replay lands in the same dedup store).
    """

    topic: str
    headers: tuple[tuple[str, bytes], ...] = ()
    by_user: bool = False


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


@dataclass(frozen=True, slots=True)
class _Rule:
    """One planned event: its checker (None for ``{}``: planned, anything goes) and the keys
    its schema declares in ``container`` (None when it declares none: nothing is omitted)."""

    checker: _Checker | None
    planned: frozenset[str] | None
    container: str


def _planned_keys(schema: dict[str, Any], container: str) -> frozenset[str] | None:
    """Keys declared under ``properties.<container>.properties``; None if undeclared."""
    properties = schema.get("properties")
    node = properties.get(container) if isinstance(properties, dict) else None
    declared = node.get("properties") if isinstance(node, dict) else None
    return frozenset(declared) if isinstance(declared, dict) else None


def _rule(schema: dict[str, Any] | None, container: str) -> _Rule | None:
    if schema is None:
        return None
    return _Rule(_Checker(schema) if schema else None, _planned_keys(schema, container), container)


def _violation_type(validator: str) -> str:
    return {
        "required": "Required",
        "type": "Invalid Type",
        "enum": "Invalid Enum",
        "additionalProperties": "Unplanned Property",
    }.get(validator, "Invalid Value")


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "object")


def _describe(error: ValidationError, field: str) -> str:
    """Segment's wording where it has one ("properties.total is required")."""
    where = field or "(root)"
    if error.validator == "required":
        text = f"{where} is required"
    elif error.validator == "type":
        expected = error.validator_value
        if isinstance(expected, list):
            expected = " or ".join(str(t) for t in expected)
        text = f"{where}: Invalid type. Expected: {expected}, given: {_json_type(error.instance)}"
    else:
        text = f"{where}: {error.message}"
    if len(text) > MAX_DESCRIPTION_CHARS:
        text = text[: MAX_DESCRIPTION_CHARS - 1] + "…"
    return text


def event_name(event: dict[str, Any]) -> str:
    """What a violation calls the event: track ``event``, page / screen ``name`` (Segment's
    Page Viewed / Screen Viewed when unnamed), else the call type."""
    kind = event.get("type")
    if kind == "track":
        return str(event.get("event"))
    if kind in ("page", "screen"):
        name = event.get("name")
        if isinstance(name, str) and name:
            return name
        return PAGE_VIEWED if kind == "page" else SCREEN_VIEWED
    return str(kind)


def is_violation_event(event: dict[str, Any]) -> bool:
    """A "Violation Generated" event; its own violations are never forwarded (no loops)."""
    return event.get("event") == VIOLATION_EVENT and event.get("userId") == VIOLATION_USER


class PlanStage:
    """One source's compiled plan enforcement; call it with an event (which it owns)."""

    def __init__(
        self,
        plan: TrackingPlan,
        enforcement: PlanEnforcement,
        source_id: str,
        *,
        source_name: str = "",
        forward_to: tuple[ViolationTarget, ...] = (),
    ) -> None:
        self.plan_id = plan.id
        self.plan_name = plan.name or plan.id
        self.source_id = source_id
        self.source_name = source_name or source_id
        self.enforcement = enforcement
        self.forward_to = forward_to
        rules: PlanRules = plan.rules
        self._common = _Checker(rules.common) if rules.common else None
        self._named: dict[str, dict[str, _Rule]] = {}
        for kind, table in (("track", rules.track), ("page", rules.page), ("screen", rules.screen)):
            self._named[kind] = {
                name: _Rule(
                    _Checker(schema) if schema else None,
                    _planned_keys(schema, "properties"),
                    "properties",
                )
                for name, schema in table.items()
            }
        self._fallback: dict[str, _Rule | None] = {
            "page": self._named["page"].get(PAGE_VIEWED),
            "screen": self._named["screen"].get(SCREEN_VIEWED),
        }
        self._single: dict[str, _Rule | None] = {
            "identify": _rule(rules.identify, "traits"),
            "group": _rule(rules.group, "traits"),
            "alias": _rule(rules.alias, ""),
        }

    def rule_for(self, event: dict[str, Any]) -> _Rule | None:
        """The rule that plans this event, or None when it is unplanned."""
        kind = event["type"]
        named = self._named.get(kind)
        if named is None:
            return self._single.get(kind)
        if kind == "track":
            return named.get(event["event"])
        name = event.get("name")
        rule = named.get(name) if isinstance(name, str) else None
        return rule if rule is not None else self._fallback[kind]

    def __call__(self, event: dict[str, Any]) -> PlanOutcome:
        rule = self.rule_for(event)
        violations: list[dict[str, str]] = []
        if rule is None:
            unplanned = self._unplanned(event)
            if self.enforcement.unplanned_events == "block":
                return PlanOutcome(None, [unplanned], "unplanned_event")
            violations.append(unplanned)

        omitted: list[str] = []
        if (
            rule is not None
            and rule.planned is not None
            and self.enforcement.unplanned_properties == "omit"
        ):
            values = event.get(rule.container)
            if isinstance(values, dict):
                extra = [key for key in values if key not in rule.planned]
                for key in extra:
                    del values[key]
                    omitted.append(f"{rule.container}.{key}")

        found: list[dict[str, str]] = []
        offending: list[list[str | int]] = []
        for checker in (self._common, rule.checker if rule is not None else None):
            if checker is None:
                continue
            for error in checker.errors(event):
                path = [str(p) if not isinstance(p, int) else p for p in error.absolute_path]
                if error.validator == "required" and isinstance(error.validator_value, list):
                    missing = error.message.split("'")[1] if "'" in error.message else ""
                    path = [*path, missing]
                field = ".".join(str(p) for p in path)
                found.append(
                    {
                        "type": _violation_type(str(error.validator)),
                        "field": field,
                        "description": _describe(error, field),
                    }
                )
                offending.append(path)
        violations.extend(found)
        if found and self.enforcement.violations == "block":
            return PlanOutcome(None, violations, "schema_violation")
        if found and self.enforcement.violations == "omit":
            omitted.extend(
                ".".join(str(p) for p in path) for path in offending if _delete(event, path)
            )
        return self._finish(event, violations, omitted)

    def _unplanned(self, event: dict[str, Any]) -> dict[str, str]:
        kind = event["type"]
        if kind == "track":
            field, what = "event", f"track event {event['event']!r}"
        elif kind in ("page", "screen"):
            name = event.get("name")
            field = "name"
            what = f"{kind} {name!r}" if isinstance(name, str) and name else f"unnamed {kind}"
        else:
            field, what = "type", f"{kind} calls"
        return {
            "type": "Unplanned Event",
            "field": field,
            "description": f"{what} not in tracking plan {self.plan_id}",
        }

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
        """Segment's "Violation Generated" track events, one per violation (none for a
        violation event's own violations: forwarding them could loop)."""
        if is_violation_event(event):
            return []
        message_id = event.get("messageId")
        name = event_name(event)
        generated: list[dict[str, Any]] = []
        for i, v in enumerate(violations):
            seed = f"{self.source_id}/{message_id}/{i}"
            properties: dict[str, Any] = {
                "eventName": name,
                "eventType": event["type"],
                "eventMessageID": message_id,
                "sourceID": self.source_id,
                "sourceName": self.source_name,
                "trackingPlanID": self.plan_id,
                "trackingPlanName": self.plan_name,
                "violationDescription": v["description"],
                "violationField": v["field"],
                "violationType": v["type"],
            }
            for field, key in (("timestamp", "eventTimestamp"), ("sentAt", "eventSentAt")):
                if isinstance(event.get(field), str):
                    properties[key] = event[field]
            generated.append(
                {
                    "type": "track",
                    "event": VIOLATION_EVENT,
                    "userId": VIOLATION_USER,
                    "messageId": f"sch-{uuid.uuid5(_VIOLATION_NAMESPACE, seed).hex}",
                    "context": {"library": {"name": "event-router", "version": __version__}},
                    "integrations": {},
                    "properties": properties,
                }
            )
        return generated

    def violation_records(
        self, event: dict[str, Any], violations: list[dict[str, str]]
    ) -> list[OutRecord]:
        """The violation events as records for each of :attr:`forward_to` (none if empty)."""
        if not self.forward_to or not violations:
            return []
        generated = [orjson.dumps(v) for v in self.violation_events(event, violations)]
        if not generated:
            return []
        user = str(event.get("userId") or event.get("anonymousId") or VIOLATION_USER).encode()
        return [
            OutRecord(
                target.topic,
                user if target.by_user else VIOLATION_USER.encode(),
                value,
                target.headers,
            )
            for target in self.forward_to
            for value in generated
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


def compile_plan(
    plan: TrackingPlan,
    enforcement: PlanEnforcement,
    source_id: str,
    *,
    source_name: str = "",
    forward_to: tuple[ViolationTarget, ...] = (),
) -> PlanStage:
    return PlanStage(plan, enforcement, source_id, source_name=source_name, forward_to=forward_to)


def plan_schemas(rules: PlanRules) -> list[tuple[str, dict[str, Any]]]:
    """Every schema of a plan with its sub-path (``.track.Order Completed``)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for kind in ("common", "identify", "group", "alias"):
        schema = getattr(rules, kind)
        if schema is not None:
            found.append((f".{kind}", schema))
    for kind in ("track", "page", "screen"):
        table: dict[str, dict[str, Any]] = getattr(rules, kind)
        found += [(f".{kind}.{name}", schema) for name, schema in table.items()]
    return found


def plan_problems(plan: TrackingPlan) -> list[tuple[str, str]]:
    """Schemas that are not valid draft-07, as (sub-path, message)."""
    problems: list[tuple[str, str]] = []
    for sub, schema in plan_schemas(plan.rules):
        try:
            Draft7Validator.check_schema(schema)
        except SchemaError as exc:
            problems.append((sub, f"not a valid JSON Schema (draft-07): {exc.message}"))
    return problems
