"""``router warehouse``: what a warehouse destination holds, without a SQL client.

    router warehouse sql ID       the DDL the current tables imply (CREATE SCHEMA/TABLE)
    router warehouse stats ID     rows per table and the newest received_at (freshness)
    router warehouse query ID SQL any read-only query, printed as a table

Every command opens the warehouse read-only. A DuckDB file is locked by the router while a
load runs (milliseconds), so a command that finds it locked tries again for a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from destinations.base import InvalidSettings, PluginContext
from destinations.http import HttpClient
from destinations.warehouse import WarehouseDestination
from destinations.warehouse.loader import Warehouse, message_of
from router.config import Workspace

#: How long a command waits for a DuckDB file that a load holds.
LOCK_WAIT = 10.0
T = TypeVar("T")


def add_warehouse_parser(commands: Any) -> None:
    """Add ``warehouse`` and its subcommands to the ``router`` command's subparsers."""
    warehouse = commands.add_parser(
        "warehouse", help="look into a warehouse destination: DDL, freshness, a query"
    )
    actions = warehouse.add_subparsers(dest="warehouse_command", required=True)
    helps = {
        "sql": "print the DDL the current tables imply",
        "stats": "print rows per table and the newest received_at",
        "query": "run a read-only SQL query and print the rows",
    }
    for name, text in helps.items():
        action = actions.add_parser(name, help=text)
        action.add_argument("destination", metavar="ID", help="warehouse destination id")
        action.add_argument("--config", "-c", help="workspace YAML (default: $ROUTER_CONFIG)")
        if name == "query":
            action.add_argument("sql", metavar="SQL")


def run_warehouse(args: argparse.Namespace, workspace: Workspace) -> int:
    """Run ``router warehouse <command>``; one line on stderr for any problem."""
    try:
        plugin = _plugin(workspace, args.destination)
    except LookupError as exc:
        print(f"router warehouse: {exc}", file=sys.stderr)
        return 2
    except InvalidSettings as exc:
        print(f"router warehouse: {exc.message}", file=sys.stderr)
        return 2
    backend = plugin.backend(read_only=True)
    if plugin.settings.backend == "duckdb" and not plugin.path.exists():
        print(
            f"router warehouse: {plugin.path} does not exist yet (nothing loaded)", file=sys.stderr
        )
        return 1
    warehouse = Warehouse(backend, destination_id=plugin.destination.id)
    command = args.warehouse_command
    try:
        return asyncio.run(_run(command, args, plugin, warehouse))
    except Exception as exc:
        if backend.classify(exc) is None:
            raise
        print(f"router warehouse: {backend.describe()}: {message_of(exc)}", file=sys.stderr)
        return 1


def _plugin(workspace: Workspace, destination_id: str) -> WarehouseDestination:
    warehouses = [d.id for d in workspace.destinations if d.type == "warehouse"]
    try:
        destination = workspace.destination_by_id(destination_id)
    except KeyError:
        known = ", ".join(warehouses) or "none"
        raise LookupError(
            f"no destination {destination_id!r} (warehouse destinations: {known})"
        ) from None
    if destination.type != "warehouse":
        raise LookupError(
            f"destination {destination_id!r} is a {destination.type} destination, not a warehouse"
        )
    # The directory the delivery agent lends this destination (its DuckDB file lives there).
    state_dir = Path(workspace.processor.state_dir) / "destinations" / destination.id
    context = PluginContext(http=HttpClient(), state_dir=state_dir)
    return WarehouseDestination(destination, context)


async def _run(
    command: str, args: argparse.Namespace, plugin: WarehouseDestination, warehouse: Warehouse
) -> int:
    await warehouse.start()
    try:
        schemas = plugin.schemas
        if command == "sql":
            statements = await _patiently(plugin, lambda: warehouse.ddl(schemas))
            if not statements:
                print(f"-- no tables in schema {', '.join(schemas)} yet")
            for statement in statements:
                print(statement + ";")
        elif command == "stats":
            stats = await _patiently(plugin, lambda: warehouse.stats(schemas))
            _print_stats(plugin, warehouse, stats)
        else:
            names, rows = await _patiently(plugin, lambda: warehouse.query(args.sql))
            print_table(names, rows)
    finally:
        await warehouse.stop()
    return 0


async def _patiently(plugin: WarehouseDestination, read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, tried again while a load holds the DuckDB file."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            return await read()
        except Exception as exc:
            locked = plugin.settings.backend == "duckdb" and "lock" in str(exc).lower()
            if not locked or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _timestamp(moment: Any) -> str:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return "-" if moment is None else str(moment)


def _print_stats(plugin: WarehouseDestination, warehouse: Warehouse, stats: Sequence[Any]) -> None:
    print(
        f"warehouse {plugin.destination.id}: {warehouse.backend.describe()}, "
        f"schema {', '.join(plugin.schemas)}"
    )
    if not stats:
        print("no tables yet")
        return
    print_table(
        ["table", "rows", "newest received_at"],
        [(str(s.table), s.rows, _timestamp(s.newest)) for s in stats],
    )
    newest = max((s.newest for s in stats if isinstance(s.newest, datetime)), default=None)
    if newest is None:
        print("freshness: no rows yet")
        return
    age = max(0.0, (datetime.now(UTC) - newest).total_seconds())
    print(f"freshness: newest received_at {_timestamp(newest)} ({_age(age)} ago)")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def print_table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Aligned columns, numbers to the right; ``NULL`` for nulls."""
    shown = [
        [
            "NULL"
            if value is None
            else _timestamp(value)
            if isinstance(value, datetime)
            else str(value)
            for value in row
        ]
        for row in rows
    ]
    widths = [len(name) for name in names]
    for row in shown:
        widths = [max(width, len(value)) for width, value in zip(widths, row, strict=True)]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) or row[i] is None for row in rows)
        for i in range(len(names))
    ]

    def line(values: Sequence[str]) -> str:
        cells = [
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(cells).rstrip()

    print(line(list(names)))
    for row in shown:
        print(line(row))
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
