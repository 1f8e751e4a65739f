"""Pipeline.process against a plain reference built from the generic building blocks.

The pipeline's hot loop inlines and specialises a lot (compiled edits, filter and
transformation closures, partition hashing with a cache, slot-built output records, the
garbage collector paused). The reference below is the straightforward version of the same
rules: the Editor-based filters and transformations as they were before the fast paths,
aiokafka's murmur2 and the normal OutRecord constructor. Both must produce the same records,
in the same order, with the same stats.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import random
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2 as kafka_murmur2

from router import spec
from router.broker.clients import OutRecord
from router.broker.topics import Topics
from router.config import (
    AllowPropertiesFilter,
    Destination,
    DropFields,
    DropFilter,
    DropPropertiesFilter,
    HashFields,
    OnlyFilter,
    RenameEvent,
    RenameProperties,
    SampleFilter,
    SetValues,
    Source,
    Workspace,
)
from router.pipeline import integrations
from router.pipeline.compile import compile_middleware, compile_workspace
from router.pipeline.conditions import ConditionEvaluationError, compile_condition
from router.pipeline.dedup import Deduplicator
from router.pipeline.filters import sample_point
from router.pipeline.paths import Editor, delete_in_place, get_path, update_in_place
from router.pipeline.pipeline import Pipeline
from router.workspace import validate_workspace

WRITE_KEY = "wk"
PARTITIONS = 3


@dataclass
class Record:
    value: bytes
    offset: int
    partition: int = 0
    topic: str = "events.raw"
    timestamp: int = 1_795_000_000_000
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("write-key", b"wk")])


# ---------------------------------------------------------------- the reference


def reference_filter(rules: Sequence[Any], event: dict[str, Any]) -> tuple[Any, str | None]:
    """Segment's filter order with the generic Editor, as filters.py did before its fast paths."""
    samplers = [r for r in rules if isinstance(r, SampleFilter)]
    gates = [
        (r.condition, isinstance(r, DropFilter), "drop" if isinstance(r, DropFilter) else "only")
        for r in rules
        if isinstance(r, DropFilter | OnlyFilter)
    ]
    edits = sorted(
        (r for r in rules if isinstance(r, DropPropertiesFilter | AllowPropertiesFilter)),
        key=lambda r: isinstance(r, AllowPropertiesFilter),
    )
    try:
        for rule in samplers:  # deterministic here: a path that is always present
            value = get_path(event, rule.path)
            if not sample_point(value) < rule.fraction:
                return None, "sample"
        for condition, drop_when, reason in gates:
            if compile_condition(condition)(event) == drop_when:
                return None, reason
        editor = Editor(event)
        for rule in edits:
            if rule.condition and not compile_condition(rule.condition)(editor.root):
                continue
            if isinstance(rule, AllowPropertiesFilter):
                editor.keep_only(rule.fields)
            else:
                editor.delete(rule.fields)
    except ConditionEvaluationError:
        return None, "filter_error"
    return editor.root, None


def reference_transform(items: Sequence[Any], event: dict[str, Any]) -> dict[str, Any] | None:
    """Transformations with the generic Editor, as transforms.py did before its fast paths."""
    editor = Editor(event)
    for item in items:
        if item.condition is not None:
            try:
                if not compile_condition(item.condition)(editor.root):
                    continue
            except ConditionEvaluationError:
                continue
        if item.type == "drop_event":
            return None
        if isinstance(item, RenameEvent):
            kind = editor.root.get("type")
            name = {"track": "event", "page": "name", "screen": "name"}.get(kind)
            if name is not None:
                editor.set((name,), item.to)
        elif isinstance(item, RenameProperties):
            editor.rename(item.fields)
        elif isinstance(item, SetValues):
            for path, value in item.values.items():
                editor.set(path, copy.deepcopy(value))
    return editor.root


