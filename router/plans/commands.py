"""``router plan import | check | infer``: the command-line side of the plan tools.

Every failure a person can cause (a missing file, a plan in neither shape, a topic that does
not exist) ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from router.config import ConfigError, PlanEnforcement, TrackingPlan, Workspace, with_bootstrap
from router.pipeline.plans import plan_problems
from router.plans.check import check_lines, format_report
from router.plans.formats import (
    SHAPE_OURS,
    ConvertedPlan,
    PlanFormatError,
    convert,
    read_document,
    suggested_id,
    to_text,
)
from router.plans.infer import PlanDraft

SHAPES = {
    SHAPE_OURS: "the router's plan format",
    "segment": "Segment's tracking plan JSON",
    "segment-rules": "Segment's Public API rules",
}


class CommandError(Exception):
    """A one-line reason the command cannot go on (exit status 2)."""


def add_plan_parser(commands: Any) -> None:
    """The ``plan`` command and its subcommands, on the ``router`` parser's subparsers."""
    plan = commands.add_parser("plan", help="tracking-plan tools: import, check, infer")
    # Tools print their own results; only warnings from the modules they use are of interest.
    plan.set_defaults(log_level="warning")
    tools = plan.add_subparsers(dest="plan_command", required=True)

    imp = tools.add_parser(
        "import", help="convert a plan file (Segment's JSON or ours) to the router's format"
    )
    imp.add_argument("file", help="plan file: Segment's tracking plan JSON, its rules, or ours")
    imp.add_argument("--id", help="plan id (default: from the plan's display name)")
    imp.add_argument("--out", "-o", help="write here instead of stdout (.json writes JSON)")

    check = tools.add_parser("check", help="report a sample's violations of a plan, offline")
    check.add_argument(
        "plan", help="plan file (either shape), or a plan id of the workspace with --config"
    )
    check.add_argument(
        "--events", "-e", required=True, help="sample: one JSON event a line (- for stdin)"
    )
    check.add_argument("--config", "-c", help="workspace YAML whose plan PLAN names")
    check.add_argument("--unplanned-events", choices=["allow", "block"], default="allow")
    check.add_argument("--unplanned-properties", choices=["allow", "omit"], default="allow")
    check.add_argument("--violations", choices=["allow", "block", "omit"], default="allow")
    check.add_argument("--format", choices=["text", "json"], default="text")

    infer = tools.add_parser("infer", help="draft a plan from observed events")
    infer.add_argument(
        "--from",
        dest="origin",
        default="events.raw",
        help="topic to read (the workspace's topic prefix is added), or a JSONL file",
    )
    infer.add_argument("--source", "-s", required=True, help="the source whose events to use")
    infer.add_argument("--config", "-c", help="workspace YAML (default: $ROUTER_CONFIG)")
    infer.add_argument("--bootstrap", help="Kafka bootstrap servers (default: as the roles)")
    infer.add_argument("--limit", type=int, default=10_000, help="records to read at most")
    infer.add_argument(
        "--time-limit", type=float, default=30.0, help="seconds to read the topic at most"
    )
    infer.add_argument("--id", help="plan id (default: <source>-plan)")
    infer.add_argument("--out", "-o", help="write here instead of stdout (.json writes JSON)")


def run_plan_command(args: argparse.Namespace) -> int:
    try:
        if args.plan_command == "import":
            return _import(args)
        if args.plan_command == "check":
            return _check(args)
        return _infer(args)
    except CommandError as exc:
        print(f"router plan {args.plan_command}: {exc}", file=sys.stderr)
        return 2


def _converted(path: Path) -> tuple[Any, ConvertedPlan]:
    try:
        document = read_document(path)
        return document, convert(document)
    except PlanFormatError as exc:
        if len(exc.problems) == 1 and not exc.problems[0][0]:
            raise CommandError(exc.problems[0][1]) from None
        lines = [f"  {p}: {m}" if p else f"  {m}" for p, m in exc.problems]
        raise CommandError(f"{path}: {len(exc.problems)} problem(s)\n" + "\n".join(lines)) from None


def _validated(plan: dict[str, Any], origin: str) -> TrackingPlan:
    try:
        model = TrackingPlan.model_validate(plan)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CommandError(f"{origin}: {where}: {first['msg']}") from None
    problems = plan_problems(model)
    if problems:
        sub, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CommandError(f"{origin}: rules{sub}: {message}{more}")
    return model


