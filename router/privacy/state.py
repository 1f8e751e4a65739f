"""What the privacy topics say, folded in memory: who is suppressed, which regulations exist.

:class:`SuppressionList` is what the hot paths read: ``users`` is a plain ``set`` of user ids,
changed in place as ``privacy.suppressions`` is followed, so a stage holding it needs one set
lookup per event and sees a suppression within a poll (about half a second) of its write.
:class:`RegulationBook` holds every regulation at its latest revision (records older than
what is held are ignored: a writer's own later update may be read before its earlier one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from router.broker.compacted import CompactedTail
from router.broker.topics import Topics, ensure_topics
from router.config import KafkaSettings
from router.privacy.records import (
    UNSUPPRESS,
    Regulation,
    Suppression,
    parse_regulation,
    parse_suppression,
)

logger = logging.getLogger(__name__)


class SuppressionList:
    """Suppressed users, from ``privacy.suppressions``."""

    def __init__(self) -> None:
        #: The user ids; read by the processor and delivery lanes, changed only here.
        self.users: set[str] = set()
        self.details: dict[str, Suppression] = {}
        #: Called with the user ids newly suppressed by each applied poll.
        self.on_suppressed: list[Callable[[set[str]], None]] = []
        self.unreadable = 0

    def __contains__(self, user_id: object) -> bool:
        return user_id in self.users

    def __len__(self) -> int:
        return len(self.users)

    def put(self, user_id: str, suppression: Suppression | None) -> None:
        """What a record says (None: a tombstone), for a writer that need not wait to read
        its own write back."""
        if suppression is None:
            self.users.discard(user_id)
            self.details.pop(user_id, None)
            return
        fresh = user_id not in self.users
        self.users.add(user_id)
        self.details[user_id] = suppression
        if fresh:
            for callback in self.on_suppressed:
                callback({user_id})

    def apply(self, records: Sequence[Any]) -> None:
        added: set[str] = set()
        for record in records:
            try:
                user_id, suppression = parse_suppression(record.key, record.value)
            except ValueError:
                self.unreadable += 1
                continue
            if suppression is None:
                self.users.discard(user_id)
                self.details.pop(user_id, None)
                added.discard(user_id)
            else:
                if user_id not in self.users:
                    added.add(user_id)
                self.users.add(user_id)
                self.details[user_id] = suppression
        if added:
            for callback in self.on_suppressed:
                callback(added)

    def tail(self, kafka: KafkaSettings, topics: Topics, *, role: str) -> CompactedTail:
        return CompactedTail(kafka, topics.suppressions, self.apply, role=f"{role}-suppressions")


class RegulationBook:
    """Every regulation at its latest revision, from ``privacy.regulations``."""

    def __init__(self) -> None:
        self.regulations: dict[str, Regulation] = {}
        #: userId -> the time (UNIX s) of its latest deletion regulation.
        self.deleted: dict[str, float] = {}
        #: Called with the regulations each applied poll changed.
        self.on_change: list[Callable[[list[Regulation]], None]] = []
        self.unreadable = 0

    def apply(self, records: Sequence[Any]) -> None:
        parsed: list[Regulation] = []
        for record in records:
            regulation = parse_regulation(record.value)
            if regulation is None:
                self.unreadable += 1
            else:
                parsed.append(regulation)
        changed = self.add(parsed)
        if changed:
            for callback in self.on_change:
                callback(changed)

    def add(self, regulations: Iterable[Regulation | None]) -> list[Regulation]:
        """Keep each regulation unless a later revision is held; the ones that changed."""
        changed: list[Regulation] = []
        for regulation in regulations:
            if regulation is None:
                continue
            held = self.regulations.get(regulation.id)
            if held is not None and held.revision >= regulation.revision:
                continue
            self.regulations[regulation.id] = regulation
            if regulation.deletes:
                known = self.deleted.get(regulation.user_id)
                if known is None or known < regulation.created_at:
                    self.deleted[regulation.user_id] = regulation.created_at
            changed.append(regulation)
        return changed

    def listed(self, user_id: str | None = None) -> list[Regulation]:
        """Newest first; only ``user_id``'s when given."""
        found = [r for r in self.regulations.values() if user_id is None or r.user_id == user_id]
        return sorted(found, key=lambda r: (r.created_at, r.id), reverse=True)

    def tail(self, kafka: KafkaSettings, topics: Topics, *, role: str) -> CompactedTail:
        return CompactedTail(kafka, topics.regulations, self.apply, role=f"{role}-regulations")


class History:
    """Per user, when their events must not be delivered again (``router replay``): before
    their latest deletion, and while they were suppressed (from each ``SUPPRESS`` or
    ``SUPPRESS_WITH_DELETE`` to the next ``UNSUPPRESS``; open while still suppressed)."""

    def __init__(self, book: RegulationBook) -> None:
        self.deleted = dict(book.deleted)
        self.suppressed: dict[str, list[tuple[float, float]]] = {}
        by_user: dict[str, list[Regulation]] = {}
        for regulation in book.regulations.values():
            by_user.setdefault(regulation.user_id, []).append(regulation)
        for user_id, regulations in by_user.items():
            intervals: list[tuple[float, float]] = []
            start: float | None = None
            for regulation in sorted(regulations, key=lambda r: r.created_at):
                if regulation.type == UNSUPPRESS:
                    if start is not None:
                        intervals.append((start, regulation.created_at))
                    start = None
                elif start is None:
                    start = regulation.created_at
            if start is not None:
                intervals.append((start, float("inf")))
            if intervals:
                self.suppressed[user_id] = intervals

    def __bool__(self) -> bool:
        return bool(self.deleted or self.suppressed)

    def blocked(self, user_id: str, at: float) -> str | None:
        """``deleted``, ``suppressed`` or None for an event of ``user_id`` written at ``at``
        (UNIX seconds)."""
        deleted = self.deleted.get(user_id)
        if deleted is not None and at <= deleted:
            return "deleted"
        for start, end in self.suppressed.get(user_id, ()):
            if start <= at < end:
                return "suppressed"
        return None


async def read_privacy(
    kafka: KafkaSettings, topics: Topics, *, role: str, time_limit: float = 60.0
) -> tuple[SuppressionList, RegulationBook]:
    """Both topics read to their end once (for command-line tools), then closed. They are
    created first when missing (a cluster no role has started on yet)."""
    await ensure_topics(kafka, [topics.suppressions, topics.regulations])
    suppressions = SuppressionList()
    book = RegulationBook()
    for tail in (
        suppressions.tail(kafka, topics, role=role),
        book.tail(kafka, topics, role=role),
    ):
        await tail.start(time_limit=time_limit)
        await tail.stop()
    return suppressions, book
