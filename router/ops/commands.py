"""``router replay`` and ``router dlq``: the command-line side of replay and dead letters.

Both read Kafka directly with the workspace's settings (no console needs to run). Progress
bars and tables go to stderr through rich; results go to stdout as one line each (or JSON
with ``--json``), so scripts can read them. Every error is one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console as Terminal
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from router.broker.clients import BatchSender, make_producer
from router.broker.topics import topics_for
from router.config import Workspace
from router.ops import store as queries
from router.ops.console import parse_letter_id
from router.ops.deadletters import load_dead_letters, redrive
from router.ops.reading import InvalidMoment, parse_moment, to_ms
from router.ops.replay import ReplayError, find_window, replay
from router.privacy.state import read_privacy


class CommandError(Exception):
    """A one-line message for the user; the command exits with status 1."""


# ---------------------------------------------------------------- output


def _terminal() -> Terminal:
    return Terminal(stderr=True, highlight=False)


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=_terminal(), transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _moment(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_moment(text)
    except InvalidMoment as exc:
        raise CommandError(f"{name}: {exc}") from None


def _destination(workspace: Workspace, destination_id: str) -> None:
    if destination_id not in {d.id for d in workspace.destinations}:
        known = ", ".join(d.id for d in workspace.destinations) or "none"
        raise CommandError(f"no destination {destination_id!r} (known: {known})")


# ---------------------------------------------------------------- replay


async def replay_command(workspace: Workspace, args: argparse.Namespace) -> int:
    since = _moment(args.since, "--from")
    until = _moment(args.until, "--to")
    assert since is not None and until is not None
    terminal = _terminal()
    terminal.print(
        f"replay to [bold]{args.destination}[/]: events.raw from {since:%Y-%m-%d %H:%M:%S} "
        f"to {until:%Y-%m-%d %H:%M:%S} UTC"
    )
    try:
        with _progress("finding the window", None) as advance:
            window = await find_window(
                workspace, args.destination, to_ms(since), to_ms(until), progress=advance
            )
        print(f"{window.records} event(s) in the window ({len(window.ranges)} partition(s))")
        if window.records == 0:
            return 0
        label = "counting" if args.dry_run else "replaying"
        with _progress(label, window.records) as advance:
            result = await replay(workspace, window, dry_run=args.dry_run, progress=advance)
    except ReplayError as exc:
        raise CommandError(str(exc)) from None
    target = topics_for(workspace.kafka).destination(args.destination)
    verb = "would send" if args.dry_run else "sent"
    reasons = ", ".join(f"{reason} {count}" for reason, count in result.not_sent.most_common())
    print(
        f"{verb} {result.sent} event(s) to {target}"
        + (f"; not for this destination: {reasons}" if reasons else "")
    )
    return 0


# ---------------------------------------------------------------- dead letters


async def dlq_command(workspace: Workspace, args: argparse.Namespace) -> int:
    _destination(workspace, args.destination)
    topics = topics_for(workspace.kafka)
    since = _moment(getattr(args, "since", None), "--since")
    # Letters of users deleted by a privacy regulation are never listed or redriven.
    _, book = await read_privacy(workspace.kafka, topics, role="dlq")
    with _progress(f"reading {topics.dead_letter(args.destination)}", None) as advance:
        store = await load_dead_letters(
            workspace.kafka,
            topics,
            args.destination,
            progress=advance,
            forgotten=set(book.deleted),
        )
    try:
        if args.action == "list":
            return await _list(store, args, since)
        if args.action == "show":
            return await _show(store, args)
        return await _redrive(workspace, store, args, since)
    finally:
        await store.close()


async def _list(store: queries.Store, args: argparse.Namespace, since: datetime | None) -> int:
    found = await store.call(
        lambda c: queries.list_letters(
            c,
            args.destination,
            reason=args.reason,
            since=since.timestamp() if since else None,
            live=not args.all,
            limit=max(1, args.limit),
        )
    )
    if args.json:
        sys.stdout.write(orjson.dumps(found).decode() + "\n")
        return 0
    table = Table(title=f"dead letters of {args.destination}: {found['total']} live")
    for column in ("id", "failed at (UTC)", "reason", "status", "attempts", "messageId", "event"):
        table.add_column(column)
    for letter in found["letters"]:
        table.add_row(
            letter["id"] + ("" if letter["live"] else " (redriven)"),
            _when(letter["failedAt"]),
            str(letter["reason"]),
            str(letter["status"] or "-"),
            str(letter["attempts"] or "-"),
            str(letter["messageId"] or "-"),
            " ".join(str(x) for x in (letter["type"], letter["event"]) if x),
        )
    Terminal(highlight=False).print(table)
    by_reason = ", ".join(f"{reason} {count}" for reason, count in found["reasons"].items())
    print(f"{found['total']} letter(s)" + (f": {by_reason}" if by_reason else ""))
    return 0


async def _show(store: queries.Store, args: argparse.Namespace) -> int:
    try:
        locations = [parse_letter_id(letter) for letter in args.letters]
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    found = await store.call(queries.letters_by_location, args.destination, locations)
    if len(found) < len(locations):
        known = {summary["id"] for summary, _ in found}
        missing = [letter for letter in args.letters if letter not in known]
        raise CommandError(f"no such dead letter(s) of {args.destination}: {', '.join(missing)}")
    letters = [{**summary, "letter": orjson.loads(body)} for summary, body in found]
    if args.json:
        sys.stdout.write(orjson.dumps(letters).decode() + "\n")
        return 0
    for letter in letters:
        body = letter["letter"]
        print(
            f"letter {letter['id']} of {args.destination}: {letter['reason']} after "
            f"{letter['attempts']} attempt(s), failed {_when(letter['failedAt'])} UTC"
            + ("" if letter["live"] else f", redriven {_when(letter['redrivenAt'])} UTC")
        )
        for part in ("event", "request", "response", "error"):
            print(
                f"  {part}: "
                + orjson.dumps(body.get(part), option=orjson.OPT_INDENT_2)
                .decode()
                .replace("\n", "\n  ")
            )
    return 0


async def _redrive(
    workspace: Workspace,
    store: queries.Store,
    args: argparse.Namespace,
    since: datetime | None,
) -> int:
    if not (args.letters or args.reason or since or args.all):
        raise CommandError("choose letters: LETTER_ID ..., --reason R, --since T or --all")
    if args.letters:
        try:
            locations = [parse_letter_id(letter) for letter in args.letters]
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        chosen = await store.call(queries.letters_by_location, args.destination, locations)
        if len(chosen) < len(locations):
            known = {summary["id"] for summary, _ in chosen}
            missing = [letter for letter in args.letters if letter not in known]
            raise CommandError(f"no such dead letter(s): {', '.join(missing)}")
    else:
        chosen = await store.call(
            lambda c: queries.select_letters(
                c,
                args.destination,
                reason=args.reason,
                since=since.timestamp() if since else None,
            )
        )
    producer = make_producer(workspace.kafka, role="dlq-redrive")
    await producer.start()
    try:
        with _progress(f"redriving to {args.destination}", len(chosen)) as advance:
            result = await redrive(
                BatchSender(producer),
                topics_for(workspace.kafka),
                args.destination,
                chosen,
                progress=advance,
            )
    finally:
        await producer.stop()
    if args.json:
        sys.stdout.write(orjson.dumps(result.as_dict()).decode() + "\n")
        return 0
    target = topics_for(workspace.kafka).destination(args.destination)
    print(f"redriven {result.sent} of {result.selected} letter(s) to {target}")
    for letter_id, why in result.skipped:
        print(f"  skipped {letter_id}: {why}")
    return 0