def _write(text: str, out: str | None) -> None:
    if out:
        Path(out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


# ---------------------------------------------------------------- import


def _import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    document, converted = _converted(path)
    plan = {"id": args.id or suggested_id(document, path.stem), **converted.plan}
    _validated(plan, str(path))
    as_json = bool(args.out and args.out.endswith(".json"))
    header = (
        ""
        if as_json
        else (
            f"# converted by `router plan import` from {path.name} ({SHAPES[converted.shape]})\n"
            + "".join(f"# note: {note}\n" for note in converted.notes)
        )
    )
    _write(header + to_text(plan, as_json=as_json), args.out)
    print(
        f"plan {plan['id']} from {SHAPES[converted.shape]}: {converted.summary()}",
        file=sys.stderr,
    )
    for note in converted.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- check


def _load_workspace(config: str | None) -> Workspace:
    from router.workspace import load_workspace

    try:
        return load_workspace(config)
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else ("", str(exc))
        more = (
            f" (and {len(exc.problems) - 1} more; run router check-config)"
            if len(exc.problems) > 1
            else ""
        )
        where = f"{first[0]}: " if first[0] else ""
        raise CommandError(f"{exc.source or 'workspace'}: {where}{first[1]}{more}") from None


def _plan_for_check(args: argparse.Namespace) -> TrackingPlan:
    if args.config:
        workspace = _load_workspace(args.config)
        for configured in workspace.tracking_plans:
            if configured.id == args.plan:
                return configured
        known = ", ".join(p.id for p in workspace.tracking_plans) or "none"
        raise CommandError(f"no tracking plan {args.plan!r} in {args.config} (plans: {known})")
    path = Path(args.plan)
    if not path.exists():
        raise CommandError(f"{path}: no such file (give a plan file, or --config and a plan id)")
    document, converted = _converted(path)
    plan = {"id": suggested_id(document, path.stem), **converted.plan}
    return _validated(plan, str(path))


def _check(args: argparse.Namespace) -> int:
    plan = _plan_for_check(args)
    enforcement = PlanEnforcement(
        plan=plan.id,
        unplanned_events=args.unplanned_events,
        unplanned_properties=args.unplanned_properties,
        violations=args.violations,
    )
    if args.events == "-":
        report = check_lines(plan, enforcement, sys.stdin.buffer)
    else:
        try:
            with open(args.events, "rb") as sample:
                report = check_lines(plan, enforcement, sample)
        except OSError as exc:
            raise CommandError(f"cannot read {args.events}: {exc.strerror}") from None
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        print(format_report(report, args.events))
    return 0 if report.clean else 1


# ---------------------------------------------------------------- infer


def _infer(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    draft = PlanDraft()
    started = time.monotonic()
    origin = Path(args.origin)
    if origin.is_file():
        summary = _infer_from_file(origin, draft, args.limit)
        where = str(origin)
    else:
        summary, where = asyncio.run(_infer_from_topic(args, draft))
    if not draft.events:
        raise CommandError(f"{summary}: no events to draft a plan from")
    plan = draft.plan(args.id or f"{args.source}-plan", f"Drafted from {where}")
    _validated(plan, "draft")
    as_json = bool(args.out and args.out.endswith(".json"))
    header = "" if as_json else f"# drafted by `router plan infer` from {where}: {summary}\n"
    _write(header + to_text(plan, as_json=as_json), args.out)
    rules = plan["rules"]
    kinds = [f"{len(rules[k])} {k}" for k in ("track", "page", "screen") if k in rules]
    kinds += [k for k in ("identify", "group", "alias") if k in rules]
    print(
        f"{summary} in {time.monotonic() - started:.1f}s; drafted: {', '.join(kinds)}",
        file=sys.stderr,
    )
    return 0


def _infer_from_file(path: Path, draft: PlanDraft, limit: int) -> str:
    from router import spec

    lines = invalid = 0
    try:
        with path.open("rb") as sample:
            for line in sample:
                if not line.strip():
                    continue
                lines += 1
                if lines > limit:
                    break
                try:
                    event = spec.validate(orjson.loads(line))
                except (orjson.JSONDecodeError, spec.InvalidEvent):
                    invalid += 1
                    continue
                draft.add(event)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    return f"read {min(lines, limit)} line(s) of {path}: {draft.events} event(s), {invalid} invalid"


async def _infer_from_topic(args: argparse.Namespace, draft: PlanDraft) -> tuple[str, str]:
    from aiokafka.errors import KafkaError

    from router.broker.reading import TopicMissing, read_topic
    from router.pipeline.decode import decode

    if not (args.config or os.environ.get("ROUTER_CONFIG")):
        raise CommandError(
            f"{args.origin} is not a file; to read a topic give the workspace (--config)"
        )
    workspace = _load_workspace(args.config)
    if args.bootstrap:
        workspace = with_bootstrap(workspace, args.bootstrap)
    kafka = workspace.kafka
    if not kafka.bootstrap_servers:
        raise CommandError("no Kafka: pass --bootstrap or set KAFKA_BOOTSTRAP_SERVERS")
    if args.source not in {s.id for s in workspace.sources}:
        known = ", ".join(s.id for s in workspace.sources)
        raise CommandError(f"unknown source {args.source!r} (sources: {known})")
    prefix = kafka.topic_prefix
    topic = args.origin if args.origin.startswith(prefix) else prefix + args.origin
    sources_by_key = {key: s.id for s in workspace.sources for key in s.write_keys}
    records = other = rejected = 0
    try:
        async for batch in read_topic(kafka, topic, limit=args.limit, time_limit=args.time_limit):
            records += len(batch)
            envelopes, rejections = decode(batch, sources_by_key)
            rejected += len(rejections)
            for envelope in envelopes:
                if envelope.source_id == args.source:
                    draft.add(envelope.event)
                else:
                    other += 1
    except TopicMissing:
        raise CommandError(f"topic {topic} does not exist on {kafka.bootstrap_servers}") from None
    except KafkaError as exc:
        raise CommandError(f"cannot read {topic} from {kafka.bootstrap_servers}: {exc}") from None
    except OSError as exc:
        raise CommandError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc}") from None
    summary = (
        f"read {records} record(s) of {topic}: {draft.events} event(s) of source "
        f"{args.source}, {other} of other sources, {rejected} invalid"
    )
    return summary, topic
