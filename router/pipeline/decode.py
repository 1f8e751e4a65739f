"""Stage 1 and 2: decode and validate raw records, then find each event's source by write key.

Nothing here raises on bad input: every record becomes an :class:`Envelope` or a
:class:`Rejection` with a reason code, so the processor never crashes on what producers send.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from router import spec
from router.pipeline.records import Envelope, Rejection
from router.pipeline.rekey import MESSAGE_ID_HEADER, ORIGIN_HEADER, parse_origin

WRITE_KEY_HEADER = "write-key"
# Stable ids for events that arrive without a messageId: a replay of the same record after a
# crash gets the same id, so dedup recognises it.
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


def _reject(
    record: RawRecord, reason: str, message: str, source_id: str | None = None
) -> Rejection:
    partition, offset, timestamp = record.partition, record.offset, record.timestamp
    for name, value in record.headers or ():
        if name == ORIGIN_HEADER:  # a re-keyed copy: point at the original in events.raw
            partition, offset, timestamp = parse_origin(value) or (partition, offset, timestamp)
    return Rejection(
        reason=reason,
        message=message,
        stage="decode",
        raw=record.value or b"",
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp,
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
    validate = spec.validate
    max_bytes = spec.MAX_RECORD_BYTES
    append = envelopes.append
    # Header bytes -> write key text: a batch carries a handful of distinct keys, so each is
    # decoded once per batch rather than once per record.
    header_keys: dict[bytes, str] = {}
    for record in records:
        raw = record.value
        if not raw:
            rejections.append(_reject(record, "empty_record", "the record has no value"))
            continue
        if len(raw) > max_bytes:
            rejections.append(
                _reject(
                    record,
                    "event_too_large",
                    f"the event is larger than {max_bytes} bytes",
                )
            )
            continue
        try:
            event = loads(raw)
        except orjson.JSONDecodeError as exc:
            rejections.append(_reject(record, "invalid_json", f"not valid JSON: {exc}"))
            continue
        header_key = None
        # Set on copies the re-keying stage wrote to events.rekeyed (see router.pipeline.rekey).
        carried_id: bytes | None = None  # (header values may be None: nothing is assumed)
        origin: tuple[int, int, int] | None = None
        headers = record.headers or ()
        for name, value in headers:
            if name == WRITE_KEY_HEADER:
                header_key = value
            elif name == MESSAGE_ID_HEADER:
                carried_id = value
            elif name == ORIGIN_HEADER:
                origin = parse_origin(value)
        timestamp_ms = record.timestamp if origin is None else origin[2]
        body_key = event.pop("writeKey", None) if isinstance(event, dict) else None
        write_key: Any = body_key
        if header_key:
            write_key = header_keys.get(header_key)
            if write_key is None:
                write_key = header_keys[header_key] = header_key.decode("utf-8", "replace")
        try:
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
                    record, "unknown_write_key", "the write key belongs to no configured source"
                )
            )
            continue
        if not ("receivedAt" in event and "timestamp" in event and event.get("messageId")):
            try:
                spec.stamp(
                    event,
                    datetime.fromtimestamp(timestamp_ms / 1000, UTC),
                    default_id=(
                        carried_id.decode("utf-8", "replace")
                        if isinstance(carried_id, bytes) and carried_id
                        else str(
                            uuid.uuid5(
                                _MESSAGE_ID_NAMESPACE,
                                f"{record.topic}/{record.partition}/{record.offset}",
                            )
                        )
                    ),
                )
            except spec.InvalidEvent as exc:
                rejections.append(_reject(record, exc.code, exc.message, source_id))
                continue
        env = Envelope(
            event, raw, record.partition, record.offset, timestamp_ms, source_id, headers
        )
        if origin is not None:
            env.notes["origin"] = origin
        append(env)
    return envelopes, rejections
