"""Creating regulations: what ``router privacy`` and the console API write.

A regulation takes effect through two writes, awaited together: the suppression record
(``SUPPRESS`` and ``SUPPRESS_WITH_DELETE`` write one, ``UNSUPPRESS`` a tombstone), which every
processor and agent applies within about a second, and the regulation record, which the
regulation worker picks up for deletions and everyone lists. Only then is it reported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from router.broker.clients import BatchSender, OutRecord
from router.broker.topics import Topics
from router.config import Workspace
from router.privacy.records import (
    REGULATION_TYPES,
    SUPPRESS,
    SUPPRESS_WITH_DELETE,
    UNSUPPRESS,
    DestinationDeletion,
    Regulation,
    Suppression,
    check_user_id,
    new_regulation_id,
)

#: Most user ids one call may name (Segment's API takes 5,000; one regulation each here).
MAX_SUBJECTS = 1000
MAX_REASON = 1024


def new_regulation(
    workspace: Workspace, kind: str, user_id: str, reason: str | None, now: float
) -> Regulation:
    """A regulation as created: a deletion lists every destination of the workspace, pending
    until ``privacy.deletion.delay`` has passed."""
    if kind not in REGULATION_TYPES:
        raise ValueError(f"unknown regulation type {kind!r} (use {', '.join(REGULATION_TYPES)})")
    check_user_id(user_id)
    if reason is not None and len(reason) > MAX_REASON:
        raise ValueError(f"the reason is longer than {MAX_REASON} characters")
    destinations: dict[str, DestinationDeletion] = {}
    if kind == SUPPRESS_WITH_DELETE:
        deletion = workspace.privacy.deletion
        destinations = {
            dest.id: DestinationDeletion(
                type=dest.type,
                max_attempts=deletion.max_attempts,
                next_attempt_at=now + deletion.delay,
            )
            for dest in workspace.destinations
        }
    return Regulation(
        id=new_regulation_id(),
        type=kind,
        user_id=user_id,
        reason=reason,
        created_at=now,
        updated_at=now,
        destinations=destinations,
    )


def records_for(topics: Topics, regulation: Regulation) -> list[OutRecord]:
    """The suppression record (or tombstone) and the regulation record."""
    key = regulation.user_id.encode()
    records: list[OutRecord] = []
    if regulation.type == UNSUPPRESS:
        records.append(OutRecord(topics.suppressions, key, None))  # a tombstone
    elif regulation.type in (SUPPRESS, SUPPRESS_WITH_DELETE):
        suppression = Suppression(
            regulation.user_id, regulation.reason, regulation.created_at, regulation.id
        )
        records.append(OutRecord(topics.suppressions, key, suppression.value()))
    records.append(OutRecord(topics.regulations, regulation.id.encode(), regulation.value()))
    return records


async def submit(
    sender: BatchSender,
    topics: Topics,
    workspace: Workspace,
    kind: str,
    user_ids: Sequence[str],
    reason: str | None = None,
) -> list[Regulation]:
    """Create one regulation per user id and write them; returns them once acknowledged."""
    if not user_ids:
        raise ValueError("name at least one user id")
    if len(user_ids) > MAX_SUBJECTS:
        raise ValueError(f"at most {MAX_SUBJECTS} user ids per request")
    now = time.time()
    regulations = [new_regulation(workspace, kind, user_id, reason, now) for user_id in user_ids]
    records = [record for r in regulations for record in records_for(topics, r)]
    await sender.send(records)
    return regulations
