"""The source debugger: the latest events of each source, as they arrive on ``events.raw``.

A reader without a consumer group follows every partition of ``events.raw`` (it never delays
the processor, and every console process sees everything). At start it reads back
``ops.debugger_lookback``; it keeps the last ``ops.debugger_events`` events per source.
Records are decoded and attributed to a source with the processor's own decode stage (so
the messageId shown is the one the processor gives); the payload shown and the routing are
computed only when someone looks (:mod:`router.ops.explain`), and kept with the entry.

Live views subscribe: each subscriber has a bounded queue; when a slow reader lets it fill,
further events are skipped for it (and counted), never buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from router.backoff import Backoff
from router.broker.topics import Topics
from router.config import KafkaSettings
from router.ops.explain import Explainer, KeptRecord, raw_record
from router.ops.reading import TopicReader, header
from router.pipeline.decode import WRITE_KEY_HEADER, decode

logger = logging.getLogger(__name__)

SUBSCRIBER_QUEUE = 256


@dataclass(slots=True)
class TailEntry:
    source_id: str
    record: KeptRecord
    message_id: str | None
    kind: str | None
    name: str | None
    received_at: str | None
    rejected: tuple[str, str] | None = None
    #: The event's userId (privacy deletion forgets a user's entries).
    user_id: str | None = None
    #: The explained view, computed on first use.
    view: dict[str, Any] | None = None
    text: str = ""

    @property
    def id(self) -> str:
        return f"{self.record.partition}:{self.record.offset}"


@dataclass(slots=True)
class Filters:
    text: str = ""
    kind: str = ""
    name: str = ""

    @classmethod
    def of(cls, text: str | None, kind: str | None, name: str | None) -> Filters:
        return cls((text or "").strip().lower(), (kind or "").strip(), (name or "").strip().lower())

    @property
    def needs_view(self) -> bool:
        return bool(self.text)


@dataclass(eq=False, slots=True)
class Subscriber:
    source_id: str
    filters: Filters
    queue: asyncio.Queue[tuple[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE)
    )
    skipped: int = 0

    def offer(self, kind: str, item: Any, *, force: bool = False) -> None:
        """Queue ``item``; when the queue is full, skip it (or, with ``force``, the oldest)."""
        if force and self.queue.full():
            self.queue.get_nowait()
            self.skipped += 1
        try:
            self.queue.put_nowait((kind, item))
        except asyncio.QueueFull:
            self.skipped += 1


def _user(event: dict[str, Any]) -> str | None:
    user = event.get("userId")
    return None if user is None else str(user)


def _name(event: dict[str, Any]) -> str | None:
    value = event.get("event") if event.get("type") == "track" else event.get("name")
    return value if isinstance(value, str) else None


class SourceTail:
    """Follows ``events.raw``; see the module docstring."""

    def __init__(
        self,
        explainer: Explainer,
        kafka: KafkaSettings,
        topics: Topics,
        *,
        size: int,
        lookback: float,
    ) -> None:
        self.explainer = explainer
        self.kafka = kafka
        self.topic = topics.raw
        self.size = size
        self.lookback = lookback
        self.entries: dict[str, deque[TailEntry]] = {}
        self.by_message: dict[str, TailEntry] = {}
        self.subscribers: set[Subscriber] = set()
        #: Users whose data was deleted (privacy): their events are never kept here.
        self.forgotten: set[str] = set()
        self.read = 0
        self.last_poll = time.monotonic()
        self._reader: TopicReader | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        reader = TopicReader(self.kafka, role="ops-debugger", max_poll_records=5000)
        await reader.start()
        self._reader = reader
        partitions = await reader.partitions([self.topic])
        since = round((time.time() - self.lookback) * 1000)
        positions = await reader.start_at(partitions, since_ms=since)
        floors = {tp: p.not_before for tp, p in positions.items()}
        self._task = asyncio.create_task(self._run(reader, floors), name="ops-debugger")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.close()

    def health(self) -> tuple[bool, str]:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            return False, f"debugger stopped: {self._task.exception()!r}"
        return True, f"{self.read} read"

    async def _run(self, reader: TopicReader, floors: dict[Any, int | None]) -> None:
        consumer = reader.consumer
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            try:
                polled = await consumer.getmany(timeout_ms=500, max_records=5000)
                backoff.reset()
            except KafkaError as exc:
                logger.warning("debugger: reading %s failed (%s); retrying", self.topic, exc)
                await backoff.wait()
                continue
            self.last_poll = time.monotonic()
            records: list[Any] = []
            for tp, batch in polled.items():
                floor = floors.get(tp)
                records.extend(r for r in batch if floor is None or r.timestamp >= floor)
            if records:
                self._add_isolated(records)

    # ------------------------------------------------------------ keeping entries

    def _add_isolated(self, records: Sequence[Any]) -> None:
        """:meth:`add`, one record at a time when the batch fails: a record the decode stage
        cannot handle is left out of the debugger (the processor dead-letters it), never
        the debugger itself."""
        try:
            self.add(records)
        except Exception:
            logger.exception("debugger: a batch of %s failed to decode; one by one", self.topic)
            for record in records:
                try:
                    self.add([record])
                except Exception:  # noqa: BLE001 - that record only
                    logger.warning(
                        "debugger: record %s/%d/%d cannot be shown",
                        record.topic,
                        record.partition,
                        record.offset,
                    )

    def newest(self, records: Sequence[Any]) -> list[Any]:
        """The records that can end up kept: the newest ``size`` per write key.

        Attributing a record by its ``write-key`` header costs a dict lookup, decoding it
        several microseconds: under load most of a poll would be decoded only to be pushed out
        by the newer records of the same poll. Records without the header (a producer that
        puts ``writeKey`` in the body) are all kept for decoding.
        """
        if len(records) <= self.size:
            return list(records)
        ordered = sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset))
        room: dict[bytes, int] = {}
        chosen = []
        for record in reversed(ordered):
            key = header(record, WRITE_KEY_HEADER)
            if key is not None:
                seen = room.get(key, 0)
                if seen >= self.size:
                    continue
                room[key] = seen + 1
            chosen.append(record)
        chosen.reverse()
        return chosen

    def add(self, records: Sequence[Any]) -> None:
        """Decode ``records`` (of ``events.raw``) and keep the newest per source."""
        self.read += len(records)
        records = self.newest(records)
        envelopes, rejections = decode(records, self.explainer.sources_by_key)
        by_position = {(r.partition, r.offset): r for r in records}
        fresh: list[TailEntry] = []
        for env in envelopes:
            record = by_position.get((env.partition, env.offset))
            if record is None:
                continue
            event = env.event
            received = event.get("receivedAt")
            fresh.append(
                TailEntry(
                    source_id=env.source_id,
                    record=raw_record(record),
                    message_id=str(event.get("messageId")),
                    kind=str(event.get("type")),
                    name=_name(event),
                    received_at=received if isinstance(received, str) else None,
                    user_id=_user(event),
                )
            )
        for rejection in rejections:
            record = by_position.get((rejection.partition, rejection.offset))
            if record is None:
                continue
            try:
                body = orjson.loads(rejection.raw)
            except orjson.JSONDecodeError:
                body = None
            body = body if isinstance(body, dict) else {}
            # Decode rejects an invalid event before it looks the write key up: do it here,
            # so a source's debugger shows its invalid events too.
            source_id = rejection.source_id or self._source_of(record, body)
            if source_id is None:
                continue  # no source to show it under (no or unknown write key)
            mid = body.get("messageId")
            fresh.append(
                TailEntry(
                    source_id=source_id,
                    record=raw_record(record),
                    message_id=mid if isinstance(mid, str) and mid else None,
                    kind=body.get("type") if isinstance(body.get("type"), str) else None,
                    name=_name(body),
                    received_at=None,
                    rejected=(rejection.reason, rejection.message),
                    user_id=_user(body),
                )
            )
        if self.forgotten:
            fresh = [e for e in fresh if e.user_id not in self.forgotten]
        fresh.sort(key=lambda e: (e.record.timestamp, e.record.partition, e.record.offset))
        for entry in fresh:
            self._keep(entry)
        if self.subscribers:
            for entry in fresh:
                for subscriber in self.subscribers:
                    if subscriber.source_id == entry.source_id:
                        subscriber.offer("event", entry)

    def _source_of(self, record: Any, body: dict[str, Any]) -> str | None:
        key: Any = header(record, WRITE_KEY_HEADER)
        key = key.decode("utf-8", "replace") if key else body.get("writeKey")
        return self.explainer.sources_by_key.get(key) if isinstance(key, str) else None

    def _keep(self, entry: TailEntry) -> None:
        kept = self.entries.get(entry.source_id)
        if kept is None:
            kept = self.entries[entry.source_id] = deque()
        if len(kept) >= self.size:
            old = kept.popleft()
            if old.message_id is not None and self.by_message.get(old.message_id) is old:
                del self.by_message[old.message_id]
        kept.append(entry)
        if entry.message_id is not None:
            self.by_message[entry.message_id] = entry

    def forget(self, user_ids: set[str]) -> int:
        """Privacy deletion: drop every kept entry of these users, and keep none from now on.
        Returns how many entries went."""
        self.forgotten |= user_ids
        removed = 0
        for source_id, kept in self.entries.items():
            staying = deque(e for e in kept if e.user_id not in user_ids)
            removed += len(kept) - len(staying)
            self.entries[source_id] = staying
        for message_id, entry in list(self.by_message.items()):
            if entry.user_id in user_ids:
                del self.by_message[message_id]
        return removed

    # ------------------------------------------------------------ reading entries

    def view(self, entry: TailEntry) -> dict[str, Any]:
        """The entry for people (explained once, then kept)."""
        if entry.view is not None:
            return entry.view
        record = entry.record
        payload: dict[str, Any] | None = None
        routes: list[dict[str, Any]] = []
        rejected = entry.rejected
        if rejected is None:
            try:
                envelopes, _ = decode([record], self.explainer.sources_by_key)
            except Exception as exc:  # noqa: BLE001 - shown as what it is
                envelopes, rejected = [], ("decode_error", f"{type(exc).__name__}: {exc}")
            if envelopes:
                explanation = self.explainer.explain(entry.source_id, record, envelopes[0].event)
                payload = explanation.payload
                rejected = explanation.rejected
                routes = [route.as_dict() for route in explanation.routes]
        else:
            try:
                body = orjson.loads(record.value or b"")
            except orjson.JSONDecodeError:
                body = None
            payload = self.explainer.mask(entry.source_id, body)
            routes = [
                {"destination": d, "state": "rejected", "reason": rejected[0], "detail": None}
                for d in self.explainer.connected(entry.source_id)
            ]
        entry.view = {
            "id": entry.id,
            "sourceId": entry.source_id,
            "messageId": entry.message_id,
            "type": entry.kind,
            "event": entry.name,
            "receivedAt": entry.received_at,
            "timestamp": record.timestamp,
            "partition": record.partition,
            "offset": record.offset,
            "payload": payload,
            "rejected": None
            if rejected is None
            else {"reason": rejected[0], "message": rejected[1]},
            "routes": routes,
        }
        entry.text = orjson.dumps(payload).decode().lower() if payload is not None else ""
        return entry.view

    def matches(self, entry: TailEntry, filters: Filters) -> bool:
        if filters.kind and entry.kind != filters.kind:
            return False
        if filters.name and filters.name not in (entry.name or "").lower():
            return False
        if filters.text:
            self.view(entry)
            haystack = entry.text + " " + (entry.message_id or "").lower()
            if filters.text not in haystack:
                return False
        return True

    def query(self, source_id: str, filters: Filters, limit: int) -> list[TailEntry]:
        """Newest first."""
        found: list[TailEntry] = []
        for entry in reversed(self.entries.get(source_id, ())):
            if self.matches(entry, filters):
                found.append(entry)
                if len(found) >= limit:
                    break
        return found

    def subscribe(self, source_id: str, filters: Filters) -> Subscriber:
        subscriber = Subscriber(source_id, filters)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def on_outcomes(
        self, outcomes: Sequence[tuple[str, str, str, int, str | None, int | None, float]]
    ) -> None:
        """New delivery outcomes: tell subscribers showing those events."""
        if not self.subscribers:
            return
        for mid, destination, outcome, attempt, reason, status, at in outcomes:
            entry = self.by_message.get(mid)
            if entry is None:
                continue
            update = {
                "messageId": mid,
                "destination": destination,
                "outcome": outcome,
                "attempt": attempt,
                "reason": reason,
                "status": status,
                "at": at,
            }
            for subscriber in self.subscribers:
                if subscriber.source_id == entry.source_id:
                    subscriber.offer("outcome", update)
