"""The console's folded state: one SQLite database under the state directory.

Everything the console folds from Kafka (``delivery.status``, the dead-letter topics,
``events.violations``) is written here in one transaction per polled batch, together with
the offsets that batch ends at, so after a restart the console resumes exactly where its
state ends: nothing counted twice, nothing missed. Each console process folds every
partition itself (no consumer group), so any number of agent processes feed it and any
number of console replicas agree.

Folding is idempotent per event outcome, on (messageId, destination, attempt, outcome):
after an agent crash a request may be sent again and its outcome published twice; the
second is recorded as seen and not counted. The same key means a replayed event that was
already delivered is not counted as delivered twice ("delivered" counts events, not
requests). Events without a messageId (records that were not JSON events) are counted
every time.

Tables (times are UNIX seconds; minutes are ``floor(at / 60)``):

- ``outcomes``: every event outcome seen (the per-event history and the idempotency key);
- ``latest``: per (destination, messageId) the newest outcome: ``retry`` there means the
  event is waiting in the retry topic (the retry backlog);
- ``minutes`` / ``reasons``: per destination and minute, events delivered, retried and
  dead-lettered, the latency histogram (the agents' Prometheus buckets) and failures per
  reason: every window and trend is a sum over these;
- ``samples``: the latest few failures per (destination, reason) with event, request and
  response;
- ``letters`` / ``redriven``: dead letters as read from ``dest.<id>.dlq`` and the ones
  redriven (a letter is live until redriven);
- ``violations`` / ``violation_samples``: tracking-plan violations per source and plan.

Everything older than ``ops.retention`` is deleted (live dead letters are kept).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson

from router.ops.status import HISTOGRAM_SIZE, StatusRecord, bucket_of, quantile

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
#: Failures kept per (destination, reason), and violations per (source, event, type).
SAMPLES_KEPT: Final = 5
#: SQLite's limit on ``?`` placeholders per statement is 32766; stay far below.
_CHUNK: Final = 500
_HISTOGRAM_COLUMNS: Final = tuple(f"h{i}" for i in range(HISTOGRAM_SIZE))

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offsets(
    topic TEXT NOT NULL, partition INTEGER NOT NULL, next INTEGER NOT NULL,
    PRIMARY KEY(topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outcomes(
    message_id TEXT NOT NULL, destination TEXT NOT NULL, attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL, at REAL NOT NULL, reason TEXT, status INTEGER, latency REAL,
    PRIMARY KEY(message_id, destination, attempt, outcome)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outcomes_by_time ON outcomes(at);
CREATE TABLE IF NOT EXISTS latest(
    destination TEXT NOT NULL, message_id TEXT NOT NULL, outcome TEXT NOT NULL,
    attempt INTEGER NOT NULL, at REAL NOT NULL, reason TEXT,
    PRIMARY KEY(destination, message_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS latest_by_state ON latest(destination, outcome, at);
CREATE TABLE IF NOT EXISTS minutes(
    destination TEXT NOT NULL, minute INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0, retried INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _HISTOGRAM_COLUMNS)},
    PRIMARY KEY(destination, minute)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reasons(
    destination TEXT NOT NULL, minute INTEGER NOT NULL, reason TEXT NOT NULL,
    outcome TEXT NOT NULL, events INTEGER NOT NULL,
    PRIMARY KEY(destination, minute, reason, outcome)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS samples(
    id INTEGER PRIMARY KEY, destination TEXT NOT NULL, reason TEXT NOT NULL,
    at REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS samples_by_reason ON samples(destination, reason, at);
CREATE TABLE IF NOT EXISTS letters(
    destination TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    message_id TEXT, source_id TEXT, reason TEXT, attempts INTEGER, failed_at REAL NOT NULL,
    status INTEGER, event_type TEXT, event_name TEXT, body TEXT NOT NULL,
    PRIMARY KEY(destination, partition, "offset")) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS letters_by_message ON letters(message_id);
CREATE INDEX IF NOT EXISTS letters_by_time ON letters(destination, failed_at);
CREATE TABLE IF NOT EXISTS redriven(
    destination TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    at REAL NOT NULL, PRIMARY KEY(destination, partition, "offset")) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS violations(
    source TEXT NOT NULL, plan TEXT NOT NULL, message_id TEXT NOT NULL,
    violation_type TEXT NOT NULL, field TEXT NOT NULL, event_type TEXT, event_name TEXT,
    description TEXT, at REAL NOT NULL, blocked INTEGER NOT NULL,
    PRIMARY KEY(source, message_id, violation_type, field)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS violations_by_time ON violations(source, at);
CREATE TABLE IF NOT EXISTS violation_samples(
    id INTEGER PRIMARY KEY, source TEXT NOT NULL, plan TEXT NOT NULL, event_name TEXT,
    violation_type TEXT NOT NULL, at REAL NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS violation_samples_by_group
    ON violation_samples(source, plan, event_name, violation_type, at);
"""


