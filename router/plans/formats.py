"""Tracking plans in either shape: ours, and Segment's JSON.

Ours is what a workspace holds (``tracking_plans[]``): ``{name, description, rules: {common,
track: {NAME: schema}, page: {NAME: schema}, screen: {...}, identify, group, alias}}``, every
schema a draft-07 JSON Schema over the whole event.

Segment's, as its Protocols tools and APIs hand it out:

- the tracking plan JSON (Config API, plan exports): ``{"display_name": ..., "rules":
  {"global": schema, "events": [{"name": "Order Completed", "description": ..., "version": 1,
  "rules": schema}], "identify": schema, "group": schema}}``, or the same keys without the
  ``rules`` wrapper (``{"events": [...]}``);
- the Public API's rule list: ``{"rules": [{"type": "TRACK", "key": "Order Completed",
  "version": 1, "jsonSchema": schema}, ...]}`` with types COMMON, TRACK, PAGE, SCREEN,
  IDENTIFY and GROUP (optionally inside ``{"data": ...}`` / ``{"trackingPlan": ...}``).

Segment's schemas are also over the whole event (``properties.properties`` holds the event's
properties), so they carry over unchanged. What does not carry over one to one:

- event versions: a Segment plan may hold several versions of one event, chosen per event by
  ``context.protocols.event_version``; without it Segment checks the oldest. We keep the
  oldest and say so in the conversion notes.
- ``Page Viewed`` / ``Screen Viewed``: Segment's plans list page() and screen() calls under
  these names. An event of that name becomes our ``page`` (``screen``) rule for every call
  without a rule of its own name, and stays a track rule too, for track calls of that name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import yaml

from router.config import PAGE_VIEWED, SCREEN_VIEWED

SHAPE_OURS: Final = "ours"
SHAPE_SEGMENT: Final = "segment"
SHAPE_SEGMENT_RULES: Final = "segment-rules"

_OUR_RULE_KEYS: Final = frozenset(
    {"common", "track", "page", "screen", "identify", "group", "alias"}
)
_SEGMENT_RULE_KEYS: Final = frozenset({"global", "events", "identify", "group"})
# Public API rule types -> where the rule goes in ours ("named": keyed by the rule's key).
_RULE_TYPES: Final = {
    "COMMON": ("common", False),
    "TRACK": ("track", True),
    "PAGE": ("page", True),
    "SCREEN": ("screen", True),
    "IDENTIFY": ("identify", False),
    "GROUP": ("group", False),
    "ALIAS": ("alias", False),
}
_SLUG = re.compile(r"[^A-Za-z0-9]+")


class PlanFormatError(ValueError):
    """A plan document that is neither shape, or has broken parts: (path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))


@dataclass(slots=True)
class ConvertedPlan:
    """A plan in our shape (``plan``: name, description, rules), which shape it came from,
    and what a person should know about the conversion."""

    shape: str
    plan: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rules = self.plan["rules"]
        parts = [f"{len(rules.get(kind) or {})} {kind}" for kind in ("track", "page", "screen")]
        parts += [kind for kind in ("identify", "group", "alias", "common") if kind in rules]
        return ", ".join(parts)


def suggested_id(document: Any, fallback: str) -> str:
    """A plan id from Segment's display name (``Acme Ecommerce TP`` -> ``acme-ecommerce-tp``)."""
    body = _unwrap(document) if isinstance(document, dict) else {}
    for key in ("display_name", "displayName", "name"):
        value = body.get(key)
        if isinstance(value, str) and value.strip():
            slug = _SLUG.sub("-", value.rsplit("/", 1)[-1]).strip("-").lower()[:64]
            if slug:
                return slug
    slug = _SLUG.sub("-", fallback).strip("-").lower()[:64]
    return slug or "plan"


