"""Input the router will not deliver, as a dead-letter record a person can act on.

Both ingress paths reject input: the gateway (items of a batch it cannot accept) and the
processor (records on ``events.raw`` it cannot route). They write the same record to
``events.dlq`` (or ``events.violations`` for tracking-plan blocks), with the reason, the stage,
where the input came from and its exact bytes, so it can be fixed and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from router.broker.clients import OutRecord


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
        body = self._body(input_topic, payload)
        try:
            value = orjson.dumps(body)
        except orjson.JSONEncodeError:
            # orjson reads 1,024 levels but writes 254: input nested deeper than that is kept
            # as its exact bytes instead.
            value = orjson.dumps(self._body(input_topic, None))
        return OutRecord(
            topic=topic,
            key=self.source_id.encode() if self.source_id else None,
            value=value,
            headers=(("reason", self.reason.encode()),),
        )

    def _body(self, input_topic: str, payload: Any) -> dict[str, Any]:
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
        return body


# How deep dump_any keeps a value orjson cannot write whole (it writes at most 254 levels).
_KEPT_DEPTH = 200
_CUT = "(nested too deeply: not kept)"


def dump_any(value: Any) -> bytes:
    """JSON of a decoded value for a dead-letter record, even one orjson cannot write whole.

    JSON nested deeper than orjson writes is cut at ``_KEPT_DEPTH`` levels (deeper objects
    become a marker string), so the record still shows a person what was sent.
    """
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return orjson.dumps(_cut(value, _KEPT_DEPTH))


def _cut(value: Any, levels: int) -> Any:
    if isinstance(value, dict):
        if levels <= 1:
            return _CUT
        return {key: _cut(child, levels - 1) for key, child in value.items()}
    if isinstance(value, list | tuple):
        if levels <= 1:
            return _CUT
        return [_cut(child, levels - 1) for child in value]
    return value
