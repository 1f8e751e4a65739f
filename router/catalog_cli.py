"""``router destinations``: the destination catalog from the command line.

- ``router destinations``: every registered type, one line each (its ``summary``);
- ``router destinations show TYPE``: the type's settings (name, type, default, required,
  secret), read from its settings model;
- ``router destinations test ID --event FILE``: sends one event to a configured destination
  and prints the request (credentials masked) and the answer, like Segment's Event Tester.
  The event goes as written in the file (stamped with ``messageId``/``receivedAt`` when
  absent), not through the processor's filters and transformations. Destinations with a
  validation endpoint use it (GA4's ``/debug/mp/collect``: nothing is recorded).

Every failure is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO, runtime_checkable

import orjson
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from destinations.base import (
    AnyPlugin,
    DestinationError,
    Encoded,
    Event,
    PluginContext,
    UnknownDestinationType,
)
from destinations.http import HttpClient
from destinations.registry import available, get_plugin
from router.config import Workspace
from router.spec import InvalidEvent, now, stamp, validate


@runtime_checkable
class HasEventTester(Protocol):
    """A plugin whose partner has a validation endpoint for the Event Tester to use."""

    def event_tester_request(self, request: Any) -> Any: ...


# ---------------------------------------------------------------- list and show


def list_types(out: TextIO | None = None) -> int:
    out = out or sys.stdout
    names = available()
    width = max((len(n) for n in names), default=0)
    for name in names:
        summary = get_plugin(name).summary or "(no summary)"
        print(f"{name.ljust(width)}  {summary}", file=out)
    return 0


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is Literal:
        return "one of " + "|".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[1])}" if len(args) == 2 else "map"
    if annotation in (SecretStr, SecretBytes, str):
        return "string"
    if isinstance(annotation, type):
        if annotation is bool:
            return "boolean"
        if annotation in (int, float):
            return "number" if annotation is float else "integer"
        if "Url" in annotation.__name__:
            return "url"
        return annotation.__name__
    return str(annotation)


def _is_secret(annotation: Any) -> bool:
    if annotation in (SecretStr, SecretBytes):
        return True
    return any(_is_secret(a) for a in typing.get_args(annotation))


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return ""
    value = field.get_default(call_default_factory=True)
    if value is None or value is PydanticUndefined:
        return "-"
    return json.dumps(value, default=str)


def settings_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(name, type, default, required, secret) for every setting, nested ones dotted."""
    rows: list[tuple[str, str, str, str, str]] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        required = "yes" if field.is_required() else "no"
        if nested is not None:
            optional = type(None) in typing.get_args(field.annotation)
            rows.append(
                (path, "object" + (" or null" if optional else ""), _default(field), required, "")
            )
            rows.extend(settings_rows(nested, f"{path}."))
            continue
        secret = "yes" if _is_secret(field.annotation) else ""
        rows.append((path, _type_name(field.annotation), _default(field), required, secret))
    return rows


