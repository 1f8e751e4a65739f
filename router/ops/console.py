"""The console role (``router ops``, part of ``router run``): folds what the router publishes
for people and answers the API (:mod:`router.ops.api`) and the page.

Two readers, neither in a consumer group (they never take partitions from a role, and every
console process sees everything):

- the debugger follows ``events.raw`` (:mod:`router.ops.debugger`);
- the fold reads ``delivery.status``, every ``dest.<id>.dlq`` and ``events.violations`` into
  the store (:mod:`router.ops.store`), one transaction per poll with the offsets it reached,
  and resumes from those offsets after a restart.

New delivery outcomes are passed to live debugger views as they are folded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from router.backoff import Backoff
from router.broker.clients import BatchSender, make_producer
from router.broker.topics import Topics, ensure_topics, topics_for
from router.config import Workspace, parse_duration
from router.observability.ops import OpsMetrics
from router.ops import store as queries
from router.ops.deadletters import RedriveResult, parse_dead_letter, redrive
from router.ops.debugger import Filters, SourceTail, Subscriber, TailEntry
from router.ops.explain import Explainer
from router.ops.reading import TopicReader
from router.ops.status import StatusRecord, parse_status
from router.ops.store import Batch, Folded, Store
from router.ops.violations import parse_violations
from router.privacy.records import (
    SUPPRESS,
    SUPPRESS_WITH_DELETE,
    UNSUPPRESS,
    Regulation,
    Suppression,
)
from router.privacy.state import RegulationBook, SuppressionList
from router.privacy.submit import submit
from router.roles import RoleBase
from router.schema_topic import read_source_schemas

logger = logging.getLogger(__name__)

MIN_WINDOW = 15 * 60.0
PURGE_EVERY = 3600.0
BACKLOG_EVERY = 2.0


class BadRequest(ValueError):
    """A query the console cannot answer as asked: a 400 with ``code`` and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: Seconds the source schemas read from ``sources.schema`` are served before reading again
#: (processors publish every ``processor.schema_interval``, 60 s by default).
SCHEMA_REFRESH = 10.0


