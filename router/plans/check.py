"""``router plan check``: run a plan over a sample of events, offline, and report violations.

Each line of the sample is one event (JSON). It is held to the spec first (what the gateway
and processor would reject is listed as invalid, with the same codes), then to the plan with
the enforcement given (by default everything allowed, so every violation is listed; with
``block`` settings the report also says which events the source would block).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from router import spec
from router.config import PlanEnforcement, TrackingPlan
from router.pipeline.plans import compile_plan, event_name

MAX_LISTED = 200


@dataclass(slots=True)
class Finding:
    """One event of the sample with violations (or blocked)."""

    line: int
    kind: str
    name: str
    message_id: Any
    violations: list[dict[str, str]]
    blocked: str | None


@dataclass(slots=True)
class CheckReport:
    plan_id: str
    events: int = 0
    valid: int = 0
    invalid: list[tuple[int, str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    blocked: Counter[str] = field(default_factory=Counter)

    @property
    def violation_count(self) -> int:
        return sum(len(f.violations) for f in self.findings)

    @property
    def clean(self) -> bool:
        return not self.findings and not self.invalid

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan_id,
            "events": self.events,
            "valid": self.valid,
            "eventsWithViolations": len(self.findings),
            "violations": [
                {
                    "line": f.line,
                    "eventType": f.kind,
                    "eventName": f.name,
                    "eventMessageID": f.message_id,
                    "violationType": v["type"],
                    "violationField": v["field"],
                    "violationDescription": v["description"],
                    "blocked": f.blocked,
                }
                for f in self.findings
                for v in f.violations
            ],
            "blocked": dict(self.blocked),
            "invalid": [
                {"line": line, "code": code, "message": message}
                for line, code, message in self.invalid
            ],
        }


def check_lines(
    plan: TrackingPlan, enforcement: PlanEnforcement, lines: Iterable[bytes | str]
) -> CheckReport:
    """The plan over each line's event; a bad line is reported, never fatal."""
    stage = compile_plan(plan, enforcement, "sample")
    report = CheckReport(plan.id)
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        report.events += 1
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            report.invalid.append((number, "invalid_json", f"not valid JSON: {exc}"))
            continue
        try:
            spec.validate(event)
        except spec.InvalidEvent as exc:
            report.invalid.append((number, exc.code, exc.message))
            continue
        report.valid += 1
        outcome = stage(copy.deepcopy(event))
        if outcome.violations or outcome.blocked_reason:
            report.findings.append(
                Finding(
                    number,
                    event["type"],
                    event_name(event),
                    event.get("messageId"),
                    outcome.violations,
                    outcome.blocked_reason,
                )
            )
        if outcome.blocked_reason:
            report.blocked[outcome.blocked_reason] += 1
    return report


def format_report(report: CheckReport, source: str, *, listed: int = MAX_LISTED) -> str:
    """The report for a person: totals, violations grouped by event, the invalid lines."""
    out = [
        f"plan {report.plan_id}, sample {source}: {report.events} event(s), "
        f"{len(report.findings)} with violations ({report.violation_count} violation(s)), "
        f"{len(report.invalid)} invalid"
    ]
    if report.blocked:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(report.blocked.items()))
        out.append(f"would be blocked: {sum(report.blocked.values())} ({reasons})")
    if report.findings:
        out += ["", "violations by event:"]
        grouped: dict[tuple[str, str], list[Finding]] = {}
        for finding in report.findings:
            grouped.setdefault((finding.kind, finding.name), []).append(finding)
        for (kind, name), findings in sorted(grouped.items(), key=lambda item: -len(item[1])):
            out.append(f"  {kind} {name!r}: {len(findings)} event(s)")
            seen: dict[tuple[str, str], tuple[int, int, str]] = {}
            for finding in findings:
                for v in finding.violations:
                    key = (v["type"], v["field"])
                    count, line, description = seen.get(key, (0, finding.line, v["description"]))
                    seen[key] = (count + 1, line, description)
            for (kind_, field_), (count, line, description) in seen.items():
                out.append(
                    f"    {kind_:<18} {field_ or '(root)':<28} x{count}  line {line}: {description}"
                )
        shown = report.findings[:listed]
        out += ["", "events:"]
        for finding in shown:
            blocked = f" [blocked: {finding.blocked}]" if finding.blocked else ""
            out.append(
                f"  line {finding.line}: {finding.kind} {finding.name!r} "
                f"(messageId {finding.message_id}){blocked}"
            )
            out += [f"    {v['type']}: {v['description']}" for v in finding.violations]
        if len(report.findings) > listed:
            out.append(f"  ... and {len(report.findings) - listed} more (--format json lists all)")
    if report.invalid:
        out += ["", "invalid events (not checked against the plan):"]
        out += [f"  line {line}: {code}: {message}" for line, code, message in report.invalid]
    return "\n".join(out)
