"""Segment events -> Kafka records (pure: same events, same bytes).

Value formats:

- ``segment``: the event's JSON as the router delivers it everywhere else;
- ``cloudevents``: CloudEvents 1.0 in structured content mode (Kafka protocol binding,
  section 3.3): the value is the JSON event format ``{"specversion": "1.0", "id": <messageId>,
  "source": ..., "type": <prefix><call type>, "time": <timestamp>, "datacontenttype":
  "application/json", "data": <the Segment event>}`` and the ``content-type`` header is
  ``application/cloudevents+json; charset=UTF-8``;
- ``cloudevents_binary``: binary content mode (section 3.2): the value is the event's JSON,
  ``content-type`` is ``application/json`` and every other attribute is a ``ce_<name>``
  header (UTF-8).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from destinations.base import DestinationError, Encoded, EncodeError, Event, raw_events
from destinations.kafka.config import KafkaForwardSettings
from router.spec import InvalidEvent, format_timestamp, parse_timestamp

Headers = tuple[tuple[str, bytes], ...]

STRUCTURED_CONTENT_TYPE = b"application/cloudevents+json; charset=UTF-8"
JSON_CONTENT_TYPE = b"application/json"


@dataclass(frozen=True, slots=True)
class ForwardRecord:
    """One record for the target topic."""

    key: bytes | None
    value: bytes
    headers: Headers = ()

    @property
    def size(self) -> int:
        """Bytes of key, value and headers (what counts against the target's limits)."""
        heads = sum(len(name) + len(value) for name, value in self.headers)
        return len(self.key or b"") + len(self.value) + heads


@dataclass(frozen=True, slots=True)
class ForwardBatch:
    """The records of one :meth:`encode`, in the order of the events they carry.

    ``records[i]`` carries the event at position ``covers[i]`` of the encoded batch.
    """

    topic: str
    records: tuple[ForwardRecord, ...]
    message_ids: tuple[str, ...]
    covers: tuple[int, ...]


class KafkaEncoder:
    def __init__(self, settings: KafkaForwardSettings) -> None:
        self.settings = settings
        self._static: Headers = tuple(
            (name, value.encode()) for name, value in settings.headers.items()
        )

    def encode(self, events: Sequence[Event]) -> Encoded[ForwardBatch]:
        records: list[ForwardRecord] = []
        covers: list[int] = []
        message_ids: list[str] = []
        failed: dict[int, DestinationError] = {}
        # The bytes read from dest.<id>, when the lane passed them: not serialized again.
        raw = raw_events(events)
        for position, event in enumerate(events):
            try:
                record = self.record(event, raw[position] if raw is not None else None)
            except EncodeError as exc:
                failed[position] = exc
                continue
            records.append(record)
            covers.append(position)
            message_ids.append(_message_id(event))
        requests = (
            [ForwardBatch(self.settings.topic, tuple(records), tuple(message_ids), tuple(covers))]
            if records
            else []
        )
        return Encoded(requests, failed)

    def record(self, event: Event, body: bytes | None = None) -> ForwardRecord:
        """The record for ``event``; ``body`` is its JSON when the caller has it already."""
        if body is None:
            try:
                body = orjson.dumps(event)
            except orjson.JSONEncodeError as exc:
                raise EncodeError(f"event is not JSON-serializable: {exc}") from exc
        key = self._key(event)
        value_format = self.settings.value_format
        if value_format == "segment":
            return ForwardRecord(key, body, self._static)
        attributes = self._cloudevent_attributes(event, body)
        if value_format == "cloudevents":
            head = orjson.dumps({**attributes, "datacontenttype": "application/json"})
            # The event's bytes spliced in as "data", last: {..., "data": <event>}.
            value = head[:-1] + b',"data":' + body + b"}"
            return ForwardRecord(
                key, value, (("content-type", STRUCTURED_CONTENT_TYPE), *self._static)
            )
        headers = [("content-type", JSON_CONTENT_TYPE)]
        headers += [(f"ce_{name}", str(text).encode()) for name, text in attributes.items()]
        return ForwardRecord(key, body, (*headers, *self._static))

    def _key(self, event: Event) -> bytes | None:
        choice = self.settings.key
        if choice == "none":
            return None
        if choice == "message_id":
            value = event.get("messageId")
        else:
            value = event.get("userId")
            if value is None or value == "":
                value = event.get("anonymousId")
        if value is None or value == "":
            return None
        return str(value).encode()

    def _cloudevent_attributes(self, event: Event, body: bytes) -> dict[str, Any]:
        options = self.settings.cloudevents
        # ``id`` is required; an event without a messageId (never one the processor wrote)
        # gets a digest of its bytes, so a re-sent record keeps its id.
        event_id = event.get("messageId")
        if not isinstance(event_id, str) or not event_id:
            event_id = "sha256-" + hashlib.sha256(body).hexdigest()
        attributes: dict[str, Any] = {
            "specversion": "1.0",
            "id": event_id,
            "source": options.source,
            "type": f"{options.type_prefix}{event.get('type', 'unknown')}",
        }
        moment = event.get("timestamp")
        if moment is not None:
            # An optional attribute: better absent than not RFC 3339.
            with contextlib.suppress(InvalidEvent):
                attributes["time"] = format_timestamp(parse_timestamp(moment, "timestamp"))
        return attributes


def _message_id(event: Event) -> str:
    value = event.get("messageId")
    return value if isinstance(value, str) else ""