def reference_middleware(source: Source, event: dict[str, Any]) -> dict[str, Any] | None:
    for item in source.middleware:
        if isinstance(item, DropFields):
            for path in item.fields:
                delete_in_place(event, path)
        elif isinstance(item, HashFields):
            salt, algorithm = item.salt, item.algorithm

            def digest(value: Any, salt: str = salt, algorithm: str = algorithm) -> Any:
                if value is None:
                    return None
                if isinstance(value, bool):
                    text = "true" if value else "false"
                elif isinstance(value, str):
                    text = value
                elif isinstance(value, int | float):
                    text = str(value)
                else:
                    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
                return hashlib.new(algorithm, (salt + text).encode()).hexdigest()

            for path in item.fields:
                update_in_place(event, path, digest)
        else:
            result = compile_middleware([item])(event)
            if result is None:
                return None
            event = result
    return event


def reference(
    workspace: Workspace, records: Sequence[Record], topics: Topics
) -> tuple[list[OutRecord], Counter[str], Counter[tuple[str, str]], Counter[str]]:
    outputs: list[OutRecord] = []
    routed: Counter[str] = Counter()
    dropped: Counter[tuple[str, str]] = Counter()
    invalid: Counter[str] = Counter()  # destination -> events its stages made invalid
    seen: set[tuple[str, str]] = set()
    source = workspace.sources[0]
    dests: list[Destination] = [
        d for d in workspace.destinations if d.enabled and source.id in d.sources
    ]
    for record in records:
        event = orjson.loads(record.value)
        event.pop("writeKey", None)
        spec.validate(event)
        if (source.id, event["messageId"]) in seen:
            continue
        seen.add((source.id, event["messageId"]))
        staged = reference_middleware(source, event)
        if staged is None:
            dropped[("all", "middleware")] += 1
            continue
        event = staged
        key = spec.partition_key(event)
        flags = event.get("integrations")
        for dest in dests:
            if flags and not integrations.is_enabled(flags, dest.name, warehouse=dest.warehouse):
                dropped[(dest.id, "integrations")] += 1
                continue
            filtered, dropped_by = reference_filter(dest.filters, event)
            if filtered is None:
                dropped[(dest.id, dropped_by or "filter")] += 1
                continue
            final = reference_transform(dest.transformations, filtered)
            if final is None:
                dropped[(dest.id, "transformation")] += 1
                continue
            try:
                spec.recheck(copy.deepcopy(final))
            except spec.InvalidEvent:
                invalid[dest.id] += 1
                continue
            partition = (kafka_murmur2(key) & 0x7FFFFFFF) % PARTITIONS if key else None
            outputs.append(
                OutRecord(
                    topics.destination(dest.id),
                    key,
                    orjson.dumps(final),
                    (("source", source.id.encode()),),
                    partition,
                )
            )
            routed[dest.id] += 1
    return outputs, routed, dropped, invalid


# ---------------------------------------------------------------- workload


def destination(dest_id: str, filters: list[Any], transformations: list[Any], **extra: Any) -> Any:
    return {
        "id": dest_id,
        "name": dest_id.title(),
        "type": "webhook",
        "settings": {"url": "http://127.0.0.1:9/x"},
        "sources": ["web"],
        "filters": filters,
        "transformations": transformations,
        **extra,
    }


