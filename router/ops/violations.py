"""Tracking-plan violations for people, read from ``events.violations``.

That topic holds two kinds of records (``router.pipeline``): events a plan blocked (the
processor's rejection record: ``stage: "plan"``, ``sourceId``, ``payload`` as received,
``details.violations``), and, for sources with ``forward_violations``, Segment's
"Violation Generated" track events (one per violation, ``properties.eventMessageID``...).
A blocked event of a forwarding source appears as both; each violation is counted once, on
(source, messageId, violation type, field). The blocked payload is shown after the source's
middleware, like everything the console shows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from router.ops.explain import Explainer
from router.ops.reading import Record
from router.ops.store import Violation

VIOLATION_EVENT = "Violation Generated"
_PLAN_IN_MESSAGE = re.compile(r"tracking plan (\S+)")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_violations(
    record: Record, explainer: Explainer, plans: Mapping[str, str]
) -> list[Violation]:
    """``plans``: the plan id of each source that has one."""
    try:
        body = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return []
    if not isinstance(body, dict):
        return []
    at = record.timestamp / 1000
    fallback_id = f"{record.topic}:{record.partition}:{record.offset}"
    if body.get("type") == "track" and body.get("event") == VIOLATION_EVENT:
        props = body.get("properties")
        if not isinstance(props, dict):
            return []
        source = _text(props.get("sourceID"))
        if source is None:
            return []
        return [
            Violation(
                source=source,
                plan=_text(props.get("trackingPlanID")) or plans.get(source, "?"),
                message_id=_text(props.get("eventMessageID")) or fallback_id,
                violation_type=_text(props.get("violationType")) or "Unknown",
                field=_text(props.get("violationField")) or "",
                description=_text(props.get("violationDescription")) or "",
                event_type=_text(props.get("eventType")),
                event_name=_text(props.get("eventName")),
                at=at,
                blocked=False,
            )
        ]
    source = _text(body.get("sourceId"))
    details = body.get("details")
    if source is None or body.get("stage") != "plan" or not isinstance(details, dict):
        return []
    payload = body.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    match = _PLAN_IN_MESSAGE.search(_text(body.get("message")) or "")
    plan = plans.get(source) or (match.group(1) if match else "?")
    kind = _text(payload.get("type"))
    name = _text(payload.get("event") if kind == "track" else payload.get("name")) or kind
    masked = explainer.mask(source, payload)
    found = []
    for item in details.get("violations") or []:
        if not isinstance(item, dict):
            continue
        found.append(
            Violation(
                source=source,
                plan=plan,
                message_id=_text(payload.get("messageId")) or fallback_id,
                violation_type=_text(item.get("type")) or "Unknown",
                field=_text(item.get("field")) or "",
                description=_text(item.get("description")) or "",
                event_type=kind,
                event_name=name,
                at=at,
                blocked=True,
                event=masked,
            )
        )
    return found