class NotFound(LookupError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def state_path(workspace: Workspace) -> Path:
    base = workspace.ops.state_dir or str(Path(workspace.processor.state_dir) / "ops")
    # One database per topic prefix: workspaces sharing a state directory stay apart.
    prefix = workspace.kafka.topic_prefix.rstrip(".") or "default"
    return Path(base) / f"console-{prefix}.sqlite"


class Console(RoleBase):
    """See the module docstring."""

    name = "console"

    def __init__(
        self,
        workspace: Workspace,
        registry: CollectorRegistry,
        *,
        topics: Topics | None = None,
        store_path: Path | None = None,
    ) -> None:
        self.workspace = workspace
        self.settings = workspace.ops
        self.topics = topics or topics_for(workspace.kafka)
        self.explainer = Explainer(workspace, self.topics)
        self.store = Store(store_path or state_path(workspace), retention=self.settings.retention)
        self.tail = SourceTail(
            self.explainer,
            workspace.kafka,
            self.topics,
            size=self.settings.debugger_events,
            lookback=self.settings.debugger_lookback,
        )
        self.metrics = OpsMetrics(registry)
        self.destinations = {d.id: d for d in workspace.destinations}
        self.sources = {s.id: s for s in workspace.sources}
        self.plans = {s.id: s.tracking_plan.plan for s in workspace.sources if s.tracking_plan}
        self._dlq_topics = {self.topics.dead_letter(d): d for d in self.destinations}
        # Privacy: the debugger explains a suppressed user's events as suppressed; a deleted
        # user's entries, dead letters and samples are forgotten as soon as the regulation is
        # read (and never folded again, even when the store is rebuilt from the topics).
        self.suppressions = SuppressionList()
        self.regulations = RegulationBook()
        self.explainer.pipeline.suppressed = self.suppressions.users
        self.regulations.on_change.append(self._on_regulations)
        self._privacy_tails = [
            self.suppressions.tail(workspace.kafka, self.topics, role="ops"),
            self.regulations.tail(workspace.kafka, self.topics, role="ops"),
        ]
        self._to_forget: set[str] = set()
        self._reader: TopicReader | None = None
        self._producer: AIOKafkaProducer | None = None
        self._sender: BatchSender | None = None
        self._task: asyncio.Task[None] | None = None
        self._redrive_lock = asyncio.Lock()
        self._schema_lock = asyncio.Lock()
        self._schemas: dict[str, dict[str, Any]] = {}
        self._schema_read_at = -SCHEMA_REFRESH
        self._started = False
        self._last_purge = 0.0
        self._last_backlogs = 0.0
        self._touched: set[str] = set()
        self.folded = 0
        #: Set once the fold has read to the end of what existed when it started.
        self.caught_up = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        kafka = self.workspace.kafka
        await ensure_topics(kafka, self.topics.for_workspace(self.workspace))
        await self.store.open()
        self._started = True
        try:
            self.metrics.register(list(self.destinations))
            for privacy_tail in self._privacy_tails:
                await privacy_tail.start()
            await self._forget_pending()
            await self.tail.start()
            reader = TopicReader(kafka, role="ops-fold", max_poll_records=5000)
            await reader.start()
            self._reader = reader
            wanted = [self.topics.status, self.topics.violations, *self._dlq_topics]
            partitions = await reader.partitions(wanted, wait=5.0)
            reader.assign(partitions)
            stored = await self.store.call(Store.offsets)
            for tp in partitions:
                offset = stored.get((tp.topic, tp.partition))
                if offset is None:
                    await reader.consumer.seek_to_beginning(tp)
                else:
                    reader.consumer.seek(tp, offset)
            producer = make_producer(kafka, role="ops")
            await producer.start()
            self._producer = producer
            self._sender = BatchSender(producer)
            await self._refresh_backlogs(set(self.destinations))
            self._task = asyncio.create_task(self._fold_loop(reader), name="ops-fold")
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "console folding %s, %d dead-letter topic(s) and %s into %s",
            self.topics.status,
            len(self._dlq_topics),
            self.topics.violations,
            self.store.path,
        )

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.tail.stop()
        for privacy_tail in self._privacy_tails:
            await privacy_tail.stop()
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, TimeoutError):
                async with asyncio.timeout(10):
                    await producer.stop()
        await self.store.close()

    def health(self) -> tuple[bool, str]:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return False, f"fold stopped: {self._task.exception()!r}"
        healthy, detail = self.tail.health()
        if not healthy:
            return False, detail
        for privacy_tail in self._privacy_tails:
            following = privacy_tail.failure()
            if following:
                return False, following
        return True, f"{self.folded} folded; debugger {detail}"

    def failure(self) -> str | None:
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            return f"the console's fold loop ended: {task.exception()!r}"
        for privacy_tail in self._privacy_tails:
            following = privacy_tail.failure()
            if following:
                return following
        return None

    # ------------------------------------------------------------ folding

    async def _fold_loop(self, reader: TopicReader) -> None:
        consumer = reader.consumer
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            try:
                polled = await consumer.getmany(timeout_ms=500, max_records=5000)
                backoff.reset()
            except KafkaError as exc:
                logger.warning("console: reading failed (%s); retrying", exc)
                await backoff.wait()
                continue
            if self._to_forget:
                await self._forget_pending()
            if polled:
                batch = self._parse(polled)
                folded: Folded = await self.store.call(self.store.fold, batch)
                self.folded += sum(len(r) for r in polled.values())
                self.tail.on_outcomes(folded.outcomes)
                self._touched |= folded.destinations
            if self._touched and time.monotonic() - self._last_backlogs >= BACKLOG_EVERY:
                # Counting backlogs reads whole indexes: at most every few seconds.
                touched, self._touched = self._touched, set()
                self._last_backlogs = time.monotonic()
                await self._refresh_backlogs(touched)
            lag = 0
            at_end = True
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is None:
                    at_end = False
                    continue
                behind = max(0, highwater - await consumer.position(tp))
                lag += behind
                at_end = at_end and behind == 0
            self.metrics.on_progress(time.time(), lag)
            if at_end and not polled:
                self.caught_up.set()
            if time.monotonic() - self._last_purge > PURGE_EVERY:
                self._last_purge = time.monotonic()
                await self.store.call(self.store.purge)

    def _parse(self, polled: dict[TopicPartition, list[Any]]) -> Batch:
        batch = Batch()
        status, violations = self.topics.status, self.topics.violations
        counts = {"status": [0, 0], "dlq": [0, 0], "violations": [0, 0]}
        for tp, records in polled.items():
            if not records:
                continue
            batch.offsets[(tp.topic, tp.partition)] = records[-1].offset + 1
            if tp.topic == status:
                kind = "status"
                for record in records:
                    parsed = parse_status(record.value)
                    if parsed is None:
                        counts[kind][1] += 1
                    else:
                        batch.statuses.append(parsed)
            elif tp.topic == violations:
                kind = "violations"
                for record in records:
                    batch.violations.extend(parse_violations(record, self.explainer, self.plans))
            else:
                kind = "dlq"
                destination = self._dlq_topics[tp.topic]
                for record in records:
                    parse_dead_letter(destination, record, batch)
            counts[kind][0] += len(records)
        for kind, (records_seen, unreadable) in counts.items():
            self.metrics.on_fold(kind, records_seen, unreadable)
        forgotten = self.tail.forgotten
        if forgotten:
            batch.letters = [x for x in batch.letters if x.user_id not in forgotten]
            batch.statuses = [_without_sample_of(s, forgotten) for s in batch.statuses]
        return batch

    # ------------------------------------------------------------ privacy

    def _on_regulations(self, changed: list[Regulation]) -> None:
        deleted = {r.user_id for r in changed if r.deletes} - self.tail.forgotten
        if deleted:
            removed = self.tail.forget(deleted)
            self._to_forget |= deleted
            logger.info(
                "console: %d user(s) deleted (privacy): %d debugger entries forgotten",
                len(deleted),
                removed,
            )

    async def _forget_pending(self) -> None:
        users, self._to_forget = self._to_forget, set()
        if users:
            removed = await self.store.call(queries.forget_users, sorted(users))
            touched = set(self.destinations)
            logger.info("console: forgot deleted users' %s", removed)
            await self._refresh_backlogs(touched)

    async def regulate(
        self, kind: str, user_ids: Sequence[str], reason: str | None
    ) -> list[dict[str, Any]]:
        """Create regulations (one per user id) and apply them here at once."""
        assert self._sender is not None, "the console is not started"
        try:
            created = await submit(
                self._sender, self.topics, self.workspace, kind, user_ids, reason
            )
        except ValueError as exc:
            raise BadRequest("invalid_regulation", str(exc)) from None
        for regulation in created:
            if regulation.type == UNSUPPRESS:
                self.suppressions.put(regulation.user_id, None)
            elif regulation.type in (SUPPRESS, SUPPRESS_WITH_DELETE):
                self.suppressions.put(
                    regulation.user_id,
                    Suppression(
                        regulation.user_id, regulation.reason, regulation.created_at, regulation.id
                    ),
                )
        changed = self.regulations.add(created)
        self._on_regulations(changed)
        await self._forget_pending()
        return [r.as_dict() for r in created]

    def regulation_list(self, user_id: str | None, limit: int) -> dict[str, Any]:
        listed = self.regulations.listed(user_id)
        return {
            "total": len(listed),
            "regulations": [r.as_dict() for r in listed[:limit]],
        }

    def regulation(self, regulation_id: str) -> dict[str, Any]:
        found = self.regulations.regulations.get(regulation_id)
        if found is None:
            raise NotFound("unknown_regulation", f"no regulation {regulation_id!r}")
        return found.as_dict()

    def suppression_list(self) -> dict[str, Any]:
        listed = sorted(self.suppressions.details.values(), key=lambda x: x.at, reverse=True)
        return {"total": len(listed), "suppressions": [x.as_dict() for x in listed]}

    async def _refresh_backlogs(self, destinations: set[str]) -> None:
        if not destinations:
            return
        retry = await self.store.call(queries.retry_backlogs)
        dead = await self.store.call(queries.live_letter_counts)
        wanted = destinations & set(self.destinations)
        self.metrics.on_backlogs(
            {d: retry.get(d, 0) for d in wanted}, {d: dead.get(d, 0) for d in wanted}
        )

    # ------------------------------------------------------------ answers

    def window(self, text: str | None) -> tuple[float, float]:
        """``window`` (``15m`` .. the retention) as (since, until) in UNIX seconds."""
        try:
            seconds = parse_duration(text or "1h")
        except ValueError as exc:
            raise BadRequest("invalid_window", str(exc)) from None
        if not MIN_WINDOW <= seconds <= self.settings.retention:
            raise BadRequest(
                "invalid_window",
                f"the window must be between 15m and {self.settings.retention / 86400:g}d",
            )
        until = time.time()
        return until - seconds, until

    def destination(self, destination_id: str) -> None:
        if destination_id not in self.destinations:
            raise NotFound("unknown_destination", f"no destination {destination_id!r}")

    def source(self, source_id: str) -> None:
        if source_id not in self.sources:
            raise NotFound("unknown_source", f"no source {source_id!r}")

    def describe(self) -> dict[str, Any]:
        """Sources and destinations as the page lists them (never their settings)."""
        return {
            "sources": [
                {
                    "id": s.id,
                    "name": s.name or s.id,
                    "plan": s.tracking_plan.plan if s.tracking_plan else None,
                    "destinations": self.explainer.connected(s.id),
                }
                for s in self.sources.values()
            ],
            "destinations": [
                {
                    "id": d.id,
                    "name": d.name,
                    "type": d.type,
                    "enabled": d.enabled,
                    "sources": list(d.sources),
                }
                for d in self.destinations.values()
            ],
        }

    async def overview(self, window: str | None) -> dict[str, Any]:
        since, until = self.window(window)
        rows = await self.store.call(queries.overview, list(self.destinations), since, until)
        return {
            "since": since,
            "until": until,
            "destinations": [
                {"id": d.id, "name": d.name, "type": d.type, "enabled": d.enabled, **rows[d.id]}
                for d in self.destinations.values()
            ],
        }

    async def delivery(self, destination_id: str, window: str | None) -> dict[str, Any]:
        self.destination(destination_id)
        since, until = self.window(window)
        view: dict[str, Any] = await self.store.call(
            queries.delivery_view, destination_id, since, until
        )
        return view

    async def debugger(self, source_id: str, filters: Filters, limit: int) -> dict[str, Any]:
        self.source(source_id)
        entries = self.tail.query(source_id, filters, limit)
        return {"source": source_id, "events": await self.views(entries)}

    async def views(self, entries: Sequence[TailEntry]) -> list[dict[str, Any]]:
        """Entries for people, with what the delivery outcomes say per destination."""
        ids = [e.message_id for e in entries if e.message_id]
        outcomes = await self.store.call(queries.outcomes_for, ids) if ids else {}
        return [
            self._with_outcomes(self.tail.view(e), outcomes.get(e.message_id or "", {}))
            for e in entries
        ]

    @staticmethod
    def _with_outcomes(
        view: dict[str, Any], outcomes: dict[str, tuple[str, int, str | None, int | None, float]]
    ) -> dict[str, Any]:
        routes = []
        for route in view["routes"]:
            known = outcomes.get(route["destination"])
            entry = dict(route)
            if known is not None:
                outcome, attempt, reason, status, at = known
                entry.update(
                    {
                        "outcome": outcome,
                        "attempt": attempt,
                        "outcomeReason": reason,
                        "status": status,
                        "at": at,
                    }
                )
            routes.append(entry)
        return {**view, "routes": routes}

    def subscribe(self, source_id: str, filters: Filters) -> Subscriber:
        self.source(source_id)
        return self.tail.subscribe(source_id, filters)

    async def source_schema(self, source_id: str) -> dict[str, Any]:
        """One source's schema from ``sources.schema``, merged over processor instances.

        Reading the topic takes about a second (it is read to the end), so the merged view is
        kept for :data:`SCHEMA_REFRESH` seconds and concurrent callers share one read.
        """
        self.source(source_id)
        async with self._schema_lock:
            if time.monotonic() - self._schema_read_at > SCHEMA_REFRESH:
                self._schemas = await read_source_schemas(self.workspace.kafka, self.topics)
                self._schema_read_at = time.monotonic()
        schema = self._schemas.get(source_id)
        if schema is None:
            return {"source": source_id, "events": {}, "seen": False}
        return {**schema, "source": source_id, "seen": True}

    async def event(self, message_id: str) -> dict[str, Any]:
        """What happened to one event at every destination."""
        history: dict[str, Any] = await self.store.call(queries.event_history, message_id)
        entry = self.tail.by_message.get(message_id)
        seen = None
        if entry is not None:
            (seen,) = await self.views([entry])
        destinations = []
        routes = {r["destination"]: r for r in (seen or {}).get("routes", [])}
        for dest_id in list(self.destinations):
            known = history.get(dest_id)
            route = routes.get(dest_id)
            if known is None and route is None:
                continue
            attempts = (known or {}).get("attempts", [])
            letters = (known or {}).get("deadLetters", [])
            state = "unknown"
            if attempts:
                last = attempts[-1]["outcome"]
                state = {"delivered": "delivered", "retry": "retrying", "dlq": "dead_lettered"}[
                    last
                ]
            elif route is not None:
                state = {"routed": "routed", "filtered": "filtered"}.get(
                    route["state"], route["state"]
                )
            destinations.append(
                {
                    "destination": dest_id,
                    "name": self.destinations[dest_id].name,
                    "state": state,
                    "reason": (attempts[-1]["reason"] if attempts else None)
                    or (route or {}).get("reason"),
                    "route": route,
                    "attempts": attempts,
                    "deadLetters": letters,
                }
            )
        if not destinations and seen is None:
            raise NotFound("unknown_event", f"nothing is known about messageId {message_id!r}")
        return {
            "messageId": message_id,
            "event": seen,
            "destinations": destinations,
        }

    async def letters(
        self,
        destination_id: str,
        *,
        reason: str | None,
        since: float | None,
        live: bool,
        limit: int,
    ) -> dict[str, Any]:
        self.destination(destination_id)
        found: dict[str, Any] = await self.store.call(
            lambda c: queries.list_letters(
                c, destination_id, reason=reason, since=since, live=live, limit=limit
            )
        )
        return found

    async def letter(self, destination_id: str, letter_id: str) -> dict[str, Any]:
        self.destination(destination_id)
        location = parse_letter_id(letter_id)
        found = await self.store.call(queries.letters_by_location, destination_id, [location])
        if not found:
            raise NotFound("unknown_letter", f"no dead letter {letter_id} for {destination_id}")
        summary, body = found[0]
        return {**summary, "letter": orjson.loads(body)}

    async def redrive(
        self,
        destination_id: str,
        *,
        ids: Sequence[str] | None,
        reason: str | None,
        since: float | None,
    ) -> RedriveResult:
        """Send chosen live letters back for delivery (named by ``ids``, or all matching
        ``reason``/``since``), once: redrives are serialized in this process."""
        self.destination(destination_id)
        locations = [parse_letter_id(i) for i in ids or ()]
        async with self._redrive_lock:
            if ids:
                chosen = await self.store.call(
                    queries.letters_by_location, destination_id, locations
                )
            else:
                chosen = await self.store.call(
                    lambda c: queries.select_letters(c, destination_id, reason=reason, since=since)
                )
            assert self._sender is not None, "the console is not started"
            result = await redrive(self._sender, self.topics, destination_id, chosen)
            # Fold the markers now, so the live view changes with the answer (the fold
            # will read them again from the topic: folding them twice changes nothing).
            now = time.time()
            marked = Batch(redrives=[(destination_id, p, o, now) for p, o in result.locations])
            await self.store.call(self.store.fold, marked)
        self.metrics.on_redrive(destination_id, result.sent)
        await self._refresh_backlogs({destination_id})
        return result

    async def violations(self, window: str | None, source_id: str | None) -> dict[str, Any]:
        if source_id is not None:
            self.source(source_id)
        since, until = self.window(window)
        plans = await self.store.call(queries.violations_view, since, until, source_id)
        return {"since": since, "until": until, "plans": plans}


def _without_sample_of(record: StatusRecord, forgotten: set[str]) -> StatusRecord:
    """``record`` without its sample event when that event is a deleted user's."""
    error = record.error
    event = error.get("event") if error else None
    if isinstance(event, dict) and str(event.get("userId")) in forgotten:
        return replace(record, error={**(error or {}), "event": None})
    return record


def parse_letter_id(letter_id: str) -> tuple[int, int]:
    """``"<partition>:<offset>"`` -> (partition, offset)."""
    partition, _, offset = letter_id.partition(":")
    try:
        return int(partition), int(offset)
    except ValueError:
        raise BadRequest(
            "invalid_letter_id", f"{letter_id!r} is not a letter id (<partition>:<offset>)"
        ) from None