def show_type(type_name: str, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        plugin = get_plugin(type_name)
    except UnknownDestinationType as exc:
        print(f"router destinations show: {exc.message}", file=sys.stderr)
        return 2
    print(f"{type_name}: {plugin.summary}", file=out)
    print(f"call types: {', '.join(sorted(plugin.call_types))}", file=out)
    print(
        f"batching: {plugin.default_batch_size} event(s) per batch by default, "
        f"at most {plugin.max_batch_size} (delivery.batch_size)",
        file=out,
    )
    header = ("setting", "type", "default", "required", "secret")
    rows = [header, *settings_rows(plugin.settings_model)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip(), file=out)
    return 0


# ---------------------------------------------------------------- the event tester


def _fail(message: str) -> int:
    print(f"router destinations test: {message}", file=sys.stderr)
    return 2


def _read_event(path: str) -> Event:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    try:
        event = validate(event)
    except InvalidEvent as exc:
        raise ValueError(f"{path}: {exc.code}: {exc.message}") from None
    return stamp(event, now())


def _show(label: str, described: dict[str, Any], out: TextIO) -> None:
    body = described.get("body")
    if isinstance(body, str):
        with contextlib.suppress(ValueError):
            described = {**described, "body": json.loads(body)}
    print(f"{label}:", file=out)
    print(json.dumps(described, indent=2, ensure_ascii=False), file=out)


async def test_destination(
    workspace: Workspace, destination_id: str, event_file: str, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    try:
        destination = workspace.destination_by_id(destination_id)
    except KeyError:
        known = ", ".join(d.id for d in workspace.destinations) or "none"
        return _fail(f"no destination {destination_id!r} in the workspace (known: {known})")
    try:
        event = _read_event(event_file)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        plugin_type = get_plugin(destination.type)
    except UnknownDestinationType as exc:
        return _fail(exc.message)
    if event["type"] not in plugin_type.call_types:
        takes = ", ".join(sorted(plugin_type.call_types))
        return _fail(f"{destination.type} takes no {event['type']} calls (it takes {takes})")
    async with HttpClient() as http:
        try:
            plugin: AnyPlugin = plugin_type(destination, PluginContext(http=http))
            await plugin.start()
        except DestinationError as exc:
            return _fail(exc.message)
        try:
            return await _send_one(plugin, event, out)
        finally:
            await plugin.stop()


async def _send_one(plugin: AnyPlugin, event: Event, out: TextIO) -> int:
    try:
        encoded = plugin.encode([event])
    except DestinationError as exc:
        print(f"result: not sent ({exc.reason}): {plugin.describe_text(exc.message)}", file=out)
        return 1
    if not isinstance(encoded, Encoded):
        encoded = Encoded([encoded])
    for error in encoded.failed.values():
        print(f"result: not sent ({error.reason}): {plugin.describe_text(error.message)}", file=out)
        return 1
    outcome = 0
    for request in encoded.requests:
        if isinstance(plugin, HasEventTester):
            request = plugin.event_tester_request(request)
        _show("request", plugin.describe_request(request), out)
        try:
            response = await plugin.send(request)
        except DestinationError as exc:
            print(
                f"result: no answer ({exc.reason}): {plugin.describe_text(exc.message)}", file=out
            )
            return 1
        _show("response", plugin.describe_response(response), out)
        try:
            refused = plugin.check(request, response)
        except DestinationError as exc:
            verdict = "would retry" if exc.retriable else "refused"
            print(
                f"result: {verdict} ({exc.reason}): {plugin.describe_text(exc.message)}", file=out
            )
            return 1
        for error in refused.values():
            verdict = "would retry" if error.retriable else "refused"
            print(
                f"result: {verdict} ({error.reason}): {plugin.describe_text(error.message)}",
                file=out,
            )
            outcome = 1
    if outcome == 0:
        print("result: delivered", file=out)
    return outcome


def add_parser(commands: Any) -> None:
    """``router destinations ...`` on the CLI's sub-command set."""
    catalog = commands.add_parser(
        "destinations", help="the destination catalog: list, show a type's settings, test"
    )
    sub = catalog.add_subparsers(dest="catalog_command")
    show = sub.add_parser("show", help="a destination type's settings")
    show.add_argument("type", help="a registered destination type (see `router destinations`)")
    tester = sub.add_parser("test", help="send one event to a configured destination")
    tester.add_argument("id", help="destination id in the workspace")
    tester.add_argument("--event", "-e", required=True, help="a JSON file with one event")
    tester.add_argument("--config", "-c", help="workspace YAML (default: $ROUTER_CONFIG)")


def run(args: argparse.Namespace, load: Callable[[argparse.Namespace], Workspace]) -> int:
    """Dispatch ``router destinations [show TYPE | test ID --event FILE]``."""
    command = getattr(args, "catalog_command", None)
    if command == "show":
        return show_type(args.type)
    if command == "test":
        return asyncio.run(test_destination(load(args), args.id, args.event))
    return list_types()
