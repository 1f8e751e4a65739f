"""All stages over one polled batch, without Kafka: records in, output records out.

The processor owns the I/O (poll, produce, commit); this module owns the decisions, so unit
tests and benchmarks run the exact hot path on lists.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson

from router import spec
from router.broker.clients import OutRecord
from router.broker.partitioning import murmur2
from router.broker.topics import Topics
from router.pipeline import integrations
from router.pipeline.compile import CompiledDestination, CompiledSource, CompiledWorkspace
from router.pipeline.decode import RawRecord, decode
from router.pipeline.dedup import Deduplicator, PendingKeys
from router.pipeline.middleware import MiddlewareError
from router.pipeline.pii import then_redact
from router.pipeline.plans import PlanStage
from router.pipeline.records import Envelope
from router.pipeline.suppression import drop_suppressed
from router.rejection import Rejection

logger = logging.getLogger(__name__)

# (slot, destination, call types taken or None for all, topic, partition count or None,
#  filter or None, transform or None, whether their output must be validated again)
_Route: TypeAlias = tuple[
    int,
    CompiledDestination,
    frozenset[str] | None,
    str,
    int | None,
    Callable[[dict[str, Any]], dict[str, Any] | str] | None,
    Callable[[dict[str, Any]], dict[str, Any] | None] | None,
    bool,
]
# (source, its tracking plan or None, middleware or None, source transform or None, headers,
#  routes, how to re-check the middleware's output (_RECHECK_*), whether to re-check the
#  source transformations' output)
_SourceRoute: TypeAlias = tuple[
    CompiledSource,
    PlanStage | None,
    Callable[[dict[str, Any]], dict[str, Any] | None] | None,
    Callable[[dict[str, Any]], dict[str, Any] | None] | None,
    tuple[tuple[str, bytes], ...],
    tuple[_Route, ...],
    int,
    bool,
]
_RECHECK_NONE, _RECHECK_RULES, _RECHECK_DEEP = 0, 1, 2

# Stages an event can be dead-lettered in after decoding (the ``stage`` of its DLQ record), and
# the reason code of an event that a stage returned invalid.
_INVALID_AFTER = {
    "middleware": "middleware_invalid",
    "transformation": "transformation_invalid",
    "destination_transformation": "transformation_invalid",
}
_PER_DESTINATION = frozenset({"filter", "destination_transformation", "encode"})
# The largest record the processor writes for a source with a user function: only user code
# can take an event there (ingress holds records to spec.MAX_RECORD_BYTES, configured values
# are the operator's), and beyond it the producer (1 MB batches) or Kafka (1 MB messages by
# default) would refuse the whole batch.
_MAX_OUTPUT_BYTES = 512 * 1024

# Partition hashes kept between batches: users recur, and a miss costs about a microsecond.
# Bounded (a few MB at most); when full it is emptied and refills with the keys now in use.
_HASH_CACHE_SIZE = 1 << 16

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


class _GcPause:
    """Keeps CPython's cyclic collector off for the duration of a batch, then restores it.

    Why: a batch allocates tens of thousands of containers (decoded events, per-destination
    copies, output records) that stay alive until it returns. Allocation counts trigger the
    collector many times mid-batch, and its older generations traverse the whole heap, yet the
    stages build no reference cycles, so those passes free nothing: they took about a third of
    the batch's time in bench.pipeline_micro. Paused, the collector runs once when the
    batch ends (the allocation count is kept), over the batch's survivors; cycles made
    elsewhere meanwhile are collected then. Nesting and threads are counted, so the state the
    first entrant found is the one restored.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._resume:
                gc.enable()


_GC_PAUSE = _GcPause()


