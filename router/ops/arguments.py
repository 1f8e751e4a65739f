"""Arguments of ``router replay`` and ``router dlq`` (kept apart from the commands, so building
the parser imports nothing heavy)."""

from __future__ import annotations

import argparse


def _add_workspace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="workspace YAML (default: $ROUTER_CONFIG)")
    parser.add_argument(
        "--bootstrap",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or the workspace file)",
    )


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    _add_workspace(parser)
    parser.add_argument("--destination", "-d", required=True, help="destination id")
    parser.add_argument(
        "--from",
        dest="since",
        required=True,
        metavar="TIME",
        help="window start: ISO-8601 (2026-11-23T10:00:00Z) or a duration ago (2h)",
    )
    parser.add_argument(
        "--to", dest="until", default="now", metavar="TIME", help="window end (default: now)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be sent; send nothing"
    )


def add_dlq_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="live dead letters, newest first")
    show = actions.add_parser("show", help="letters in full: event, request, response")
    again = actions.add_parser("redrive", help="send chosen letters back for delivery, once")
    for sub in (listing, show, again):
        _add_workspace(sub)
        sub.add_argument("--destination", "-d", required=True, help="destination id")
        sub.add_argument("--json", action="store_true", help="JSON on stdout")
    for sub in (listing, again):
        sub.add_argument("--reason", help="only letters with this reason (http_400 ...)")
        sub.add_argument("--since", metavar="TIME", help="only letters that failed after TIME")
    listing.add_argument("--all", action="store_true", help="also letters already redriven")
    listing.add_argument("--limit", type=int, default=100)
    show.add_argument("letters", nargs="+", metavar="LETTER_ID", help="<partition>:<offset>")
    again.add_argument("letters", nargs="*", metavar="LETTER_ID", help="<partition>:<offset>")
    again.add_argument(
        "--all", action="store_true", help="every live letter (with --reason/--since: those)"
    )
