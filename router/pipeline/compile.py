"""Turn the workspace into ready-to-run stage callables, once, and check what YAML cannot.

Conditions are parsed, user functions imported, JSON Schemas checked and destination settings
validated here, so a mistake is reported by ``router check-config`` with its path instead of
surfacing on the first event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router.broker.topics import Topics
from router.config import Destination, Source, ViolationForwarding, Workspace
from router.pipeline.filters import DestinationFilter, compile_filters
from router.pipeline.middleware import (
    MiddlewareChain,
    compile_middleware,
)
from router.pipeline.pii import PiiRules, Redactor
from router.pipeline.plans import PlanStage, ViolationTarget, compile_plan
from router.pipeline.transforms import Transformer, compile_transformations


@dataclass(frozen=True, slots=True)
class CompiledDestination:
    id: str
    name: str
    warehouse: bool
    topic: str
    filter: DestinationFilter
    transform: Transformer
    #: Call types the destination takes; None: every type.
    call_types: frozenset[str] | None = None
    #: PII hashing/dropping for this destination (the fan-out's last stage); None: nothing.
    pii: Redactor | None = None


@dataclass(frozen=True, slots=True)
class CompiledSource:
    id: str
    middleware: MiddlewareChain
    plan: PlanStage | None
    transform: Transformer
    destinations: tuple[CompiledDestination, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class CompiledWorkspace:
    sources: dict[str, CompiledSource]
    sources_by_key: dict[str, str]
    destinations: dict[str, CompiledDestination]


def compile_destination(
    dest: Destination,
    topics: Topics,
    call_types: frozenset[str] | None = None,
    pii: PiiRules | None = None,
) -> CompiledDestination:
    return CompiledDestination(
        id=dest.id,
        name=dest.name,
        warehouse=dest.warehouse,
        topic=topics.destination(dest.id),
        filter=compile_filters(dest.filters),
        transform=compile_transformations(dest.transformations),
        call_types=call_types,
        pii=pii.for_destination(dest) if pii is not None and not pii.empty else None,
    )


def violation_targets(
    source: Source, workspace: Workspace, topics: Topics
) -> tuple[ViolationTarget, ...]:
    """Where a source's forwarded violations go. ``{source: ID}``: ``events.raw`` as events
    of that source (its first write key), routed like any event, and ``events.violations``,
    which the operations console reads; ``true``: ``events.violations`` only."""
    enforcement = source.tracking_plan
    forward = enforcement.forward_violations if enforcement is not None else False
    review = ViolationTarget(topics.violations)
    if isinstance(forward, ViolationForwarding):
        receiver = workspace.source_by_id(forward.source)
        headers = (("write-key", receiver.write_keys[0].encode()),)
        return (ViolationTarget(topics.raw, headers, by_user=True), review)
    return (review,) if forward else ()


def compile_source(
    source: Source,
    workspace: Workspace,
    destinations: dict[str, CompiledDestination],
    topics: Topics | None = None,
) -> CompiledSource:
    connected = tuple(
        destinations[d.id] for d in workspace.destinations if d.enabled and source.id in d.sources
    )
    plan = None
    if source.tracking_plan is not None:
        plan_config = next(p for p in workspace.tracking_plans if p.id == source.tracking_plan.plan)
        plan = compile_plan(
            plan_config,
            source.tracking_plan,
            source.id,
            source_name=source.name,
            forward_to=violation_targets(source, workspace, topics or Topics()),
        )
    return CompiledSource(
        id=source.id,
        middleware=compile_middleware(source.middleware),
        plan=plan,
        transform=compile_transformations(source.transformations),
        destinations=connected,
    )


def compile_workspace(
    workspace: Workspace,
    topics: Topics,
    call_types: Mapping[str, frozenset[str]] | None = None,
) -> CompiledWorkspace:
    """``call_types``: per destination id, the Segment call types its plugin takes (the
    processor reads them from the destination registry); a destination missing from it
    takes every type."""
    types = call_types or {}
    pii = PiiRules(workspace.privacy)
    destinations = {
        d.id: compile_destination(d, topics, types.get(d.id), pii) for d in workspace.destinations
    }
    sources = {s.id: compile_source(s, workspace, destinations, topics) for s in workspace.sources}
    by_key = {key: s.id for s in workspace.sources for key in s.write_keys}
    return CompiledWorkspace(sources=sources, sources_by_key=by_key, destinations=destinations)