class Pipeline:
    """The compiled stages of one workspace, applied batch by batch."""

    pause_gc = True
    """Hold the cyclic garbage collector off while a batch runs (see :class:`_GcPause`)."""

    def __init__(
        self,
        compiled: CompiledWorkspace,
        topics: Topics,
        dedup: Deduplicator | None,
        partition_counts: dict[str, int],
        suppressed: AbstractSet[str] | None = None,
    ) -> None:
        self.compiled = compiled
        self.topics = topics
        self.dedup = dedup
        self.partition_counts = partition_counts
        #: Suppressed user ids (privacy), changed in place by the caller's reader of
        #: privacy.suppressions; their events stop here (one set lookup per event).
        self.suppressed = suppressed
        self._hash_cache: dict[bytes, int] = {}
        self._routes, self._route_ids = self._build_routes()
        #: Called with each batch's events after dedup, before any stage changes them (the
        #: processor's source schema, router.observability.source_schema).
        self.observe: Callable[[Sequence[Envelope]], None] | None = None

    def _build_routes(self) -> tuple[dict[str, _SourceRoute], list[str]]:
        """Everything the per-event loops read, resolved once rather than per event and
        destination: the destination loop runs events x destinations times and dominates a
        batch. The workspace and partition counts are fixed for a pipeline's life."""
        routes: dict[str, _SourceRoute] = {}
        route_ids: list[str] = []
        counts = self.partition_counts
        for source in self.compiled.sources.values():
            dest_routes: list[_Route] = []
            for dest in source.destinations:
                transform = None if dest.transform.empty else dest.transform.apply
                if dest.pii is not None:
                    transform = then_redact(transform, dest.pii)
                dest_routes.append(
                    (
                        len(route_ids),
                        dest,
                        dest.call_types,
                        dest.topic,
                        counts.get(dest.topic) or None,
                        None if dest.filter.empty else dest.filter.apply,
                        transform,
                        dest.filter.may_invalidate
                        or dest.transform.may_invalidate
                        or (dest.pii is not None and dest.pii.may_invalidate),
                    )
                )
                route_ids.append(dest.id)
            middleware = source.middleware
            recheck = _RECHECK_NONE
            if middleware.runs_user_code:
                recheck = _RECHECK_DEEP
            elif middleware.may_invalidate:
                recheck = _RECHECK_RULES
            routes[source.id] = (
                source,
                source.plan,
                None if middleware.empty else middleware,
                None if source.transform.empty else source.transform.apply,
                (("source", source.id.encode()),),
                tuple(dest_routes),
                recheck,
                source.transform.may_invalidate,
            )
        return routes, route_ids

    def process(self, records: Sequence[RawRecord]) -> BatchResult:
        """Every stage over one polled batch: output records, dedup keys to remember, stats."""
        if not self.pause_gc:
            return self._process(records)
        with _GC_PAUSE:
            return self._process(records)

    def _process(self, records: Sequence[RawRecord]) -> BatchResult:
        stats = BatchStats(received=len(records))
        envelopes, rejections = decode(records, self.compiled.sources_by_key)
        if self.suppressed:
            envelopes, suppressed = drop_suppressed(envelopes, self.suppressed)
            if suppressed:
                stats.dropped[(ALL_DESTINATIONS, "suppressed")] += suppressed
        pending: PendingKeys = {}
        if self.dedup is not None:
            envelopes, stats.duplicates, pending = self.dedup.filter(envelopes)
        if self.observe is not None:
            self.observe(envelopes)
        outputs: list[OutRecord] = []
        violations_out: list[OutRecord] = []
        routes, route_ids = self._routes, self._route_ids
        routed = [0] * len(route_ids)
        dropped = stats.dropped
        append = outputs.append
        dumps = orjson.dumps
        is_enabled = integrations.is_enabled
        recheck = spec.recheck
        partition_key = spec.partition_key
        max_output = _MAX_OUTPUT_BYTES
        hash_of = self._hash_cache.get
        failures = 0
        released: set[bytes] = set()  # dedup keys of events dead-lettered whole
        for env in envelopes:
            (
                source,
                plan,
                middleware,
                source_transform,
                headers,
                table,
                recheck_middleware,
                recheck_transform,
            ) = routes[env.source_id]
            # One guard per event, free in CPython 3.11 while nothing raises: whatever a stage
            # throws dead-letters this event alone (``stage`` says where) and the batch goes on.
            stage = "middleware"
            mark = len(outputs)
            try:
                # The source's stages: middleware, tracking plan, source transformations.
                event = env.event
                if middleware is not None:
                    kept = middleware(event)
                    if kept is None:
                        dropped[(ALL_DESTINATIONS, "middleware")] += 1
                        continue
                    event = kept
                    if recheck_middleware:
                        if recheck_middleware == _RECHECK_DEEP:
                            spec.check_depth(event)
                        recheck(event)
                if plan is not None:
                    stage = "plan"
                    outcome = plan(event)
                    for violation in outcome.violations:
                        stats.violations[(source.id, violation["type"])] += 1
                    if outcome.violations and plan.forward_to:
                        violations_out.extend(plan.violation_records(event, outcome.violations))
                    if outcome.event is None:
                        rejections.append(
                            _rejection(
                                env,
                                outcome.blocked_reason or "plan_blocked",
                                "blocked by tracking plan " + plan.plan_id,
                                "plan",
                                {"violations": outcome.violations},
                            )
                        )
                        released.add(env.dedup_key)
                        continue
                    event = outcome.event
                if source_transform is not None:
                    stage = "transformation"
                    kept = source_transform(event)
                    if kept is None:
                        dropped[(ALL_DESTINATIONS, "transformation")] += 1
                        continue
                    event = kept
                    if recheck_transform:
                        recheck(event)
                # Fan-out: integrations object, destination filters and transformations, then
                # one record per destination that still wants the event.
                stage = "route"
                key = partition_key(event)
                hashed: int | None = None
                if key:
                    hashed = hash_of(key)
                    if hashed is None:
                        hashed = self._hash(key)
                flags = event.get("integrations")
                shared_bytes: bytes | None = None
                # Only a user function can make an event that large (see _MAX_OUTPUT_BYTES).
                sized = recheck_middleware == _RECHECK_DEEP
                kind = event["type"]
                for slot, dest, types, topic, count, apply_filter, transform, check in table:
                    if types is not None and kind not in types:
                        dropped[(dest.id, "unsupported_type")] += 1
                        continue
                    if flags and not is_enabled(flags, dest.name, warehouse=dest.warehouse):
                        dropped[(dest.id, "integrations")] += 1
                        continue
                    final = event
                    if apply_filter is not None:
                        stage = "filter"
                        filtered = apply_filter(event)
                        if isinstance(filtered, str):
                            dropped[(dest.id, filtered)] += 1
                            continue
                        final = filtered
                    if transform is not None:
                        stage = "destination_transformation"
                        transformed = transform(final)
                        if transformed is None:
                            dropped[(dest.id, "transformation")] += 1
                            continue
                        final = transformed
                    if check and final is not event and _invalid_for(env, dest, final, rejections):
                        continue
                    stage = "encode"
                    # b"%b" % ...: an exact-size copy of what orjson returns. orjson builds its
                    # output in a 1 KiB malloc block and shrinks it in place; the freed tail is
                    # too small for the next dumps, so a batch's outputs spread over twice
                    # their size in the C heap, which glibc gives back after the batch and
                    # page-faults in again for the next one. The copy (~40 ns) lands in a
                    # right-sized block, and orjson's block is reused at once: a sixth of the
                    # page faults (1.3 -> 0.2 an event) and ~6% more events/s in
                    # bench.pipeline_micro.
                    if final is event:
                        # Unchanged by this destination's stages: every such destination
                        # shares one serialization of the event.
                        if shared_bytes is None:
                            shared_bytes = b"%b" % dumps(event)
                            if sized and len(shared_bytes) > max_output:
                                raise _oversized(len(shared_bytes))
                        value = shared_bytes
                    else:
                        value = b"%b" % dumps(final)
                        if sized and len(value) > max_output:
                            raise _oversized(len(value))
                    partition = hashed % count if (hashed is not None and count) else None
                    append(OutRecord(topic, key, value, headers, partition))
                    routed[slot] += 1
            except Exception as exc:
                # Nothing of a failed event is written: its records for the destinations
                # before the failing one are taken back.
                for record in outputs[mark:]:
                    routed[next(r[0] for r in table if r[3] == record.topic)] -= 1
                del outputs[mark:]
                destination = dest.id if stage in _PER_DESTINATION else None
                failure = _failure(env, stage, exc, destination)
                if failure.reason == "stage_error":
                    failures += 1
                    if failures == 1:
                        logger.error(
                            "stage %s failed on the event at %s/%d@%d; dead-lettered",
                            stage,
                            self.topics.raw,
                            env.partition,
                            env.offset,
                            exc_info=exc,
                        )
                rejections.append(failure)
                released.add(env.dedup_key)
        if released and self.dedup is not None:
            self.dedup.release(pending, released)
        if failures > 1:
            logger.error("%d events of one batch failed in a stage (the first is logged)", failures)
        for slot, n in enumerate(routed):
            if n:
                stats.routed[route_ids[slot]] += n
        input_topic = self.topics.raw
        for rejection in rejections:
            stats.rejected[rejection.reason] += 1
            # Events a tracking plan blocked go to the violations topic; a plan that failed is
            # a dead letter like any other stage's.
            blocked = rejection.stage == "plan" and rejection.reason != "stage_error"
            target = self.topics.violations if blocked else self.topics.dlq
            outputs.append(rejection.to_record(target, input_topic))
        outputs.extend(violations_out)
        return BatchResult(outputs, pending, stats)

    def _hash(self, key: bytes) -> int:
        """Kafka's partitioning hash of ``key``, remembered: a user's events recur."""
        cache = self._hash_cache
        if len(cache) >= _HASH_CACHE_SIZE:
            cache.clear()  # bounded memory; the next keys refill it
        hashed = cache[key] = murmur2(key) & 0x7FFFFFFF
        return hashed


