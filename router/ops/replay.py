"""``router replay``: run the pipeline again for one destination over a window of
``events.raw``, and write what it routes to that destination's topic for delivery.

Two passes over the window. The first finds, per partition, the offsets of the records whose
timestamp is in the window (start: ``offsets_for_times``, then records before the start are
skipped, see :mod:`router.ops.reading`; end: found by reading) and counts them, which is the
total the progress bar of the second pass counts to, and all ``--dry-run`` needs. The second
reads exactly those records again and runs every stage the processor runs (decode,
middleware, tracking plan, source transformations, then the destination's integrations
flag, filters and transformations) with the workspace narrowed to the one destination, so no
other destination gets anything.

Privacy regulations hold in a replay as they do live, and more. Not replayed: events of a
user whose data was deleted (``SUPPRESS_WITH_DELETE``) written before the deletion, even if
the user was unsuppressed since (counted ``deleted``: deleted data never comes back through a
replay); events written while their user was suppressed, and every event of a user
suppressed now (counted ``suppressed``). Both privacy topics are read to their end before
the first record is replayed; times are the records' timestamps against the regulations'.

By design the replay skips deduplication: replayed events keep their messageIds and would
otherwise all be dropped as duplicates. Only the chosen destination receives them again (a
partner that deduplicates on messageId, e.g. webhook's ``Idempotency-Key``, can drop what it
already has). Records that are invalid, or blocked by a plan, were dead-lettered the first
time and are not written again; they are only counted. Each record written carries the
header ``router-replay: 1``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.structs import TopicPartition

from router.broker.clients import BatchSender, OutRecord, make_producer
from router.broker.topics import Topics, topics_for
from router.config import Workspace
from router.ops.reading import TopicReader
from router.pipeline.compile import compile_workspace
from router.pipeline.pipeline import ALL_DESTINATIONS, BatchResult, BatchStats, Pipeline
from router.privacy.state import History, read_privacy
from router.processor import destination_call_types

logger = logging.getLogger(__name__)

REPLAY_HEADER = "router-replay"
#: Producers' clocks may disagree this much: a record this far past the window's end closes
#: its partition; later-stamped records before it are still read (and left out).
CLOCK_SLACK_MS = 60_000


class ReplayError(ValueError):
    """The replay cannot run as asked (unknown or disabled destination, empty window)."""


@dataclass(slots=True)
class Window:
    destination: str
    since_ms: int
    until_ms: int
    #: Per partition of events.raw: (first, last) offset of records inside the window.
    ranges: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    records: int = 0


@dataclass(slots=True)
class ReplayResult:
    window: Window
    read: int = 0
    sent: int = 0
    #: Why records were not sent to the destination: stage reasons (``sample``, ``only``,
    #: ``integrations``...) and the dead-letter codes of invalid ones.
    not_sent: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False


def _process(pipeline: Pipeline, batch: list[Any], result: ReplayResult) -> BatchResult:
    """The pipeline over ``batch``; should one record make it raise, the records are run one at
    a time and the ones that raise are counted (``processor_error``) instead of replayed."""
    try:
        return pipeline.process(batch)
    except Exception:
        logger.exception("replay: a batch failed in the pipeline; running it record by record")
    outputs: list[OutRecord] = []
    merged = BatchResult(outputs, {}, BatchStats(received=len(batch)))
    for record in batch:
        try:
            one = pipeline.process([record])
        except Exception:  # noqa: BLE001 - that record only
            result.not_sent["processor_error"] += 1
            continue
        outputs.extend(one.outputs)
        merged.stats.rejected.update(one.stats.rejected)
        merged.stats.dropped.update(one.stats.dropped)
    return merged


def _blocked(record: Any, history: History) -> str | None:
    """Why a privacy regulation keeps ``record`` from being replayed, or None."""
    try:
        body = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return None  # the pipeline counts it as invalid
    user = body.get("userId") if isinstance(body, dict) else None
    if user is None:
        return None
    return history.blocked(str(user), record.timestamp / 1000)


def narrowed(workspace: Workspace, destination_id: str) -> Workspace:
    """The workspace with only ``destination_id``, which must exist and be enabled."""
    try:
        destination = workspace.destination_by_id(destination_id)
    except KeyError:
        known = ", ".join(d.id for d in workspace.destinations) or "none"
        raise ReplayError(f"no destination {destination_id!r} (known: {known})") from None
    if not destination.enabled:
        raise ReplayError(f"destination {destination_id!r} is disabled: nothing would deliver it")
    return workspace.model_copy(update={"destinations": [destination]})


async def find_window(
    workspace: Workspace,
    destination_id: str,
    since_ms: int,
    until_ms: int,
    *,
    progress: Callable[[int], None] | None = None,
) -> Window:
    """First pass: which records of events.raw are in [since_ms, until_ms]."""
    narrowed(workspace, destination_id)
    if since_ms >= until_ms:
        raise ReplayError("the window is empty: --from must be before --to")
    window = Window(destination_id, since_ms, until_ms)
    topic = topics_for(workspace.kafka).raw
    async with TopicReader(workspace.kafka, role="replay-scan") as reader:
        partitions = await reader.partitions([topic])
        positions = await reader.start_at(partitions, since_ms=since_ms)
        floors = {tp: position.not_before for tp, position in positions.items()}
        async for records in reader.read_to_end(
            not_before=floors, until_ms=until_ms, until_slack_ms=CLOCK_SLACK_MS
        ):
            for record in records:
                tp = TopicPartition(record.topic, record.partition)
                first, _ = window.ranges.get(tp, (record.offset, record.offset))
                window.ranges[tp] = (first, record.offset)
            window.records += len(records)
            if progress is not None:
                progress(len(records))
    return window


async def replay(
    workspace: Workspace,
    window: Window,
    *,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Second pass: run the pipeline for the window's destination and write what it routes."""
    one = narrowed(workspace, window.destination)
    topics = Topics(workspace.kafka.topic_prefix)
    compiled = compile_workspace(one, topics, destination_call_types(one))
    target = topics.destination(window.destination)
    result = ReplayResult(window, dry_run=dry_run)
    if not window.ranges:
        return result
    suppressions, book = await read_privacy(workspace.kafka, topics, role="replay")
    history = History(book)
    producer = make_producer(workspace.kafka, role="replay")
    await producer.start()
    try:
        count = len(await producer.partitions_for(target))
        pipeline = Pipeline(compiled, topics, None, {target: count}, suppressions.users)
        sender = BatchSender(producer)
        async with TopicReader(workspace.kafka, role="replay") as reader:
            reader.assign(list(window.ranges))
            reader.seek({tp: first for tp, (first, _) in window.ranges.items()})
            consumer = reader.consumer
            open_partitions = dict(window.ranges)
            deadline_idle = time.monotonic() + 30
            while open_partitions:
                polled = await consumer.getmany(*open_partitions, timeout_ms=500, max_records=2000)
                if not polled:
                    if time.monotonic() > deadline_idle:
                        break  # the records are gone (retention) or the broker stopped answering
                    continue
                deadline_idle = time.monotonic() + 30
                batch = []
                for tp, records in polled.items():
                    _, last = open_partitions.get(tp, (0, -1))
                    for record in records:
                        if record.offset > last:
                            break
                        if window.since_ms <= record.timestamp <= window.until_ms:
                            batch.append(record)
                    if records and records[-1].offset >= last:
                        open_partitions.pop(tp, None)
                if history:
                    kept = []
                    for record in batch:
                        why = _blocked(record, history)
                        if why is None:
                            kept.append(record)
                        else:
                            result.not_sent[why] += 1
                    result.read += len(batch) - len(kept)
                    if progress is not None and len(kept) < len(batch):
                        progress(len(batch) - len(kept))
                    batch = kept
                if not batch:
                    continue
                processed = _process(pipeline, batch, result)
                outputs = [
                    OutRecord(
                        o.topic, o.key, o.value, (*o.headers, (REPLAY_HEADER, b"1")), o.partition
                    )
                    for o in processed.outputs
                    if o.topic == target
                ]
                if outputs and not dry_run:
                    await sender.send(outputs)
                result.read += len(batch)
                result.sent += len(outputs)
                stats = processed.stats
                result.not_sent.update(stats.rejected)
                for (dest, reason), dropped in stats.dropped.items():
                    if dest in (window.destination, ALL_DESTINATIONS):
                        result.not_sent[reason] += dropped
                if progress is not None:
                    progress(len(batch))
    finally:
        await producer.stop()
    return result
