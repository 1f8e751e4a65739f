"""Stage 1 and 2: decode and validate raw records, then find each event's source by write key.

Nothing here raises on bad input: every record becomes an :class:`Envelope` or a
:class:`Rejection` with a reason code, so the processor never crashes on what producers send.
Even a failure nobody foresaw (a bug) costs only its record: it is dead-lettered with reason
``stage_error`` and the rest of the batch goes on.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from router import spec
from router.pipeline.records import Envelope
from router.rejection import Rejection

logger = logging.getLogger(__name__)

WRITE_KEY_HEADER = "write-key"
SENT_BYTES_HEADER = spec.SENT_BYTES_HEADER
_MESSAGE_ID_NAMESPACE = uuid.UUID("6f1d6c2e-8d55-4a53-9b65-3f1f3e0c9a10")


class RawRecord(Protocol):
    """The parts of an aiokafka ``ConsumerRecord`` the pipeline reads."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def derived_message_id(record: RawRecord) -> str:
    """The messageId of an event that arrived without one, from what identifies its record.

    A replay of the same record (after a crash, a rebalance, a rewind) gets the same id, so
    dedup recognises it. Its position alone (topic, partition, offset) is not enough: offsets
    start again at 0 when a topic is recreated on Kafka or the embedded broker restarts (it
    keeps nothing on disk), while the dedup store outlives both, so new events would be
    dropped as duplicates of old ones. The record's timestamp and a digest of its value tell
    such records apart. Computed from the record as read from ``events.raw``, so a stage that
    moves the event elsewhere (a repartition topic) can carry the id along unchanged.
    """
    digest = hashlib.blake2b(record.value or b"", digest_size=16).hexdigest()
    name = f"{record.topic}/{record.partition}/{record.offset}/{record.timestamp}/{digest}"
    return str(uuid.uuid5(_MESSAGE_ID_NAMESPACE, name))


def _received_at(record: RawRecord) -> datetime:
    """The record's timestamp as the event's arrival time; InvalidEvent outside years 1-9999."""
    try:
        return datetime.fromtimestamp(record.timestamp / 1000, UTC)
    except (OverflowError, ValueError, OSError):
        raise spec.InvalidEvent(
            "invalid_timestamp",
            f"the record's timestamp ({record.timestamp} ms) is outside years 1-9999",
        ) from None


def _reject(
    record: RawRecord, reason: str, message: str, source_id: str | None = None
) -> Rejection:
    return Rejection(
        reason=reason,
        message=message,
        stage="decode",
        raw=record.value or b"",
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        source_id=source_id,
    )


def decode(
    records: Sequence[RawRecord], sources_by_key: Mapping[str, str]
) -> tuple[list[Envelope], list[Rejection]]:
    """Parse, validate, attribute to a source and stamp each record.

    The write key comes from the ``write-key`` header (what the gateway sets) or, for
    producers writing to ``events.raw`` directly, from a ``writeKey`` field in the event,
    which is removed so it never reaches a destination.
    """
    envelopes: list[Envelope] = []
    rejections: list[Rejection] = []
    loads = orjson.loads
    check_depth = spec.check_depth
    validate = spec.validate
    max_event, max_record = spec.MAX_EVENT_BYTES, spec.MAX_RECORD_BYTES
    max_depth = spec.MAX_DEPTH
    append = envelopes.append
    # Header bytes -> write key text: a batch carries a handful of distinct keys, so each is
    # decoded once per batch rather than once per record.
    header_keys: dict[bytes, str] = {}
    failures = 0
    for record in records:
        # One guard per record, free while nothing raises: whatever the checks below did not
        # foresee dead-letters this record alone.
        try:
            raw = record.value
            if not raw:
                rejections.append(_reject(record, "empty_record", "the record has no value"))
                continue
            header_key = None
            sent_bytes: bytes | None = None
            for name, value in record.headers or ():
                if name == WRITE_KEY_HEADER:
                    header_key = value
                elif name == SENT_BYTES_HEADER:
                    sent_bytes = value
            # Segment's 32 KB, on the event as its client sent it: the gateway says how large
            # that was; a producer's record is the event as sent. The record is capped too.
            size = len(raw)
            as_sent = int(sent_bytes) if sent_bytes is not None and sent_bytes.isdigit() else size
            if as_sent > max_event or size > max_record:
                rejections.append(_too_large(record, as_sent, size))
                continue
            try:
                event = loads(raw)
            except orjson.JSONDecodeError as exc:
                rejections.append(_reject(record, "invalid_json", f"not valid JSON: {exc}"))
                continue
            body_key = event.pop("writeKey", None) if isinstance(event, dict) else None
            write_key: Any = body_key
            if header_key:
                write_key = header_keys.get(header_key)
                if write_key is None:
                    write_key = header_keys[header_key] = header_key.decode("utf-8", "replace")
            try:
                # spec.check_depth's first test, inline: no deeper than the record has brackets
                # (and memchr tells the many records without an array apart).
                openers = raw.count(b"{")
                if b"[" in raw:
                    openers += raw.count(b"[")
                if openers > max_depth:
                    check_depth(event)
                validate(event)
            except spec.InvalidEvent as exc:
                rejections.append(_reject(record, exc.code, exc.message))
                continue
            if not write_key or not isinstance(write_key, str):
                rejections.append(
                    _reject(
                        record,
                        "missing_write_key",
                        "no write key: set the write-key header or writeKey",
                    )
                )
                continue
            source_id = sources_by_key.get(write_key)
            if source_id is None:
                rejections.append(
                    _reject(
                        record,
                        "unknown_write_key",
                        "the write key belongs to no configured source",
                    )
                )
                continue
            if not ("receivedAt" in event and "timestamp" in event and event.get("messageId")):
                try:
                    spec.stamp(
                        event,
                        # The record's time only when the event has no arrival time.
                        None if event.get("receivedAt") is not None else _received_at(record),
                        default_id=None if event.get("messageId") else derived_message_id(record),
                    )
                except spec.InvalidEvent as exc:
                    rejections.append(_reject(record, exc.code, exc.message, source_id))
                    continue
            append(
                Envelope(event, raw, record.partition, record.offset, record.timestamp, source_id)
            )
        except Exception as exc:
            failures += 1
            if failures == 1:
                logger.exception(
                    "decoding the record at %s/%s@%s failed unexpectedly; dead-lettered",
                    record.topic,
                    record.partition,
                    record.offset,
                )
            rejections.append(_reject(record, "stage_error", f"{type(exc).__name__}: {exc}"))
    if failures > 1:
        logger.error("%d records of one batch failed to decode (the first is logged)", failures)
    return envelopes, rejections


def _too_large(record: RawRecord, as_sent: int, size: int) -> Rejection:
    if as_sent > spec.MAX_EVENT_BYTES:
        message = f"the event is larger than {spec.MAX_EVENT_BYTES} bytes as sent ({as_sent})"
    else:
        message = f"the record is larger than {spec.MAX_RECORD_BYTES} bytes ({size})"
    return _reject(record, "event_too_large", message)