def _oversized(size: int) -> spec.InvalidEvent:
    return spec.InvalidEvent(
        "event_too_large",
        f"the stages made the event {size} bytes long; at most {_MAX_OUTPUT_BYTES} are written",
    )


def _invalid_for(
    env: Envelope,
    dest: CompiledDestination,
    event: dict[str, Any],
    rejections: list[Rejection],
) -> bool:
    """Whether a destination's filters and transformations made ``event`` invalid; such an
    event is dead-lettered for that destination alone (the others still get theirs)."""
    try:
        spec.recheck(event)
    except spec.InvalidEvent as exc:
        rejections.append(
            _rejection(
                env,
                "transformation_invalid",
                f"the filters and transformations of destination {dest.id} made the event "
                f"invalid: {exc.message}",
                "destination_transformation",
                {"destination": dest.id, "code": exc.code},
            )
        )
        return True
    return False


def _failure(env: Envelope, stage: str, error: Exception, destination: str | None) -> Rejection:
    """The dead-letter record of an event a stage failed on, with a reason code for it."""
    details: dict[str, Any] = {} if destination is None else {"destination": destination}
    if isinstance(error, MiddlewareError):
        return _rejection(env, "middleware_error", str(error), "middleware")
    reason = _INVALID_AFTER.get(stage)
    if reason is not None and isinstance(error, spec.InvalidEvent):
        details["code"] = error.code
        what = "source middleware" if stage == "middleware" else "transformations"
        message = f"the {what} made the event invalid: {error.message}"
        return _rejection(env, reason, message, stage, details)
    if stage == "encode" and isinstance(error, spec.InvalidEvent):
        return _rejection(env, error.code, error.message, stage, details or None)
    if stage == "encode" and isinstance(error, orjson.JSONEncodeError):
        message = f"the event cannot be written as JSON: {error}"
        return _rejection(env, "unencodable", message, stage, details or None)
    text = f"{type(error).__name__}: {error}"
    details["error"] = text
    return _rejection(env, "stage_error", f"the {stage} stage failed: {text}", stage, details)


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
