"""``router privacy``: suppress, unsuppress, delete, and see where regulations stand.

The commands write and read the privacy topics directly (no console needs to run); the
deletions themselves are carried out by the regulation worker of a running ops role
(``router ops`` or ``router run``). Results go to stdout, one line each (or JSON with
``--json``); every error is one line.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import orjson
from rich.console import Console as Terminal
from rich.table import Table

from router.broker.clients import BatchSender, make_producer
from router.broker.topics import ensure_topics, topics_for
from router.config import Workspace
from router.privacy.records import SUPPRESS, SUPPRESS_WITH_DELETE, UNSUPPRESS, Regulation
from router.privacy.state import read_privacy
from router.privacy.submit import submit

KINDS = {"suppress": SUPPRESS, "unsuppress": UNSUPPRESS, "delete": SUPPRESS_WITH_DELETE}


class CommandError(Exception):
    """A one-line message for the user; the command exits with status 1."""


def _when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def privacy_command(workspace: Workspace, args: argparse.Namespace) -> int:
    if args.action in KINDS:
        return await _regulate(workspace, args)
    if args.action == "status":
        return await _status(workspace, args)
    return await _suppressed(workspace, args)


async def _regulate(workspace: Workspace, args: argparse.Namespace) -> int:
    topics = topics_for(workspace.kafka)
    await ensure_topics(workspace.kafka, [topics.suppressions, topics.regulations])
    producer = make_producer(workspace.kafka, role="privacy-cli")
    await producer.start()
    try:
        created = await submit(
            BatchSender(producer),
            topics,
            workspace,
            KINDS[args.action],
            args.user_ids,
            getattr(args, "reason", None),
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    finally:
        await producer.stop()
    if args.json:
        sys.stdout.write(orjson.dumps([r.as_dict() for r in created]).decode() + "\n")
        return 0
    for regulation in created:
        line = f"{regulation.id} {regulation.type} {regulation.user_id}"
        if regulation.deletes:
            line += (
                f": suppressed; deletion at {len(regulation.destinations)} destination(s) "
                "by the ops role's regulation worker (see router privacy status)"
            )
        elif regulation.type == SUPPRESS:
            line += ": suppressed"
        else:
            line += ": no longer suppressed"
        print(line)
    return 0


async def _status(workspace: Workspace, args: argparse.Namespace) -> int:
    _, book = await read_privacy(
        workspace.kafka, topics_for(workspace.kafka), role="privacy-status"
    )
    if args.regulations:
        missing = [r for r in args.regulations if r not in book.regulations]
        if missing:
            raise CommandError(f"no such regulation(s): {', '.join(missing)}")
        chosen = [book.regulations[r] for r in args.regulations]
    else:
        chosen = book.listed(args.user_id)[: max(1, args.limit)]
    if args.json:
        sys.stdout.write(orjson.dumps([r.as_dict() for r in chosen]).decode() + "\n")
        return 0
    terminal = Terminal(highlight=False)
    for regulation in chosen:
        _print_regulation(terminal, regulation)
    if not chosen:
        print("no regulations")
    return 0


def _print_regulation(terminal: Terminal, regulation: Regulation) -> None:
    print(
        f"{regulation.id} {regulation.type} {regulation.user_id}: {regulation.status} "
        f"(created {_when(regulation.created_at)} UTC"
        + (f", reason: {regulation.reason}" if regulation.reason else "")
        + ")"
    )
    if not regulation.destinations:
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("destination", "type", "status", "attempts", "reason", "next attempt (UTC)"):
        table.add_column(column)
    for destination_id, state in sorted(regulation.destinations.items()):
        attempts = f"{state.attempts}/{state.max_attempts}" if state.attempts else "-"
        why = state.reason or ""
        if state.message and state.status == "failed":
            why = f"{why}: {state.message}"
        table.add_row(
            destination_id,
            state.type,
            state.status,
            attempts,
            why or "-",
            _when(state.next_attempt_at) if state.retrying or state.status == "pending" else "-",
        )
    terminal.print(table)


async def _suppressed(workspace: Workspace, args: argparse.Namespace) -> int:
    suppressions, _ = await read_privacy(
        workspace.kafka, topics_for(workspace.kafka), role="privacy-status"
    )
    listed = sorted(suppressions.details.values(), key=lambda s: s.at, reverse=True)
    if args.json:
        sys.stdout.write(orjson.dumps([s.as_dict() for s in listed]).decode() + "\n")
        return 0
    for suppression in listed:
        print(
            f"{suppression.user_id}\tsince {_when(suppression.at)} UTC\t"
            f"{suppression.regulation_id or '-'}\t{suppression.reason or ''}"
        )
    print(f"{len(listed)} user(s) suppressed")
    return 0