def read_document(path: Path) -> Any:
    """A plan file's content: JSON (``.json`` or starting with ``{``) or YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanFormatError([("", f"cannot read {path}: {exc.strerror}")]) from None
    try:
        if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            return orjson.loads(text)
        return yaml.safe_load(text)
    except orjson.JSONDecodeError as exc:
        raise PlanFormatError([("", f"{path} is not valid JSON: {exc}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise PlanFormatError([("", f"{path} is not valid YAML{where}")]) from None


def load_plan_file(path: Path) -> ConvertedPlan:
    return convert(read_document(path))


def _unwrap(document: dict[str, Any]) -> dict[str, Any]:
    """The plan inside Public API envelopes (``{"data": {"trackingPlan": {...}}}``)."""
    body = document
    for key in ("data", "trackingPlan"):
        inner = body.get(key)
        if isinstance(inner, dict) and not ({"rules", "events"} & body.keys()):
            body = inner
    return body


def detect_shape(document: Any) -> str:
    if not isinstance(document, dict):
        raise PlanFormatError([("", "a tracking plan must be a JSON or YAML object")])
    body = _unwrap(document)
    rules = body.get("rules")
    if isinstance(rules, list):
        return SHAPE_SEGMENT_RULES
    if "events" in body or (isinstance(rules, dict) and {"events", "global"} & rules.keys()):
        return SHAPE_SEGMENT
    if isinstance(rules, dict):
        return SHAPE_OURS
    raise PlanFormatError(
        [
            (
                "",
                "not a tracking plan: expected our shape (rules: {track: {...}, ...}) or "
                'Segment\'s JSON ({"events": [...]} or {"rules": [...]})',
            )
        ]
    )


def convert(document: Any) -> ConvertedPlan:
    """Any accepted plan document -> our shape; :class:`PlanFormatError` lists every problem."""
    shape = detect_shape(document)
    body = _unwrap(document)
    if shape == SHAPE_OURS:
        unknown = sorted(str(k) for k in body["rules"] if k not in _OUR_RULE_KEYS)
        if unknown:
            raise PlanFormatError([(f"rules.{k}", "unknown key") for k in unknown])
        plan: dict[str, Any] = {
            key: body[key] for key in ("name", "description") if isinstance(body.get(key), str)
        }
        plan["rules"] = body["rules"]
        return ConvertedPlan(shape, plan)
    converted = ConvertedPlan(shape, {})
    problems: list[tuple[str, str]] = []
    rules: dict[str, Any] = {}
    if shape == SHAPE_SEGMENT:
        _from_segment_plan(body, rules, converted.notes, problems)
    else:
        _from_rule_list(body["rules"], rules, converted.notes, problems)
    if problems:
        raise PlanFormatError(problems)
    name = next(
        (body[k] for k in ("display_name", "displayName", "name") if isinstance(body.get(k), str)),
        "",
    )
    if name and not name.startswith("workspaces/"):
        converted.plan["name"] = name
    if isinstance(body.get("description"), str) and body["description"]:
        converted.plan["description"] = body["description"]
    converted.plan["rules"] = rules
    return converted


def _schema(value: Any, path: str, problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    """A rule's JSON Schema: an object, or a JSON string holding one (Terraform writes those)."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            problems.append((path, "not a JSON Schema (a string that is not JSON)"))
            return None
    if not isinstance(value, dict):
        problems.append((path, "a JSON Schema must be an object"))
        return None
    return value


def _from_segment_plan(
    body: dict[str, Any],
    rules: dict[str, Any],
    notes: list[str],
    problems: list[tuple[str, str]],
) -> None:
    wrapped = body.get("rules")
    container: dict[str, Any] = wrapped if isinstance(wrapped, dict) else body
    prefix = "rules." if container is not body else ""
    if container is not body:
        problems.extend(
            (f"rules.{k}", "unknown key in a Segment tracking plan")
            for k in sorted(str(k) for k in container)
            if k not in _SEGMENT_RULE_KEYS
        )
    for ours, theirs in (("common", "global"), ("identify", "identify"), ("group", "group")):
        if container.get(theirs) is not None:
            schema = _schema(container[theirs], f"{prefix}{theirs}", problems)
            if schema is not None:
                rules[ours] = schema
    events = container.get("events", [])
    if not isinstance(events, list):
        problems.append((f"{prefix}events", "must be a list of events"))
        return
    chosen: dict[str, tuple[int, dict[str, Any]]] = {}
    versions: dict[str, list[int]] = {}
    for i, entry in enumerate(events):
        path = f"{prefix}events[{i}]"
        if not isinstance(entry, dict):
            problems.append((path, "an event must be an object"))
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            problems.append((f"{path}.name", "an event needs a name"))
            continue
        schema = _schema(entry.get("rules"), f"{path}.rules", problems)
        if schema is None:
            continue
        description = entry.get("description")
        if isinstance(description, str) and description and "description" not in schema:
            schema = {**schema, "description": description}
        version = entry.get("version", 1)
        version = version if isinstance(version, int) and not isinstance(version, bool) else 1
        versions.setdefault(name, []).append(version)
        if name not in chosen or version < chosen[name][0]:
            chosen[name] = (version, schema)
    _place_named(rules, "track", chosen, versions, notes)


