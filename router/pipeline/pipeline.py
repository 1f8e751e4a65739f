"""All stages over one polled batch, without Kafka: records in, output records out.

The processor owns the I/O (poll, produce, commit); this module owns the decisions, so unit
tests and benchmarks run the exact hot path on lists.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from router import spec
from router.broker.clients import OutRecord
from router.broker.topics import Topics
from router.pipeline import integrations
from router.pipeline.compile import CompiledSource, CompiledWorkspace
from router.pipeline.decode import RawRecord, decode
from router.pipeline.dedup import Deduplicator, PendingKeys
from router.pipeline.middleware import MiddlewareError
from router.pipeline.records import Envelope, Rejection

logger = logging.getLogger(__name__)

ALL_DESTINATIONS = "all"


@dataclass(slots=True)
class BatchStats:
    received: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: dict[str, int] = field(default_factory=dict)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    routed: Counter[str] = field(default_factory=Counter)
    violations: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass(slots=True)
class BatchResult:
    outputs: list[OutRecord]
    pending_keys: PendingKeys
    stats: BatchStats


class Pipeline:
    """The compiled stages of one workspace, applied batch by batch."""

    def __init__(
        self,
        compiled: CompiledWorkspace,
        topics: Topics,
        dedup: Deduplicator | None,
        partition_counts: dict[str, int],
    ) -> None:
        self.compiled = compiled
        self.topics = topics
        self.dedup = dedup
        self.partition_counts = partition_counts

    def process(self, records: Sequence[RawRecord]) -> BatchResult:
        stats = BatchStats(received=len(records))
        envelopes, rejections = decode(records, self.compiled.sources_by_key)
        pending: PendingKeys = {}
        if self.dedup is not None:
            envelopes, stats.duplicates, pending = self.dedup.filter(envelopes)
        outputs: list[OutRecord] = []
        violations_out: list[OutRecord] = []
        sources = self.compiled.sources
        for env in envelopes:
            source = sources[env.source_id]
            event = self._source_stages(source, env, rejections, violations_out, stats)
            if event is not None:
                self._fan_out(source, env, event, outputs, stats)
        input_topic = self.topics.raw
        for rejection in rejections:
            stats.rejected[rejection.reason] += 1
            target = self.topics.violations if rejection.stage == "plan" else self.topics.dlq
            outputs.append(rejection.to_record(target, input_topic))
        outputs.extend(violations_out)
        return BatchResult(outputs, pending, stats)

    def _source_stages(
        self,
        source: CompiledSource,
        env: Envelope,
        rejections: list[Rejection],
        violations_out: list[OutRecord],
        stats: BatchStats,
    ) -> dict[str, Any] | None:
        """Middleware, tracking plan and source transformations; None when the event stops."""
        event: dict[str, Any] | None = env.event
        try:
            event = source.middleware(env.event)
        except MiddlewareError as exc:
            rejections.append(_rejection(env, "middleware_error", str(exc), "middleware"))
            return None
        if event is None:
            stats.dropped[(ALL_DESTINATIONS, "middleware")] += 1
            return None
        if source.plan is not None:
            outcome = source.plan(event)
            for violation in outcome.violations:
                stats.violations[(source.id, violation["type"])] += 1
            if outcome.violations and source.plan.enforcement.forward_violations:
                violations_out.extend(
                    OutRecord(self.topics.violations, b"schema-violations", orjson.dumps(v))
                    for v in source.plan.violation_events(event, outcome.violations)
                )
            if outcome.event is None:
                rejections.append(
                    _rejection(
                        env,
                        outcome.blocked_reason or "plan_blocked",
                        "blocked by tracking plan " + source.plan.plan_id,
                        "plan",
                        {"violations": outcome.violations},
                    )
                )
                return None
            event = outcome.event
        transformed = source.transform(event)
        if transformed is None:
            stats.dropped[(ALL_DESTINATIONS, "transformation")] += 1
        return transformed

    def _fan_out(
        self,
        source: CompiledSource,
        env: Envelope,
        event: dict[str, Any],
        outputs: list[OutRecord],
        stats: BatchStats,
    ) -> None:
        """Integrations object, destination filters and transformations, then one record each."""
        key = spec.partition_key(event)
        headers = (("source", source.id.encode()),)
        shared_bytes: bytes | None = None
        hashed = murmur2(key) & 0x7FFFFFFF if key else None
        flags = event.get("integrations")
        for dest in source.destinations:
            if flags and not integrations.is_enabled(flags, dest.name, warehouse=dest.warehouse):
                stats.dropped[(dest.id, "integrations")] += 1
                continue
            filtered, dropped_by = dest.filter(event)
            if filtered is None:
                stats.dropped[(dest.id, dropped_by or "filter")] += 1
                continue
            final = dest.transform(filtered)
            if final is None:
                stats.dropped[(dest.id, "transformation")] += 1
                continue
            if final is event:
                if shared_bytes is None:
                    shared_bytes = orjson.dumps(event)
                value = shared_bytes
            else:
                value = orjson.dumps(final)
            count = self.partition_counts.get(dest.topic)
            partition = hashed % count if (hashed is not None and count) else None
            outputs.append(OutRecord(dest.topic, key, value, headers, partition))
            stats.routed[dest.id] += 1


def _rejection(
    env: Envelope, reason: str, message: str, stage: str, details: dict[str, Any] | None = None
) -> Rejection:
    return Rejection(
        reason=reason,
        message=message,
        stage=stage,
        raw=env.raw,
        partition=env.partition,
        offset=env.offset,
        timestamp_ms=env.timestamp_ms,
        source_id=env.source_id,
        details=details,
    )