def workspace(state_dir: Path) -> Workspace:
    return validate_workspace(
        {
            "processor": {"state_dir": str(state_dir)},
            "sources": [
                {
                    "id": "web",
                    "write_keys": [WRITE_KEY],
                    "middleware": [
                        {"type": "drop_fields", "fields": ["context.library"]},
                        {"type": "hash_fields", "fields": ["traits.email"], "salt": "s"},
                        {"type": "drop_fields", "fields": ["properties.products.secret", "x"]},
                    ],
                }
            ],
            "destinations": [
                # The processor benchmark's five destinations.
                destination(
                    "mixpanel",
                    [{"type": "drop", "if": 'event = "Cart Viewed"'}],
                    [{"type": "rename_event", "if": 'event = "Signed Up"', "to": "Sign Up"}],
                ),
                destination(
                    "amplitude",
                    [{"type": "drop_properties", "fields": ["context.ip"]}],
                    [{"type": "set_values", "values": {"properties.source": "router"}}],
                ),
                destination(
                    "ga4",
                    [{"type": "only", "if": 'type != "page"'}],
                    [
                        {
                            "type": "rename_properties",
                            "fields": {"properties.total": "properties.value"},
                        }
                    ],
                ),
                destination(
                    "customerio",
                    [
                        {
                            "type": "allow_properties",
                            "fields": ["properties.total", "properties.currency"],
                        }
                    ],
                    [
                        {
                            "type": "set_values",
                            "if": 'type = "identify"',
                            "values": {"traits.tier": "x"},
                        }
                    ],
                ),
                destination(
                    "webhook",
                    [{"type": "drop", "if": 'contains(userId, "user-19")'}],
                    [
                        {
                            "type": "rename_properties",
                            "fields": {"properties.sku": "properties.product_id"},
                        }
                    ],
                ),
                # Several rules per destination, conditions on edits, errors, fan-out.
                destination(
                    "many",
                    [
                        {"type": "allow_properties", "fields": ["properties.total", "context.ip"]},
                        {"type": "drop_properties", "fields": ["properties.products.price"]},
                        {
                            "type": "drop_properties",
                            "if": 'type = "track"',
                            "fields": ["context.page", "traits"],
                        },
                        {"type": "sample", "fraction": 0.7, "path": "messageId"},
                        {"type": "only", "if": "length(userId) > 3 or userId = null"},
                    ],
                    [
                        {"type": "set_values", "values": {"properties.meta": {"v": [1]}}},
                        {
                            "type": "rename_properties",
                            "fields": {"properties.total": "traits.total", "event": "name"},
                        },
                        {"type": "set_values", "if": "number(userId) > 3", "values": {"a": 1}},
                        {"type": "drop_event", "if": 'name = "Product Viewed"'},
                    ],
                ),
                destination(
                    "errors",
                    [{"type": "drop", "if": "number(properties.currency) > 1"}],
                    [],
                    warehouse=True,
                ),
                destination("plain", [], []),
            ],
        }
    )


def event(i: int, rng: random.Random) -> dict[str, Any]:
    user = rng.choice([f"user-{rng.randrange(300)}", f"user-19{i % 7}", "", None, 12345])
    kind = rng.choices(["track", "identify", "page"], weights=[6, 2, 2])[0]
    out: dict[str, Any] = {
        "type": kind,
        "messageId": f"m-{i % 1200}",  # some duplicates
        "timestamp": "2026-11-23T10:00:00.000Z",
        "receivedAt": "2026-11-23T10:00:01.100Z",
        "context": {
            "ip": "203.0.113.9",
            "library": {"name": "analytics.js"},
            "page": {"path": "/checkout"},
        },
    }
    if user is not None:
        out["userId"] = user
    if not user:
        out["anonymousId"] = str(uuid.UUID(int=rng.getrandbits(128)))
    if kind == "track":
        out["event"] = rng.choice(["Cart Viewed", "Signed Up", "Product Viewed", "Order Completed"])
        out["properties"] = {
            "total": rng.choice([1, 30, 30.0, "30", None]),
            "currency": rng.choice(["EUR", "1", 2]),
            "sku": f"sku-{i % 9}",
            "products": [{"sku": "a", "price": 1, "secret": 2}, "x"],
        }
        if rng.random() < 0.2:
            out["properties"]["source"] = rng.choice(["router", "web"])
    elif kind == "identify":
        out["traits"] = {"email": rng.choice(["a@b.c", 5, None, True]), "tier": "x"}
    else:
        out["name"] = "Checkout"
        if rng.random() < 0.5:
            out["properties"] = {"title": "Checkout"}
    if rng.random() < 0.15:
        out["integrations"] = rng.choice(
            [{"All": False, "Mixpanel": True}, {"Ga4": False}, {"all": False}, {"Errors": {}}]
        )
    if rng.random() < 0.05:
        out["context"] = None
    return out


def records(count: int, seed: int = 3) -> list[Record]:
    rng = random.Random(seed)
    # Interleaved partitions, unlike the processor's input: the order must still be kept.
    return [Record(orjson.dumps(event(i, rng)), i, i % 4) for i in range(count)]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Workspace, Topics, Pipeline, Deduplicator]]:
    ws = workspace(tmp_path)
    topics = Topics()
    compiled = compile_workspace(ws, topics)
    dedup = Deduplicator(tmp_path / "dedup", 3600)
    counts = {topics.destination(d): PARTITIONS for d in compiled.destinations}
    yield ws, topics, Pipeline(compiled, topics, dedup, counts), dedup
    dedup.close()