def _from_rule_list(
    items: list[Any],
    rules: dict[str, Any],
    notes: list[str],
    problems: list[tuple[str, str]],
) -> None:
    chosen: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {}
    versions: dict[str, dict[str, list[int]]] = {}
    single: dict[str, tuple[int, dict[str, Any]]] = {}
    deprecated = 0
    for i, item in enumerate(items):
        path = f"rules[{i}]"
        if not isinstance(item, dict):
            problems.append((path, "a rule must be an object"))
            continue
        kind = str(item.get("type", "")).upper()
        if kind not in _RULE_TYPES:
            problems.append(
                (
                    f"{path}.type",
                    f"unknown rule type {item.get('type')!r} (expected one of "
                    + ", ".join(sorted(_RULE_TYPES))
                    + ")",
                )
            )
            continue
        if item.get("deprecatedAt"):
            deprecated += 1
            continue
        raw = item.get("jsonSchema", item.get("json_schema"))
        schema = _schema(raw, f"{path}.jsonSchema", problems)
        if schema is None:
            continue
        version = item.get("version", 1)
        version = version if isinstance(version, int) and not isinstance(version, bool) else 1
        ours, named = _RULE_TYPES[kind]
        if named:
            key = item.get("key")
            if not isinstance(key, str) or not key:
                if ours == "track":
                    problems.append((f"{path}.key", "a TRACK rule needs the event name as key"))
                    continue
                key = PAGE_VIEWED if ours == "page" else SCREEN_VIEWED
            versions.setdefault(ours, {}).setdefault(key, []).append(version)
            table = chosen.setdefault(ours, {})
            if key not in table or version < table[key][0]:
                table[key] = (version, schema)
        elif ours not in single or version < single[ours][0]:
            single[ours] = (version, schema)
    for ours, (_, schema) in single.items():
        rules[ours] = schema
    for ours in ("track", "page", "screen"):
        if ours in chosen:
            _place_named(rules, ours, chosen[ours], versions[ours], notes)
    if deprecated:
        notes.append(f"{deprecated} deprecated rule(s) left out")


def _place_named(
    rules: dict[str, Any],
    kind: str,
    chosen: dict[str, tuple[int, dict[str, Any]]],
    versions: dict[str, list[int]],
    notes: list[str],
) -> None:
    table = rules.setdefault(kind, {})
    for name, (version, schema) in chosen.items():
        table[name] = schema
        if len(versions[name]) > 1:
            notes.append(
                f"{name!r} has versions {sorted(versions[name])}: kept version {version}, the one "
                "Segment checks events without context.protocols.event_version against"
            )
        if kind == "track" and name in (PAGE_VIEWED, SCREEN_VIEWED):
            calls = "page" if name == PAGE_VIEWED else "screen"
            rules.setdefault(calls, {}).setdefault(name, schema)
            notes.append(f"{name!r} also checks every {calls}() call without a rule of its own")


def to_text(plan: dict[str, Any], *, as_json: bool = False) -> str:
    """A plan for a file: YAML (a ``tracking_plans`` entry) or JSON."""
    if as_json:
        return orjson.dumps(plan, option=orjson.OPT_INDENT_2).decode() + "\n"
    text: str = yaml.safe_dump(plan, sort_keys=False, allow_unicode=True, width=100)
    return text
