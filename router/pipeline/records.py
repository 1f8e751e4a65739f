"""Records that flow between stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from router.broker.clients import OutRecord


@dataclass(slots=True)
class Envelope:
    """One decoded event in flight through the processor, with where it came from.

    ``partition`` is the partition number it was read from (of ``events.raw`` or
    ``events.rekeyed``: the same number names its dedup store). A record read from
    ``events.rekeyed`` has ``notes["origin"]``: (partition, offset, timestamp) of the original
    record in ``events.raw``, which is what rejections point at.
    """

    event: dict[str, Any]
    raw: bytes
    partition: int
    offset: int
    timestamp_ms: int
    source_id: str = ""
    headers: Sequence[tuple[str, bytes]] = ()
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input the router will not deliver, with a reason a person can act on.

    Written to ``events.dlq`` (invalid input) or ``events.violations`` (tracking-plan blocks)
    with the original bytes, so it can be fixed and replayed.
    """

    reason: str
    message: str
    stage: str
    raw: bytes
    partition: int
    offset: int
    timestamp_ms: int
    source_id: str | None = None
    details: dict[str, Any] | None = None

    def to_record(self, topic: str, input_topic: str) -> OutRecord:
        try:
            payload: Any = orjson.loads(self.raw)
        except orjson.JSONDecodeError:
            payload = None
        body: dict[str, Any] = {
            "reason": self.reason,
            "message": self.message,
            "stage": self.stage,
            "sourceId": self.source_id,
            "input": {
                "topic": input_topic,
                "partition": self.partition,
                "offset": self.offset,
                "timestamp": self.timestamp_ms,
            },
            "payload": payload,
            # The exact bytes, so undecodable input is kept too (latin-1 maps bytes 1:1).
            "raw": None if payload is not None else self.raw.decode("latin-1"),
        }
        if self.details:
            body["details"] = self.details
        return OutRecord(
            topic=topic,
            key=self.source_id.encode() if self.source_id else None,
            value=orjson.dumps(body),
            headers=(("reason", self.reason.encode()),),
        )