# ---------------------------------------------------------------- tests


def test_process_matches_the_reference(
    setup: tuple[Workspace, Topics, Pipeline, Deduplicator],
) -> None:
    ws, topics, pipeline, dedup = setup
    batch = records(1500)
    expected, routed, dropped, invalid = reference(ws, batch, topics)
    got: list[OutRecord] = []
    dead: Counter[str] = Counter()
    stats_routed: Counter[str] = Counter()
    stats_dropped: Counter[tuple[str, str]] = Counter()
    for start in range(0, len(batch), 500):
        result = pipeline.process(batch[start : start + 500])
        dedup.remember(result.pending_keys)
        for record in result.outputs:
            if record.topic == topics.dlq:
                letter = orjson.loads(record.value)
                assert letter["reason"] == "transformation_invalid", letter
                dead[letter["details"]["destination"]] += 1
            else:
                got.append(record)
        stats_routed.update(result.stats.routed)
        stats_dropped.update(result.stats.dropped)
    # "many" renames event to name: its track events lose their name, and only its copies
    # are dead-lettered.
    assert dead == invalid and set(invalid) == {"many"}
    assert len(got) == len(expected) > 5000
    for index, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        assert mine == theirs, index
        assert type(mine) is OutRecord
    assert stats_routed == routed
    assert stats_dropped == dropped
    # Every kind of drop happened, so each path above was taken.
    reasons = {reason for _, reason in stats_dropped}
    assert reasons == {"drop", "only", "sample", "filter_error", "transformation", "integrations"}


def test_outputs_are_keyed_by_spec_partition_key(
    setup: tuple[Workspace, Topics, Pipeline, Deduplicator],
) -> None:
    _, topics, pipeline, _ = setup
    for user in ["u", "", 7, 7.5, None]:
        body: dict[str, Any] = {"type": "track", "event": "E", "messageId": f"k{user!r}"}
        if user is not None:
            body["userId"] = user
        body["anonymousId"] = "anon"
        batch = [Record(orjson.dumps(body), 0)]
        outputs = [o for o in pipeline.process(batch).outputs if o.topic != topics.dlq]
        validated = spec.validate(orjson.loads(batch[0].value))
        assert {out.key for out in outputs} == {spec.partition_key(validated)}


@pytest.mark.parametrize("enabled", [True, False])
def test_garbage_collector_state_is_restored(
    setup: tuple[Workspace, Topics, Pipeline, Deduplicator], enabled: bool
) -> None:
    _, _, pipeline, _ = setup
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        pipeline.process(records(10))
        assert gc.isenabled() is enabled
        with pytest.raises(AttributeError):
            pipeline.process([object()])  # type: ignore[list-item]
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_garbage_collector_is_paused_during_a_batch(
    setup: tuple[Workspace, Topics, Pipeline, Deduplicator], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, pipeline, _ = setup
    seen: list[bool] = []
    real = pipeline._process

    def spy(batch: Any) -> Any:
        seen.append(gc.isenabled())
        return real(batch)

    monkeypatch.setattr(pipeline, "_process", spy)
    pipeline.process(records(3))
    pipeline.pause_gc = False
    pipeline.process(records(3, seed=4))
    assert seen == [False, gc.isenabled()]


def test_call_types_a_destination_does_not_take_are_filtered_and_counted(
    tmp_path: Path,
) -> None:
    ws = workspace(tmp_path)
    topics = Topics()
    first = ws.destinations[0].id
    compiled = compile_workspace(ws, topics, {first: frozenset({"identify"})})
    counts = {topics.destination(d): PARTITIONS for d in compiled.destinations}
    pipeline = Pipeline(compiled, topics, None, counts)
    batch = records(300)
    result = pipeline.process(batch)
    kinds = Counter(
        orjson.loads(out.value)["type"]
        for out in result.outputs
        if out.topic == topics.destination(first)
    )
    assert set(kinds) == {"identify"}
    assert result.stats.dropped[(first, "unsupported_type")] > 0