class StoreError(RuntimeError):
    """The state database cannot be used (another version, a broken file)."""


# ---------------------------------------------------------------- what is folded


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter of ``dest.<id>.dlq`` (``router.delivery.records`` specifies it)."""

    destination: str
    partition: int
    offset: int
    message_id: str | None
    source_id: str | None
    reason: str | None
    attempts: int | None
    failed_at: float
    status: int | None
    event_type: str | None
    event_name: str | None
    body: bytes
    #: The event's userId (privacy deletion leaves a deleted user's letters out).
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Violation:
    source: str
    plan: str
    message_id: str
    violation_type: str
    field: str
    description: str
    event_type: str | None
    event_name: str | None
    at: float
    blocked: bool
    #: The violating event, after the source's middleware (None for forwarded violations).
    event: dict[str, Any] | None = None


@dataclass(slots=True)
class Batch:
    """What one poll brought, parsed; folded in one transaction with ``offsets``."""

    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    statuses: list[StatusRecord] = field(default_factory=list)
    letters: list[Letter] = field(default_factory=list)
    #: (destination, partition, offset, at) of letters a redrive sent back for delivery.
    redrives: list[tuple[str, int, int, float]] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Folded:
    """What a batch changed, for live views and gauges."""

    #: (messageId, destination, outcome, attempt, reason, status, at) of new outcomes.
    outcomes: list[tuple[str, str, str, int, str | None, int | None, float]]
    destinations: set[str]


# ---------------------------------------------------------------- the store


def _minute(at: float) -> int:
    return math.floor(at / 60)


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


class Store:
    """The database and the one thread that uses it (SQLite connections are not shared).

    ``await store.call(fn, *args)`` runs ``fn(connection, *args)`` on that thread, so folding
    and queries never block the event loop and never run at the same time.
    """

    def __init__(self, path: Path | None, *, retention: float) -> None:
        """``path`` None: in memory (for command-line tools)."""
        self.path = path
        self.retention = retention
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ops-store")
        self._connection: sqlite3.Connection | None = None

    # ------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        where = ":memory:" if self.path is None else str(self.path)
        connection = sqlite3.connect(where, check_same_thread=False, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
            row = connection.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                connection.execute(
                    "INSERT INTO meta(key, value) VALUES('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} holds console state of version {row[0]}, this router "
                    f"writes version {SCHEMA_VERSION}: move the file away to rebuild it"
                )
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise StoreError(f"{self.path}: {exc}") from exc
        self._connection = connection

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def open(self) -> None:
        await self.call_plain(self._open)

    async def close(self) -> None:
        await self.call_plain(self._close)
        self._executor.shutdown(wait=True)

    async def call_plain(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            if self._connection is None:
                raise StoreError("the console store is closed")
            return fn(self._connection, *args)

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    # ------------------------------------------------------------ offsets

    @staticmethod
    def offsets(connection: sqlite3.Connection) -> dict[tuple[str, int], int]:
        rows = connection.execute("SELECT topic, partition, next FROM offsets").fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    # ------------------------------------------------------------ folding

    def fold(self, connection: sqlite3.Connection, batch: Batch) -> Folded:
        """Fold one batch and its offsets atomically."""
        connection.execute("BEGIN")
        try:
            outcomes = _fold_statuses(connection, batch.statuses)
            _fold_letters(connection, batch.letters, batch.redrives)
            _fold_violations(connection, batch.violations)
            connection.executemany(
                "INSERT INTO offsets(topic, partition, next) VALUES(?, ?, ?) "
                "ON CONFLICT(topic, partition) DO UPDATE SET next = excluded.next",
                [
                    (topic, partition, offset)
                    for (topic, partition), offset in batch.offsets.items()
                ],
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        touched = {s.destination for s in batch.statuses}
        touched.update(letter.destination for letter in batch.letters)
        touched.update(redrive[0] for redrive in batch.redrives)
        return Folded(outcomes, touched)

    def purge(self, connection: sqlite3.Connection, now: float | None = None) -> None:
        """Delete what is older than the retention (live dead letters stay)."""
        cutoff = (now if now is not None else time.time()) - self.retention
        minute = _minute(cutoff)
        connection.execute("BEGIN")
        try:
            connection.execute("DELETE FROM outcomes WHERE at < ?", (cutoff,))
            connection.execute("DELETE FROM latest WHERE at < ?", (cutoff,))
            connection.execute("DELETE FROM minutes WHERE minute < ?", (minute,))
            connection.execute("DELETE FROM reasons WHERE minute < ?", (minute,))
            connection.execute("DELETE FROM samples WHERE at < ?", (cutoff,))
            connection.execute("DELETE FROM violations WHERE at < ?", (cutoff,))
            connection.execute("DELETE FROM violation_samples WHERE at < ?", (cutoff,))
            connection.execute(
                'DELETE FROM letters WHERE (destination, partition, "offset") IN '
                '(SELECT destination, partition, "offset" FROM redriven WHERE at < ?)',
                (cutoff,),
            )
            connection.execute("DELETE FROM redriven WHERE at < ?", (cutoff,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


def _fold_statuses(
    connection: sqlite3.Connection, records: Sequence[StatusRecord]
) -> list[tuple[str, str, str, int, str | None, int | None, float]]:
    if not records:
        return []
    keyed: dict[tuple[str, str, int, str], tuple[StatusRecord, float | None]] = {}
    counted: list[tuple[StatusRecord, float | None]] = []
    for record in records:
        for event in record.events:
            if event.message_id is None:
                counted.append((record, event.latency))
                continue
            key = (event.message_id, record.destination, event.attempt, record.outcome)
            keyed.setdefault(key, (record, event.latency))
    seen: set[tuple[str, str, int, str]] = set()
    ids = sorted({key[0] for key in keyed})
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        seen.update(
            connection.execute(
                "SELECT message_id, destination, attempt, outcome FROM outcomes "
                f"WHERE message_id IN ({_placeholders(len(chunk))})",
                chunk,
            ).fetchall()
        )
    fresh = [(key, value) for key, value in keyed.items() if key not in seen]
    connection.executemany(
        "INSERT INTO outcomes(message_id, destination, attempt, outcome, at, reason, status, "
        "latency) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (mid, dest, attempt, outcome, record.at, record.reason, record.status, latency)
            for (mid, dest, attempt, outcome), (record, latency) in fresh
        ],
    )
    # The newest outcome per event wins, by time: attempts restart at 1 when a dead letter
    # is redriven, so the attempt number alone cannot order them.
    connection.executemany(
        "INSERT INTO latest(destination, message_id, outcome, attempt, at, reason) "
        "VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(destination, message_id) DO UPDATE SET "
        "outcome = excluded.outcome, attempt = excluded.attempt, at = excluded.at, "
        "reason = excluded.reason WHERE excluded.at >= latest.at",
        [
            (dest, mid, outcome, attempt, record.at, record.reason)
            for (mid, dest, attempt, outcome), (record, _) in keyed.items()
        ],
    )
    # Counted: fresh keyed outcomes and every outcome without a messageId.
    totals: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0] * (3 + HISTOGRAM_SIZE))
    failures: dict[tuple[str, int, str, str], int] = defaultdict(int)
    for record, latency in [value for _, value in fresh] + counted:
        row = totals[(record.destination, _minute(record.at))]
        if record.outcome == "delivered":
            row[0] += 1
            if latency is not None:
                row[3 + bucket_of(max(0.0, latency))] += 1
        else:
            row[1 if record.outcome == "retry" else 2] += 1
            reason = record.reason or "unknown"
            failures[(record.destination, _minute(record.at), reason, record.outcome)] += 1
    columns = ("delivered", "retried", "dead", *_HISTOGRAM_COLUMNS)
    connection.executemany(
        f"INSERT INTO minutes(destination, minute, {', '.join(columns)}) "
        f"VALUES(?, ?, {_placeholders(len(columns))}) ON CONFLICT(destination, minute) "
        f"DO UPDATE SET {', '.join(f'{c} = {c} + excluded.{c}' for c in columns)}",
        [(dest, minute, *values) for (dest, minute), values in totals.items()],
    )
    connection.executemany(
        "INSERT INTO reasons(destination, minute, reason, outcome, events) VALUES(?, ?, ?, ?, ?) "
        "ON CONFLICT(destination, minute, reason, outcome) DO UPDATE SET "
        "events = events + excluded.events",
        [(*key, count) for key, count in failures.items()],
    )
    _keep_samples(connection, records)
    return [
        (mid, dest, outcome, attempt, record.reason, record.status, record.at)
        for (mid, dest, attempt, outcome), (record, _) in fresh
    ]


def _keep_samples(connection: sqlite3.Connection, records: Sequence[StatusRecord]) -> None:
    newest: dict[tuple[str, str], StatusRecord] = {}
    for record in records:
        if record.outcome == "delivered" or record.error is None:
            continue
        key = (record.destination, record.reason or "unknown")
        known = newest.get(key)
        if known is None or record.at >= known.at:
            newest[key] = record
    for (destination, reason), record in newest.items():
        error = record.error or {}
        ids = [e.message_id for e in record.events]
        sample = {
            "at": record.at,
            "outcome": record.outcome,
            "reason": reason,
            "status": record.status,
            "duration": record.duration,
            "message": error.get("message"),
            "retriable": error.get("retriable"),
            "events": len(record.events),
            "messageIds": ids[:20],
            "event": error.get("event"),
            "request": error.get("request"),
            "response": error.get("response"),
        }
        connection.execute(
            "INSERT INTO samples(destination, reason, at, body) VALUES(?, ?, ?, ?)",
            (destination, reason, record.at, orjson.dumps(sample).decode()),
        )
        connection.execute(
            "DELETE FROM samples WHERE destination = ? AND reason = ? AND id NOT IN "
            "(SELECT id FROM samples WHERE destination = ? AND reason = ? "
            "ORDER BY at DESC, id DESC LIMIT ?)",
            (destination, reason, destination, reason, SAMPLES_KEPT),
        )


def _fold_letters(
    connection: sqlite3.Connection,
    letters: Sequence[Letter],
    redrives: Sequence[tuple[str, int, int, float]],
) -> None:
    connection.executemany(
        'INSERT OR IGNORE INTO letters(destination, partition, "offset", message_id, source_id, '
        "reason, attempts, failed_at, status, event_type, event_name, body) "
        "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                x.destination,
                x.partition,
                x.offset,
                x.message_id,
                x.source_id,
                x.reason,
                x.attempts,
                x.failed_at,
                x.status,
                x.event_type,
                x.event_name,
                x.body.decode("utf-8", "replace"),
            )
            for x in letters
        ],
    )
    connection.executemany(
        'INSERT OR IGNORE INTO redriven(destination, partition, "offset", at) VALUES(?, ?, ?, ?)',
        list(redrives),
    )


def _fold_violations(connection: sqlite3.Connection, violations: Sequence[Violation]) -> None:
    if not violations:
        return
    connection.executemany(
        "INSERT INTO violations(source, plan, message_id, violation_type, field, event_type, "
        "event_name, description, at, blocked) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(source, message_id, violation_type, field) DO UPDATE SET "
        "blocked = max(blocked, excluded.blocked)",
        [
            (
                v.source,
                v.plan,
                v.message_id,
                v.violation_type,
                v.field,
                v.event_type,
                v.event_name,
                v.description,
                v.at,
                int(v.blocked),
            )
            for v in violations
        ],
    )
    groups: dict[tuple[str, str, str | None, str], Violation] = {}
    for violation in violations:
        key = (violation.source, violation.plan, violation.event_name, violation.violation_type)
        known = groups.get(key)
        # Prefer a sample that shows the event (blocked records carry it).
        if known is None or (violation.event is not None) >= (known.event is not None):
            groups[key] = violation
    for (source, plan, name, kind), violation in groups.items():
        body = {
            "at": violation.at,
            "messageId": violation.message_id,
            "field": violation.field,
            "description": violation.description,
            "blocked": violation.blocked,
            "event": violation.event,
        }
        connection.execute(
            "INSERT INTO violation_samples(source, plan, event_name, violation_type, at, body) "
            "VALUES(?, ?, ?, ?, ?, ?)",
            (source, plan, name, kind, violation.at, orjson.dumps(body).decode()),
        )
        connection.execute(
            "DELETE FROM violation_samples WHERE source = ? AND plan = ? "
            "AND event_name IS ? AND violation_type = ? AND id NOT IN "
            "(SELECT id FROM violation_samples WHERE source = ? AND plan = ? "
            "AND event_name IS ? AND violation_type = ? ORDER BY at DESC, id DESC LIMIT ?)",
            (source, plan, name, kind, source, plan, name, kind, SAMPLES_KEPT),
        )


# ---------------------------------------------------------------- privacy


def forget_users(connection: sqlite3.Connection, user_ids: Sequence[str]) -> dict[str, int]:
    """Privacy deletion: remove the users' dead letters (by their event's ``userId``) and
    every failure or violation sample that mentions them; rows removed per table.

    Letters are matched exactly (another user's letter must stay redrivable); samples, which
    only illustrate, go when their text holds the user id as a JSON string anywhere.
    """
    removed = {"letters": 0, "samples": 0, "violation_samples": 0}
    if not user_ids:
        return removed
    connection.execute("BEGIN")
    try:
        for chunk in _chunks(sorted(set(user_ids))):
            cursor = connection.execute(
                "DELETE FROM letters WHERE CAST(json_extract(body, '$.event.userId') AS TEXT) "
                f"IN ({_placeholders(len(chunk))})",
                chunk,
            )
            removed["letters"] += cursor.rowcount
        for user_id in set(user_ids):
            quoted = orjson.dumps(user_id).decode()
            for table in ("samples", "violation_samples"):
                cursor = connection.execute(
                    f"DELETE FROM {table} WHERE instr(body, ?) > 0",
                    (quoted,),
                )
                removed[table] += cursor.rowcount
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return removed


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])


# ---------------------------------------------------------------- queries


def step_for(window: float) -> int:
    """Seconds per trend interval: about 30 to 60 points whatever the window."""
    for step in (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600):
        if window / step <= 60:
            return step
    return 12 * 3600


def _histogram(row: Iterable[Any]) -> list[int]:
    return [int(value or 0) for value in row]


def delivery_view(
    connection: sqlite3.Connection, destination: str, since: float, until: float
) -> dict[str, Any]:
    """Event Delivery for one destination over [since, until]: see the API docs."""
    first, last = _minute(since), _minute(until)
    sums = connection.execute(
        f"SELECT sum(delivered), sum(retried), sum(dead), "
        f"{', '.join(f'sum({c})' for c in _HISTOGRAM_COLUMNS)} "
        "FROM minutes WHERE destination = ? AND minute BETWEEN ? AND ?",
        (destination, first, last),
    ).fetchone()
    delivered, retried, dead = (int(v or 0) for v in sums[:3])
    histogram = _histogram(sums[3:])
    retrying = connection.execute(
        "SELECT count(*) FROM latest WHERE destination = ? AND outcome = 'retry' AND at >= ?",
        (destination, since),
    ).fetchone()[0]
    backlog = retry_backlog(connection, destination)
    step = step_for(until - since)
    per = max(1, step // 60)
    trend_rows = connection.execute(
        f"SELECT minute / ?, sum(delivered), sum(retried), sum(dead), "
        f"{', '.join(f'sum({c})' for c in _HISTOGRAM_COLUMNS)} FROM minutes "
        "WHERE destination = ? AND minute BETWEEN ? AND ? GROUP BY minute / ?",
        (per, destination, first, last, per),
    ).fetchall()
    by_slot = {int(row[0]): row for row in trend_rows}
    trend = []
    for slot in range(first // per, last // per + 1):
        row = by_slot.get(slot)
        counts = _histogram(row[4:]) if row else [0] * HISTOGRAM_SIZE
        trend.append(
            {
                "at": slot * per * 60,
                "delivered": int(row[1] or 0) if row else 0,
                "retried": int(row[2] or 0) if row else 0,
                "dead_lettered": int(row[3] or 0) if row else 0,
                "p95_seconds": quantile(0.95, counts),
            }
        )
    return {
        "destination": destination,
        "since": since,
        "until": until,
        "delivered": delivered,
        "not_delivered": dead + retrying,
        "dead_lettered": dead,
        "retrying": retrying,
        "retried": retried,
        "retry_backlog": backlog,
        "dlq_backlog": dlq_backlog(connection, destination),
        "p50_seconds": quantile(0.5, histogram),
        "p95_seconds": quantile(0.95, histogram),
        "histogram": histogram,
        "errors": errors_view(connection, destination, first, last),
        "step_seconds": per * 60,
        "trend": trend,
    }


def errors_view(
    connection: sqlite3.Connection, destination: str, first_minute: int, last_minute: int
) -> list[dict[str, Any]]:
    rows = connection.execute(
        "SELECT reason, outcome, sum(events), max(minute) FROM reasons "
        "WHERE destination = ? AND minute BETWEEN ? AND ? GROUP BY reason, outcome",
        (destination, first_minute, last_minute),
    ).fetchall()
    groups: dict[str, dict[str, Any]] = {}
    for reason, outcome, events, minute in rows:
        group = groups.setdefault(
            reason, {"reason": reason, "events": 0, "retried": 0, "dead_lettered": 0, "last": 0}
        )
        group["events"] += int(events)
        group["retried" if outcome == "retry" else "dead_lettered"] += int(events)
        group["last"] = max(group["last"], int(minute) * 60)
    for reason, group in groups.items():
        group["samples"] = [
            orjson.loads(body)
            for (body,) in connection.execute(
                "SELECT body FROM samples WHERE destination = ? AND reason = ? "
                "ORDER BY at DESC, id DESC LIMIT 3",
                (destination, reason),
            )
        ]
    return sorted(groups.values(), key=lambda g: (-g["events"], g["reason"]))


def retry_backlog(connection: sqlite3.Connection, destination: str) -> int:
    row = connection.execute(
        "SELECT count(*) FROM latest WHERE destination = ? AND outcome = 'retry'", (destination,)
    ).fetchone()
    return int(row[0])


def dlq_backlog(connection: sqlite3.Connection, destination: str) -> int:
    row = connection.execute(
        "SELECT count(*) FROM letters l WHERE l.destination = ? AND NOT EXISTS (SELECT 1 FROM "
        "redriven r WHERE r.destination = l.destination AND r.partition = l.partition AND "
        'r."offset" = l."offset")',
        (destination,),
    ).fetchone()
    return int(row[0])


def overview(
    connection: sqlite3.Connection, destinations: Sequence[str], since: float, until: float
) -> dict[str, dict[str, Any]]:
    """delivered / dead-lettered / retrying / P95 for every destination, in a few queries."""
    first, last = _minute(since), _minute(until)
    result: dict[str, dict[str, Any]] = {
        d: {
            "delivered": 0,
            "dead_lettered": 0,
            "retried": 0,
            "retrying": 0,
            "not_delivered": 0,
            "p95_seconds": None,
            "dlq_backlog": 0,
            "retry_backlog": 0,
        }
        for d in destinations
    }
    for row in connection.execute(
        f"SELECT destination, sum(delivered), sum(retried), sum(dead), "
        f"{', '.join(f'sum({c})' for c in _HISTOGRAM_COLUMNS)} FROM minutes "
        "WHERE minute BETWEEN ? AND ? GROUP BY destination",
        (first, last),
    ):
        entry = result.get(row[0])
        if entry is None:
            continue
        entry["delivered"] = int(row[1] or 0)
        entry["retried"] = int(row[2] or 0)
        entry["dead_lettered"] = int(row[3] or 0)
        entry["p95_seconds"] = quantile(0.95, _histogram(row[4:]))
    for destination, retrying in connection.execute(
        "SELECT destination, count(*) FROM latest WHERE outcome = 'retry' AND at >= ? "
        "GROUP BY destination",
        (since,),
    ):
        if destination in result:
            result[destination]["retrying"] = int(retrying)
    for destination, backlog in connection.execute(
        "SELECT destination, count(*) FROM latest WHERE outcome = 'retry' GROUP BY destination"
    ):
        if destination in result:
            result[destination]["retry_backlog"] = int(backlog)
    for destination, letters in live_letter_counts(connection).items():
        if destination in result:
            result[destination]["dlq_backlog"] = letters
    for entry in result.values():
        entry["not_delivered"] = entry["dead_lettered"] + entry["retrying"]
    return result


def live_letter_counts(connection: sqlite3.Connection) -> dict[str, int]:
    rows = connection.execute(
        "SELECT l.destination, count(*) FROM letters l WHERE NOT EXISTS (SELECT 1 FROM "
        "redriven r WHERE r.destination = l.destination AND r.partition = l.partition AND "
        'r."offset" = l."offset") GROUP BY l.destination'
    ).fetchall()
    return {destination: int(count) for destination, count in rows}


def retry_backlogs(connection: sqlite3.Connection) -> dict[str, int]:
    rows = connection.execute(
        "SELECT destination, count(*) FROM latest WHERE outcome = 'retry' GROUP BY destination"
    ).fetchall()
    return {destination: int(count) for destination, count in rows}


def event_history(connection: sqlite3.Connection, message_id: str) -> dict[str, Any]:
    """Every outcome and dead letter of one event, per destination."""
    outcomes = connection.execute(
        "SELECT destination, attempt, outcome, at, reason, status, latency FROM outcomes "
        "WHERE message_id = ? ORDER BY at, attempt",
        (message_id,),
    ).fetchall()
    letters = connection.execute(
        'SELECT l.destination, l.partition, l."offset", l.reason, l.failed_at, r.at FROM '
        "letters l LEFT JOIN redriven r ON r.destination = l.destination AND "
        'r.partition = l.partition AND r."offset" = l."offset" WHERE l.message_id = ? '
        "ORDER BY l.failed_at",
        (message_id,),
    ).fetchall()
    result: dict[str, Any] = {}
    for destination, attempt, outcome, at, reason, status, latency in outcomes:
        entry = result.setdefault(destination, {"attempts": [], "deadLetters": []})
        entry["attempts"].append(
            {
                "attempt": attempt,
                "outcome": outcome,
                "at": at,
                "reason": reason,
                "status": status,
                "latency_seconds": latency,
            }
        )
    for destination, partition, offset, reason, failed_at, redriven_at in letters:
        entry = result.setdefault(destination, {"attempts": [], "deadLetters": []})
        entry["deadLetters"].append(
            {
                "partition": partition,
                "offset": offset,
                "id": f"{partition}:{offset}",
                "reason": reason,
                "failedAt": failed_at,
                "redrivenAt": redriven_at,
                "live": redriven_at is None,
            }
        )
    return result


def outcomes_for(
    connection: sqlite3.Connection, message_ids: Sequence[str]
) -> dict[str, dict[str, tuple[str, int, str | None, int | None, float]]]:
    """Per messageId and destination, the newest outcome (outcome, attempt, reason, status, at)."""
    found: dict[str, dict[str, tuple[str, int, str | None, int | None, float]]] = {}
    ids = sorted(set(message_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for mid, destination, attempt, outcome, at, reason, status in connection.execute(
            "SELECT message_id, destination, attempt, outcome, at, reason, status FROM outcomes "
            f"WHERE message_id IN ({_placeholders(len(chunk))}) ORDER BY at, attempt",
            chunk,
        ):
            found.setdefault(mid, {})[destination] = (outcome, attempt, reason, status, at)
    return found


LETTER_COLUMNS: Final = (
    'l.destination, l.partition, l."offset", l.message_id, l.source_id, l.reason, l.attempts, '
    "l.failed_at, l.status, l.event_type, l.event_name, r.at"
)


def _letter_summary(row: Sequence[Any]) -> dict[str, Any]:
    (dest, partition, offset, mid, source, reason, attempts, failed_at, status, kind, name, at) = (
        row
    )
    return {
        "destination": dest,
        "id": f"{partition}:{offset}",
        "partition": partition,
        "offset": offset,
        "messageId": mid,
        "sourceId": source,
        "reason": reason,
        "attempts": attempts,
        "failedAt": failed_at,
        "status": status,
        "type": kind,
        "event": name,
        "redrivenAt": at,
        "live": at is None,
    }


def list_letters(
    connection: sqlite3.Connection,
    destination: str,
    *,
    reason: str | None = None,
    since: float | None = None,
    live: bool = True,
    limit: int = 100,
) -> dict[str, Any]:
    where = ["l.destination = ?"]
    args: list[Any] = [destination]
    if reason:
        where.append("l.reason = ?")
        args.append(reason)
    if since is not None:
        where.append("l.failed_at >= ?")
        args.append(since)
    if live:
        where.append("r.at IS NULL")
    joined = (
        "FROM letters l LEFT JOIN redriven r ON r.destination = l.destination AND "
        'r.partition = l.partition AND r."offset" = l."offset" WHERE ' + " AND ".join(where)
    )
    total = connection.execute(f"SELECT count(*) {joined}", args).fetchone()[0]
    reasons = dict(
        connection.execute(f"SELECT l.reason, count(*) {joined} GROUP BY l.reason", args).fetchall()
    )
    rows = connection.execute(
        f"SELECT {LETTER_COLUMNS} {joined} ORDER BY l.failed_at DESC, l.partition, "
        'l."offset" LIMIT ?',
        [*args, limit],
    ).fetchall()
    return {
        "destination": destination,
        "total": int(total),
        "reasons": {str(k): int(v) for k, v in reasons.items()},
        "letters": [_letter_summary(row) for row in rows],
    }


def letters_by_location(
    connection: sqlite3.Connection, destination: str, locations: Sequence[tuple[int, int]]
) -> list[tuple[dict[str, Any], bytes]]:
    found = []
    for partition, offset in locations:
        row = connection.execute(
            f"SELECT {LETTER_COLUMNS}, l.body FROM letters l LEFT JOIN redriven r ON "
            "r.destination = l.destination AND r.partition = l.partition AND "
            'r."offset" = l."offset" WHERE l.destination = ? AND l.partition = ? AND '
            'l."offset" = ?',
            (destination, partition, offset),
        ).fetchone()
        if row is not None:
            found.append((_letter_summary(row[:-1]), str(row[-1]).encode()))
    return found


def select_letters(
    connection: sqlite3.Connection,
    destination: str,
    *,
    reason: str | None,
    since: float | None,
    limit: int | None = None,
) -> list[tuple[dict[str, Any], bytes]]:
    """Live letters with their bodies, oldest first (what a redrive sends)."""
    where = ["l.destination = ?", "r.at IS NULL"]
    args: list[Any] = [destination]
    if reason:
        where.append("l.reason = ?")
        args.append(reason)
    if since is not None:
        where.append("l.failed_at >= ?")
        args.append(since)
    sql = (
        f"SELECT {LETTER_COLUMNS}, l.body FROM letters l LEFT JOIN redriven r ON "
        "r.destination = l.destination AND r.partition = l.partition AND "
        'r."offset" = l."offset" WHERE ' + " AND ".join(where) + " ORDER BY l.failed_at, "
        'l.partition, l."offset"'
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [
        (_letter_summary(row[:-1]), str(row[-1]).encode()) for row in connection.execute(sql, args)
    ]


def violations_view(
    connection: sqlite3.Connection, since: float, until: float, source: str | None = None
) -> list[dict[str, Any]]:
    """Per source and plan: counts by event and violation type, with samples."""
    where = "at BETWEEN ? AND ?"
    args: list[Any] = [since, until]
    if source is not None:
        where += " AND source = ?"
        args.append(source)
    rows = connection.execute(
        "SELECT source, plan, event_type, event_name, violation_type, count(*), sum(blocked), "
        "count(DISTINCT message_id), max(at) FROM violations WHERE "
        + where
        + " GROUP BY source, plan, event_type, event_name, violation_type",
        args,
    ).fetchall()
    plans: dict[tuple[str, str], dict[str, Any]] = {}
    for source_id, plan, kind, name, violation_type, count, blocked, events, last in rows:
        entry = plans.setdefault(
            (source_id, plan),
            {"source": source_id, "plan": plan, "violations": 0, "groups": []},
        )
        entry["violations"] += int(count)
        samples = [
            orjson.loads(body)
            for (body,) in connection.execute(
                "SELECT body FROM violation_samples WHERE source = ? AND plan = ? AND "
                "event_name IS ? AND violation_type = ? ORDER BY at DESC, id DESC LIMIT 3",
                (source_id, plan, name, violation_type),
            )
        ]
        entry["groups"].append(
            {
                "type": kind,
                "event": name,
                "violation": violation_type,
                "count": int(count),
                "events": int(events),
                "blocked": int(blocked or 0),
                "last": last,
                "samples": samples,
            }
        )
    for entry in plans.values():
        entry["groups"].sort(key=lambda g: (-g["count"], str(g["event"]), g["violation"]))
    return sorted(plans.values(), key=lambda p: (p["source"], p["plan"]))
