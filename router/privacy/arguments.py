"""Arguments of ``router privacy`` (apart from the commands, so building the parser imports
nothing heavy)."""

from __future__ import annotations

import argparse


def add_privacy_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    suppress = actions.add_parser(
        "suppress", help="stop every event of these users at the processor (SUPPRESS)"
    )
    unsuppress = actions.add_parser(
        "unsuppress", help="let these users' events through again (UNSUPPRESS)"
    )
    delete = actions.add_parser(
        "delete",
        help="suppress, then delete these users' data everywhere (SUPPRESS_WITH_DELETE)",
    )
    status = actions.add_parser("status", help="regulations and each destination's progress")
    listing = actions.add_parser("suppressed", help="the users suppressed now")
    for sub in (suppress, unsuppress, delete, status, listing):
        sub.add_argument("--config", "-c", help="workspace YAML (default: $ROUTER_CONFIG)")
        sub.add_argument(
            "--bootstrap",
            help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or the workspace)",
        )
        sub.add_argument("--json", action="store_true", help="JSON on stdout")
    for sub in (suppress, unsuppress, delete):
        sub.add_argument(
            "--user-id",
            "-u",
            dest="user_ids",
            action="append",
            required=True,
            metavar="USER_ID",
            help="a userId (repeatable: one regulation each)",
        )
    for sub in (suppress, delete):
        sub.add_argument("--reason", help="why (kept with the regulation, e.g. a ticket number)")
    status.add_argument("regulations", nargs="*", metavar="REGULATION_ID")
    status.add_argument("--user-id", "-u", dest="user_id", help="only this user's regulations")
    status.add_argument("--limit", type=int, default=20, help="newest regulations shown")
