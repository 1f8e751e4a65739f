"""From JSON objects to records for ``events.raw`` (and ``events.dlq``).

Every event goes through :mod:`router.spec` (the same rules the processor applies): the
call type from the path, required fields, ``receivedAt``, ``messageId``, and the timestamp
corrected by the batch's one ``sentAt``. Batch-level ``context`` and ``integrations`` are
merged into each item first (the item's own keys win) and ``writeKey`` is removed: it
travels in the ``write-key`` record header, never to a destination.

A batch with some invalid items: the valid items are written to ``events.raw`` and the
invalid ones to ``events.dlq`` (reason code, message, the item and where it came from), in
the same acknowledged write, and the answer is 200 with the rejected indexes listed.
Refusing the whole batch with 400, as Segment's API does for a malformed body, would make
every Segment client drop the good events with the bad ones (they never retry a 400); a
dead-letter record keeps the bad ones where they can be fixed and replayed. When no item of
a batch is valid there is nothing to keep: 400, like a single invalid call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson

from router import spec
from router.broker.clients import OutRecord
from router.broker.topics import Topics
from router.gateway.errors import BadRequest
from router.gateway.parsing import Batch
from router.rejection import Rejection, dump_any

WRITE_KEY_HEADER: Final = "write-key"
SENT_BYTES_HEADER: Final = spec.SENT_BYTES_HEADER
STAGE: Final = "gateway"
# How many rejected items a response lists; the rest are counted (a 2,500-item batch of bad
# items must not produce a response larger than the request).
MAX_LISTED_REJECTIONS: Final = 20


@dataclass(frozen=True, slots=True)
class ItemError:
    index: int
    code: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "message": self.message}


@dataclass(slots=True)
class Prepared:
    """What a batch request turns into: records to write, and what was refused."""

    records: list[OutRecord] = field(default_factory=list)
    accepted: int = 0
    errors: list[ItemError] = field(default_factory=list)


def _too_large() -> spec.InvalidEvent:
    return spec.InvalidEvent(
        "event_too_large", f"an event must not exceed {spec.MAX_EVENT_BYTES} bytes"
    )


def _encode(event: Any) -> bytes:
    """The event's JSON; InvalidEvent when orjson cannot write it (over 254 levels deep)."""
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError:
        raise spec.InvalidEvent(
            "nesting_too_deep",
            f"objects and arrays may be nested at most {spec.MAX_DEPTH} levels deep",
        ) from None


