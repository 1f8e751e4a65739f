"""Loading a workspace file and checking it as a whole.

:mod:`router.config` holds the models and imports nothing of ours; this module sits above it
and the stages: it reads the YAML, replaces ``${VAR}`` references (registering every value so
logs and records mask it), validates the models, then runs the checks a model cannot make on
its own: conditions parse, dot paths are well formed, user functions import, JSON Schemas
are valid draft-07, destination settings fit their plugin. Every problem is reported with its
path in the file (``destinations[1].filters[0].if``), never with the offending value.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from destinations.registry import validate_settings
from router.config import SECRETS, ConfigError, TrackingPlan, Workspace, with_bootstrap
from router.pipeline.conditions import ConditionSyntaxError, compile_condition
from router.pipeline.middleware import MiddlewareImportError, load_function
from router.pipeline.paths import split_path
from router.pipeline.plans import plan_problems
from router.plans.formats import SHAPE_OURS, PlanFormatError, convert, detect_shape, read_document

logger = logging.getLogger(__name__)

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(node: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, recording missing variables."""
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            # ${VAR:-default} as in a shell: the default also stands in for an empty value.
            if value is None or (value == "" and default is not None):
                if default is not None:
                    return default
                problems.append((path, f"environment variable {name} is not set"))
                return ""
            SECRETS.add(value)
            return value

        return ENV_REF.sub(substitute, node)
    if isinstance(node, Mapping):
        return {
            k: interpolate(v, f"{path}.{k}" if path else str(k), problems) for k, v in node.items()
        }
    if isinstance(node, list):
        return [interpolate(v, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    return node


def _error_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in {
            "drop_fields",
            "hash_fields",
            "rename_fields",
            "add_context",
            "event_name_case",
            "function",
            "sample",
            "drop",
            "only",
            "drop_properties",
            "allow_properties",
            "rename_event",
            "rename_properties",
            "set_values",
            "drop_event",
        } and path.endswith("]"):
            continue  # pydantic names the union member; the path already says which item
        else:
            path += f".{part}" if path else str(part)
    return path


def validate_workspace(
    data: Any, source: str = "", base_dir: str | os.PathLike[str] | None = None
) -> Workspace:
    """Validate an already-parsed document; raise :class:`ConfigError` listing every problem.

    ``base_dir`` anchors relative plan ``file`` paths (default: the directory of ``source``
    when it names a file, else the working directory)."""
    problems: list[tuple[str, str]] = []
    if not isinstance(data, Mapping):
        raise ConfigError([("", "the workspace must be a YAML mapping")], source)
    data = interpolate(data, "", problems)
    if base_dir is None:
        base_dir = Path(source).parent if source else Path.cwd()
    data = resolve_plans(data, Path(base_dir), problems)
    workspace: Workspace | None = None
    try:
        workspace = Workspace.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            path = _error_path(err["loc"])
            if path == "" and ";" in message:
                problems.extend(("", part.strip()) for part in message.split(";"))
            else:
                problems.append((path, message))
    known = set(problems)
    problems.extend(p for p in check_document(data) if p not in known)
    if problems or workspace is None:
        raise ConfigError(problems, source)
    return workspace


def load_workspace(path: str | os.PathLike[str] | None = None) -> Workspace:
    """Load ``path`` (or ``$ROUTER_CONFIG``); apply ``KAFKA_BOOTSTRAP_SERVERS`` if set."""
    location = path or os.environ.get("ROUTER_CONFIG")
    if not location:
        raise ConfigError([("", "no workspace file: pass --config FILE or set ROUTER_CONFIG")])
    file = Path(location)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read {file}: {exc.strerror}")], str(file)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([(where, f"invalid YAML: {problem}")], str(file)) from None
    workspace = validate_workspace(data, str(file))
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        workspace = with_bootstrap(workspace, servers)
    return workspace


# ---------------------------------------------------------------- tracking plans


def resolve_plans(
    data: Mapping[str, Any], base_dir: Path, problems: list[tuple[str, str]]
) -> dict[str, Any]:
    """Tracking plans in our shape: each ``file`` read (ours or Segment's JSON, relative to
    ``base_dir``) and each plan written inline in Segment's shape converted. Returns a copy."""
    resolved = dict(data)
    plans = data.get("tracking_plans")
    if not isinstance(plans, list):
        return resolved
    out: list[Any] = []
    for i, entry in enumerate(plans):
        where = f"tracking_plans[{i}]"
        if not isinstance(entry, Mapping):
            out.append(entry)
            continue
        entry = dict(entry)
        from_file = isinstance(entry.get("file"), str) and bool(entry["file"])
        rules = entry.get("rules")
        try:
            if from_file and ("rules" in entry or "events" in entry):
                problems.append((f"{where}.file", "give either file or rules, not both"))
            elif from_file:
                path = base_dir / entry["file"]
                converted = convert(read_document(path))
                for note in converted.notes:
                    logger.info("%s.file (%s): %s", where, path, note)
                entry = {**converted.plan, **entry, "rules": converted.plan["rules"]}
            elif (
                "events" in entry
                or isinstance(rules, list)
                or (isinstance(rules, Mapping) and detect_shape({"rules": rules}) != SHAPE_OURS)
            ):
                # Segment's shape written inline: everything but our id and name is theirs.
                converted = convert({k: v for k, v in entry.items() if k not in ("id", "name")})
                kept = {k: v for k, v in entry.items() if k in ("id", "name")}
                entry = {**converted.plan, **kept}
        except PlanFormatError as exc:
            for sub, message in exc.problems:
                if from_file:
                    problems.append((f"{where}.file", f"{sub}: {message}" if sub else message))
                else:
                    problems.append((f"{where}.{sub}" if sub else where, message))
            entry = {k: v for k, v in entry.items() if k in ("id", "name", "file")}
        out.append(entry)
    resolved["tracking_plans"] = out
    return resolved


# ---------------------------------------------------------------- cross-checks


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
    return [
        (f".{sub}" if sub and not sub.startswith("[") else sub, message)
        for sub, message in validate_settings(type_name, settings)
    ]
