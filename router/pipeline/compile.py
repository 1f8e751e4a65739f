"""Turn the workspace into ready-to-run stage callables, once, and check what YAML cannot.

Conditions are parsed, user functions imported, JSON Schemas checked and destination settings
validated here, so a mistake is reported by ``router check-config`` with its path instead of
surfacing on the first event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from router.broker.topics import Topics
from router.config import Destination, Source, TrackingPlan, Workspace
from router.pipeline.conditions import ConditionSyntaxError, compile_condition
from router.pipeline.filters import DestinationFilter, compile_filters
from router.pipeline.middleware import (
    MiddlewareChain,
    MiddlewareImportError,
    compile_middleware,
    load_function,
)
from router.pipeline.paths import split_path
from router.pipeline.plans import PlanStage, compile_plan, plan_problems
from router.pipeline.transforms import Transformer, compile_transformations


@dataclass(frozen=True, slots=True)
class CompiledDestination:
    id: str
    name: str
    warehouse: bool
    topic: str
    filter: DestinationFilter
    transform: Transformer


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


def compile_destination(dest: Destination, topics: Topics) -> CompiledDestination:
    return CompiledDestination(
        id=dest.id,
        name=dest.name,
        warehouse=dest.warehouse,
        topic=topics.destination(dest.id),
        filter=compile_filters(dest.filters),
        transform=compile_transformations(dest.transformations),
    )


def compile_source(
    source: Source, workspace: Workspace, destinations: dict[str, CompiledDestination]
) -> CompiledSource:
    connected = tuple(
        destinations[d.id] for d in workspace.destinations if d.enabled and source.id in d.sources
    )
    plan = None
    if source.tracking_plan is not None:
        plan_config = next(p for p in workspace.tracking_plans if p.id == source.tracking_plan.plan)
        plan = compile_plan(plan_config, source.tracking_plan, source.id)
    return CompiledSource(
        id=source.id,
        middleware=compile_middleware(source.middleware),
        plan=plan,
        transform=compile_transformations(source.transformations),
        destinations=connected,
    )


def compile_workspace(workspace: Workspace, topics: Topics) -> CompiledWorkspace:
    destinations = {d.id: compile_destination(d, topics) for d in workspace.destinations}
    sources = {s.id: compile_source(s, workspace, destinations) for s in workspace.sources}
    by_key = {key: s.id for s in workspace.sources for key in s.write_keys}
    return CompiledWorkspace(sources=sources, sources_by_key=by_key, destinations=destinations)


def _items(node: Any, key: str) -> list[tuple[int, Any]]:
    value = node.get(key) if isinstance(node, dict) else None
    return list(enumerate(value)) if isinstance(value, list) else []


def _check_conditions(
    problems: list[tuple[str, str]], path: str, items: list[tuple[int, Any]]
) -> None:
    """Conditions parse and dot paths are well formed (``a..b`` would fail at start)."""
    for i, item in items:
        for key in ("fields", "values", "path"):
            value = item.get(key) if isinstance(item, dict) else None
            names: list[Any] = []
            if isinstance(value, str):
                names = [value]
            elif isinstance(value, list | dict):
                names = list(value)
                if isinstance(value, dict) and key == "fields":
                    names += list(value.values())
            for name in names:
                try:
                    split_path(str(name))
                except ValueError as exc:
                    problems.append((f"{path}[{i}].{key}", f"invalid field path {name!r}: {exc}"))
        condition = item.get("if", item.get("condition")) if isinstance(item, dict) else None
        if isinstance(condition, str):
            try:
                compile_condition(condition)
            except ConditionSyntaxError as exc:
                problems.append((f"{path}[{i}].if", f"invalid condition: {exc}"))


def check_document(data: Any) -> list[tuple[str, str]]:
    """Checks the models cannot make, run on the raw document so they report even when other
    parts are invalid: conditions parse, user functions import, JSON Schemas are draft-07,
    destination settings fit their plugin. Returns (path, message) pairs."""
    problems: list[tuple[str, str]] = []
    for i, source in _items(data, "sources"):
        _check_conditions(problems, f"sources[{i}].middleware", _items(source, "middleware"))
        for j, middleware in _items(source, "middleware"):
            function = middleware.get("function") if isinstance(middleware, dict) else None
            if isinstance(function, str) and ":" in function:
                try:
                    load_function(function)
                except MiddlewareImportError as exc:
                    problems.append((f"sources[{i}].middleware[{j}].function", str(exc)))
        _check_conditions(
            problems, f"sources[{i}].transformations", _items(source, "transformations")
        )
    for i, plan in _items(data, "tracking_plans"):
        try:
            model = TrackingPlan.model_validate(plan)
        except ValidationError:
            continue  # the model's own errors are reported by config validation
        problems.extend(
            (f"tracking_plans[{i}].rules{sub}", message) for sub, message in plan_problems(model)
        )
    for i, dest in _items(data, "destinations"):
        _check_conditions(problems, f"destinations[{i}].filters", _items(dest, "filters"))
        _check_conditions(
            problems, f"destinations[{i}].transformations", _items(dest, "transformations")
        )
        if isinstance(dest, dict) and isinstance(dest.get("type"), str):
            settings = dest.get("settings", {})
            problems.extend(
                (f"destinations[{i}].settings{sub}", message)
                for sub, message in _settings_problems(
                    dest["type"], settings if isinstance(settings, dict) else {}
                )
            )
    return problems


def _settings_problems(type_name: str, settings: dict[str, Any]) -> list[tuple[str, str]]:
    try:
        from destinations.registry import validate_settings
    except ImportError:  # the delivery side is optional for a processor-only install
        return []
    return [
        (f".{sub}" if sub and not sub.startswith("[") else sub, message)
        for sub, message in validate_settings(type_name, settings)
    ]