class EventWriter:
    """Turns request bodies into records; one per gateway, shared by every request."""

    def __init__(self, topics: Topics, partition_of: Callable[[bytes], int] | None = None) -> None:
        """Build a writer for one gateway.

        Args:
            topics: where records go.
            partition_of: the ``events.raw`` partition of a record key; None leaves the
                choice to the sender (same murmur2 rule, computed per record).
        """
        self.topics = topics
        self.partition_of = partition_of
        self._raw_topic = topics.raw

    def _record(self, event: dict[str, Any], headers: tuple[tuple[str, bytes], ...]) -> OutRecord:
        """The ``events.raw`` record of a stamped event; InvalidEvent if it cannot be one.

        ``headers`` carry the write key and the event's size as sent (``sent-bytes``): Segment's
        32 KB applies to that, checked on the body or the batch item; what the router adds may
        take the record past it, never past what the processor accepts.
        """
        value = _encode(event)
        # spec.check_depth's first test, inline: no deeper than the JSON has brackets.
        openers = value.count(b"{")
        if b"[" in value:
            openers += value.count(b"[")
        if openers > spec.MAX_DEPTH:
            spec.check_depth(event)
        if len(value) > spec.MAX_RECORD_BYTES:
            raise spec.InvalidEvent(
                "event_too_large",
                f"with what the router adds (receivedAt, messageId, the batch's context) the "
                f"event would exceed {spec.MAX_RECORD_BYTES} bytes",
            )
        key = spec.partition_key(event)
        partition = self.partition_of(key) if self.partition_of is not None else None
        # tuple.__new__ rather than OutRecord(...): the NamedTuple's own __new__ is a Python
        # function, half the cost of building the record.
        return tuple.__new__(OutRecord, (self._raw_topic, key, value, headers, partition, None))

    def single(
        self,
        event: dict[str, Any],
        type_hint: str,
        *,
        write_key: str,
        received_at: datetime,
        sent_bytes: int,
    ) -> OutRecord:
        """One call (``/v1/track``...): the record, or 400 with the spec's reason code.

        ``sent_bytes``: the size of the body as the client sent it (after gzip).
        """
        event.pop("writeKey", None)
        try:
            spec.validate(event, type_hint=type_hint)
            # receivedAt is set by the server on arrival, whatever the client sent (Segment's rule).
            spec.Stamper(received_at).stamp(event)
            headers = (
                (WRITE_KEY_HEADER, write_key.encode()),
                (SENT_BYTES_HEADER, b"%d" % sent_bytes),
            )
            return self._record(event, headers)
        except spec.InvalidEvent as exc:
            raise BadRequest(exc.code, exc.message) from None

    def batch(
        self,
        batch: Batch,
        *,
        write_key: str,
        source_id: str,
        received_at: datetime,
        path: str,
        measure_items: bool = True,
        body_bytes: int = spec.MAX_EVENT_BYTES,
    ) -> Prepared:
        """Every item of a batch: valid ones for ``events.raw``, the others for the DLQ.

        ``measure_items`` False says the whole body is under the per-event limit, so no item
        can be over it and none is serialized just to be measured: each record then says the
        body's size as the most its event can have had as sent (``body_bytes``).
        """
        prepared = Prepared()
        key_header = (WRITE_KEY_HEADER, write_key.encode())
        headers = (key_header,)
        unmeasured = (key_header, (SENT_BYTES_HEADER, b"%d" % body_bytes))
        context, integrations, sent_at = batch.context, batch.integrations, batch.sent_at
        # Every item of a batch arrived at the same moment, with the same sentAt (mostly).
        stamp = spec.Stamper(received_at, sent_at=sent_at).stamp
        records = prepared.records
        bad: list[tuple[int, spec.InvalidEvent, Any]] = []
        validate, record = spec.validate, self._record
        for index, item in enumerate(batch.items):
            if not isinstance(item, dict):
                error = spec.InvalidEvent("invalid_event", "an event must be a JSON object")
                bad.append((index, error, item))
                continue
            item.pop("writeKey", None)
            item_headers = unmeasured
            if measure_items:
                try:
                    size = len(_encode(item))
                except spec.InvalidEvent as exc:
                    bad.append((index, exc, item))
                    continue
                if size > spec.MAX_EVENT_BYTES:
                    bad.append((index, _too_large(), item))
                    continue
                item_headers = (key_header, (SENT_BYTES_HEADER, b"%d" % size))
            if context is not None:
                own = item.get("context")
                if own is None:
                    item["context"] = context
                elif isinstance(own, dict):
                    item["context"] = {**context, **own}
            if integrations is not None:
                own = item.get("integrations")
                if own is None:
                    item["integrations"] = integrations
                elif isinstance(own, dict):
                    item["integrations"] = {**integrations, **own}
            try:
                validate(item)
                records.append(record(stamp(item), item_headers))
            except spec.InvalidEvent as exc:
                bad.append((index, exc, item))
        prepared.accepted = len(records)
        if not bad:
            return prepared
        prepared.errors = [ItemError(i, exc.code, exc.message) for i, exc, _item in bad]
        if not records:
            first = prepared.errors[0]
            raise BadRequest(
                first.code,
                f"no valid event in the batch; item {first.index}: {first.message}",
                extra={"rejected": _listed(prepared.errors)},
            )
        records.extend(
            self._dead_letter(index, exc, item, headers, source_id, received_at, sent_at, path)
            for index, exc, item in bad
        )
        return prepared

    def _dead_letter(
        self,
        index: int,
        error: spec.InvalidEvent,
        item: Any,
        headers: tuple[tuple[str, bytes], ...],
        source_id: str,
        received_at: datetime,
        sent_at: Any,
        path: str,
    ) -> OutRecord:
        """An ``events.dlq`` record in the processor's format, replayable as it stands."""
        if isinstance(item, dict):
            # What a replay needs to stamp it as the gateway would have: arrival and sentAt.
            item["receivedAt"] = spec.format_timestamp(received_at)
            if sent_at is not None:
                item.setdefault("sentAt", sent_at)
        rejection = Rejection(
            reason=error.code,
            message=error.message,
            stage=STAGE,
            raw=dump_any(item),
            partition=-1,
            offset=-1,
            timestamp_ms=int(received_at.timestamp() * 1000),
            source_id=source_id,
            details={"path": path, "index": index},
        )
        record = rejection.to_record(self.topics.dlq, f"http:{path}")
        return OutRecord(
            topic=record.topic,
            key=record.key,
            value=record.value,
            headers=record.headers + headers,
            partition=record.partition,
        )


def _listed(errors: Sequence[ItemError]) -> list[dict[str, Any]]:
    return [error.as_json() for error in errors[:MAX_LISTED_REJECTIONS]]


def rejected_json(errors: Sequence[ItemError]) -> list[dict[str, Any]]:
    """The ``rejected`` list of a response: the first few rejected items."""
    return _listed(errors)
