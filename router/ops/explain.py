"""What the processor does with one event, for people: its payload as a destination would see
it (source middleware applied: dropped fields gone, hashed fields hashed) and, per connected
destination, whether it is routed there or filtered out and why.

Both come from the processor's own compiled stages (``router.pipeline``), run again on the
record, so the console can never disagree with the processor about the rules. Two limits,
by design: a random ``sample`` filter (one without ``path``) decides again here, so the
prediction may differ from the processor's draw (delivery outcomes, when they arrive, say
what really happened); and a ``function`` middleware is called again for what is shown, so
it must not have side effects (the README asks the same of every middleware).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from router.broker.topics import Topics
from router.config import Workspace
from router.pipeline.compile import CompiledWorkspace, compile_workspace
from router.pipeline.decode import RawRecord
from router.pipeline.middleware import MiddlewareError
from router.pipeline.pipeline import ALL_DESTINATIONS, Pipeline
from router.processor import destination_call_types

#: Reasons the processor gives for not routing an event, in words for the page.
DROP_REASONS = {
    "unsupported_type": "the destination does not take this call type",
    "integrations": "disabled by the event's integrations object",
    "sample": "not in the sample",
    "drop": "matched a drop filter",
    "only": "did not match an only filter",
    "filter_error": "a filter condition could not be evaluated",
    "transformation": "dropped by a transformation",
    "middleware": "dropped by source middleware",
    "suppressed": "the user is suppressed (privacy regulation)",
}


@dataclass(frozen=True, slots=True)
class Route:
    destination: str
    state: str  # "routed" | "filtered" | "rejected"
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "state": self.state,
            "reason": self.reason,
            "detail": DROP_REASONS.get(self.reason or "", self.reason),
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    #: The event after the source's middleware; None when it cannot be shown safely.
    payload: dict[str, Any] | None
    #: Why the whole event stops (invalid, middleware error, blocked by a plan), or None.
    rejected: tuple[str, str] | None
    routes: tuple[Route, ...]


class KeptRecord:
    """A record as the pipeline reads it (aiokafka's ``ConsumerRecord`` has the same fields)."""

    __slots__ = ("headers", "offset", "partition", "timestamp", "topic", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.value = value
        self.headers = headers


def raw_record(record: RawRecord) -> KeptRecord:
    """A light copy of ``record`` to keep (aiokafka's records hold more than this)."""
    return KeptRecord(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.value,
        tuple((k, bytes(v)) for k, v in record.headers or ()),
    )


class Explainer:
    def __init__(self, workspace: Workspace, topics: Topics) -> None:
        self.workspace = workspace
        self.topics = topics
        self.compiled: CompiledWorkspace = compile_workspace(
            workspace, topics, destination_call_types(workspace)
        )
        self.pipeline = Pipeline(self.compiled, topics, None, {})
        # The console explains one record at a time; pausing the collector is for big batches.
        self.pipeline.pause_gc = False
        self._topic_destination = {d.topic: d.id for d in self.compiled.destinations.values()}

    @property
    def sources_by_key(self) -> dict[str, str]:
        return self.compiled.sources_by_key

    def connected(self, source_id: str) -> list[str]:
        source = self.compiled.sources.get(source_id)
        return [d.id for d in source.destinations] if source else []

    def mask(self, source_id: str | None, event: Any) -> dict[str, Any] | None:
        """``event`` (not modified) with the source's middleware applied, or None when it
        cannot be shown without risk (unknown source, middleware failed or dropped it)."""
        source = self.compiled.sources.get(source_id or "")
        if source is None or not isinstance(event, dict):
            return None
        copy: dict[str, Any] = orjson.loads(orjson.dumps(event))
        copy.pop("writeKey", None)
        try:
            masked = source.middleware(copy)
        except (MiddlewareError, Exception):  # noqa: BLE001
            # Whatever failed, the processor dead-letters this event: never show it in clear.
            return None
        return masked if isinstance(masked, dict) else None

    def explain(self, source_id: str, record: RawRecord, event: dict[str, Any]) -> Explanation:
        """``event``: the decoded, stamped event of ``record`` (not modified)."""
        payload = self.mask(source_id, event)
        try:
            result = self.pipeline.process([record])
        except Exception as exc:  # noqa: BLE001
            # The processor isolates such failures per event; here the prediction is unknown.
            return Explanation(
                payload,
                ("explain_error", f"{type(exc).__name__}: {exc}"),
                tuple(Route(d, "unknown") for d in self.connected(source_id)),
            )
        stats = result.stats
        rejected: tuple[str, str] | None = None
        if stats.rejected:
            reason = next(iter(stats.rejected))
            message = reason
            for output in result.outputs:
                if output.topic in (self.topics.dlq, self.topics.violations):
                    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                        message = str(orjson.loads(output.value or b"{}").get("message") or reason)
                    break
            rejected = (reason, message)
        routed = {
            self._topic_destination[o.topic]
            for o in result.outputs
            if o.topic in self._topic_destination
        }
        everyone = next(
            (reason for (dest, reason) in stats.dropped if dest == ALL_DESTINATIONS), None
        )
        per_destination = dict(stats.dropped.keys())  # one reason per destination
        routes = []
        for dest_id in self.connected(source_id):
            if rejected is not None:
                routes.append(Route(dest_id, "rejected", rejected[0]))
            elif dest_id in routed:
                routes.append(Route(dest_id, "routed"))
            elif everyone is not None:
                routes.append(Route(dest_id, "filtered", everyone))
            else:
                routes.append(Route(dest_id, "filtered", per_destination.get(dest_id, "unknown")))
        return Explanation(payload, rejected, tuple(routes))
