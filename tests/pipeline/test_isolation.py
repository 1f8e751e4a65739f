"""One event never fails its batch: whatever a stage does to it, it alone is dead-lettered.

Middleware and transformations may return events that break the spec, user functions may
return anything; each such event goes to ``events.dlq`` with the stage and a reason code,
nothing of it reaches a destination, and the rest of the batch is routed as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.broker.topics import Topics
from router.pipeline.compile import compile_workspace
from router.pipeline.dedup import Deduplicator
from router.pipeline.pipeline import BatchResult, Pipeline
from router.workspace import validate_workspace

HOSTILE = "tests.pipeline.hostile_functions:hostile"
PLAN = {
    "id": "plan",
    "rules": {"track": {"Clicked": {"type": "object"}}, "identify": {"type": "object"}},
}


@dataclass
class Record:
    value: bytes
    offset: int
    partition: int = 0
    topic: str = "events.raw"
    timestamp: int = 1_795_000_000_000
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("write-key", b"wk")])


def hook(dest_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": dest_id,
        "name": dest_id.title(),
        "type": "webhook",
        "settings": {"url": "http://127.0.0.1:9/x"},
        "sources": ["web"],
        **extra,
    }


@dataclass
class Outcome:
    delivered: dict[str, list[str]]  # destination -> messageIds, in order
    dead: list[dict[str, Any]]  # events.dlq records
    result: BatchResult

    def dead_by_id(self) -> dict[str, dict[str, Any]]:
        return {letter["payload"]["messageId"]: letter for letter in self.dead}


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.topics = Topics()
        self.dedup = Deduplicator(tmp_path / "dedup", 3600)

    def run(self, source: dict[str, Any], destinations: list[Any], events: list[Any]) -> Outcome:
        data: dict[str, Any] = {
            "processor": {"state_dir": str(self.tmp_path)},
            "sources": [{"id": "web", "write_keys": ["wk"], **source}],
            "destinations": destinations,
        }
        if "tracking_plan" in source:
            data["tracking_plans"] = [PLAN]
        compiled = compile_workspace(validate_workspace(data), self.topics)
        counts = {self.topics.destination(d): 2 for d in compiled.destinations}
        pipeline = Pipeline(compiled, self.topics, self.dedup, counts)
        records = [Record(orjson.dumps(e), i) for i, e in enumerate(events)]
        result = pipeline.process(records)
        self.dedup.remember(result.pending_keys)
        delivered: dict[str, list[str]] = {}
        dead = []
        for record in result.outputs:
            if record.topic == self.topics.dlq:
                dead.append(orjson.loads(record.value))
                continue
            assert record.topic.startswith("dest.")
            dest = record.topic.removeprefix("dest.")
            delivered.setdefault(dest, []).append(orjson.loads(record.value)["messageId"])
        return Outcome(delivered, dead, result)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path)
    yield made
    made.dedup.close()


def track(message_id: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Clicked",
        "userId": "u1",
        "messageId": message_id,
        "properties": properties,
    }


@pytest.mark.parametrize("plan", [False, True], ids=["no plan", "plan"])
def test_middleware_that_breaks_the_spec_dead_letters_only_that_event(
    harness: Harness, plan: bool
) -> None:
    # Moves the name away: a track event is left without one (the tracking plan used to raise
    # KeyError for the whole batch on it; without a plan it was delivered invalid).
    source: dict[str, Any] = {
        "middleware": [{"type": "rename_fields", "fields": {"event": "properties.was"}}]
    }
    if plan:
        source["tracking_plan"] = {"plan": "plan"}
    events = [
        {"type": "identify", "userId": "u1", "messageId": "before", "traits": {}},
        track("bad"),
        {"type": "identify", "userId": "u2", "messageId": "after"},
    ]
    outcome = harness.run(source, [hook("a")], events)
    assert outcome.delivered == {"a": ["before", "after"]}
    (letter,) = outcome.dead
    assert letter["reason"] == "middleware_invalid" and letter["stage"] == "middleware"
    assert letter["details"]["code"] == "missing_event"
    assert letter["payload"]["messageId"] == "bad" and letter["input"]["offset"] == 1
    assert outcome.result.stats.rejected == {"middleware_invalid": 1}


@pytest.mark.parametrize("plan", [False, True], ids=["no plan", "plan"])
def test_whatever_a_user_function_returns_costs_only_its_event(
    harness: Harness, plan: bool
) -> None:
    source: dict[str, Any] = {"middleware": [{"type": "function", "function": HOSTILE}]}
    if plan:
        source["tracking_plan"] = {"plan": "plan"}
    modes = ["deep", "set", "no_id", "no_name", "huge", "sulky"]
    events = [track("ok-1")] + [track(mode, mode=mode) for mode in modes] + [track("ok-2")]
    outcome = harness.run(
        source,
        [
            # Takes the bad value out of its own copy, so its record for "set" is made, and
            # must be taken back when the next destination cannot encode the event.
            hook("first", filters=[{"type": "drop_properties", "fields": ["properties.x"]}]),
            hook("second"),
        ],
        events,
    )
    assert outcome.delivered == {"first": ["ok-1", "ok-2"], "second": ["ok-1", "ok-2"]}
    assert outcome.result.stats.routed == {"first": 2, "second": 2}
    reasons = {
        letter["payload"]["properties"]["mode"]: (
            letter["reason"],
            letter["stage"],
            (letter.get("details") or {}).get("code"),
        )
        for letter in outcome.dead
    }
    assert reasons == {
        "deep": ("middleware_invalid", "middleware", "nesting_too_deep"),
        "set": ("unencodable", "encode", None),
        "no_id": ("middleware_invalid", "middleware", "missing_message_id"),
        "no_name": ("middleware_invalid", "middleware", "missing_event"),
        "huge": ("event_too_large", "encode", None),
        "sulky": ("stage_error", "middleware", None),
    }
    sulky = next(d for d in outcome.dead if d["payload"]["properties"]["mode"] == "sulky")
    assert "RuntimeError: not today" in sulky["message"]
    unencodable = next(d for d in outcome.dead if d["reason"] == "unencodable")
    assert unencodable["details"] == {"destination": "second"}


def test_source_transformations_are_validated_again(harness: Harness) -> None:
    source = {
        "transformations": [
            {"type": "set_values", "if": "properties.blank = true", "values": {"event": ""}}
        ]
    }
    outcome = harness.run(source, [hook("a")], [track("ok"), track("blank", blank=True)])
    assert outcome.delivered == {"a": ["ok"]}
    (letter,) = outcome.dead
    assert (letter["reason"], letter["stage"]) == ("transformation_invalid", "transformation")
    assert letter["details"]["code"] == "missing_event"


def test_a_destination_that_breaks_an_event_loses_only_its_own_copy(harness: Harness) -> None:
    destinations = [
        hook(
            "breaks",
            transformations=[
                {"type": "set_values", "if": "properties.blank = true", "values": {"event": ""}}
            ],
        ),
        hook("fine"),
    ]
    outcome = harness.run({}, destinations, [track("ok"), track("blank", blank=True)])
    assert outcome.delivered == {"breaks": ["ok"], "fine": ["ok", "blank"]}
    (letter,) = outcome.dead
    assert letter["reason"] == "transformation_invalid"
    assert letter["details"] == {"destination": "breaks", "code": "missing_event"}


@pytest.mark.parametrize("plan", [False, True], ids=["no plan", "plan"])
@pytest.mark.parametrize(
    "middleware",
    [
        {"type": "rename_fields", "fields": {"event": "properties.was"}},
        {"type": "function", "function": HOSTILE},
    ],
    ids=["invalid", "raises"],
)
def test_a_dead_lettered_event_can_be_replayed_once_fixed(
    harness: Harness, plan: bool, middleware: dict[str, Any]
) -> None:
    """Its messageId is not remembered: the fixed replay is not taken for a duplicate."""
    broken: dict[str, Any] = {"middleware": [middleware]}
    if plan:
        broken["tracking_plan"] = {"plan": "plan"}
    events = [{**track("m-1"), "event": "Raise"}, {**track("m-2"), "type": "identify"}]
    first = harness.run(broken, [hook("a")], events)
    assert first.delivered == {"a": ["m-2"]}
    assert [letter["payload"]["messageId"] for letter in first.dead] == ["m-1"]
    fixed = {"tracking_plan": {"plan": "plan"}} if plan else {}
    again = harness.run(fixed, [hook("a")], events)
    assert again.delivered == {"a": ["m-1"]}  # m-2 went through the first time: a duplicate
    assert again.result.stats.duplicates == {"web": 1}
