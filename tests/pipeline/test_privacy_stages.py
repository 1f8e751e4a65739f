"""PII classification and suppression as the processor's pipeline runs them (no Kafka)."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from router.broker.topics import Topics
from router.config import ConfigError, PrivacySettings
from router.pipeline.compile import compile_workspace
from router.pipeline.pii import PiiRules
from router.pipeline.pipeline import ALL_DESTINATIONS, Pipeline
from router.workspace import validate_workspace

SALT = "pepper-1234"


@dataclass
class Record:
    value: bytes
    offset: int
    partition: int = 0
    topic: str = "events.raw"
    timestamp: int = 1_795_000_000_000
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("write-key", b"wk")])


def digest(value: str) -> str:
    return hashlib.sha256((SALT + value).encode()).hexdigest()


def destination(dest_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": dest_id,
        "name": dest_id.title(),
        "type": "webhook",
        "sources": ["web"],
        "settings": {"url": "http://127.0.0.1:9/"},
        **extra,
    }


def workspace(pii: list[dict[str, Any]], destinations: list[dict[str, Any]]) -> Any:
    return validate_workspace(
        {
            "sources": [{"id": "web", "write_keys": ["wk"]}],
            "destinations": destinations,
            "privacy": {"pii": pii, "hash_salt": SALT},
        }
    )


def run(config: Any, events: list[dict[str, Any]], suppressed: set[str] | None = None) -> Any:
    topics = Topics()
    pipeline = Pipeline(compile_workspace(config, topics), topics, None, {}, suppressed)
    records = [Record(orjson.dumps(e), i) for i, e in enumerate(events)]
    return pipeline.process(records)


def by_destination(result: Any) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in result.outputs:
        found.setdefault(record.topic.removeprefix("dest."), []).append(orjson.loads(record.value))
    return found


EVENT: dict[str, Any] = {
    "type": "identify",
    "userId": "u1",
    "messageId": "m1",
    "traits": {"email": "a@example.com", "workEmail": "b@example.com", "plan": "pro"},
    "context": {
        "ip": "10.0.0.1",
        "traits": {"Email": "a@example.com", "phone": "+33 6 00 00 00 00"},
    },
    "properties": {"items": [{"email": "c@example.com", "sku": "s1"}, {"sku": "s2"}]},
}


def test_pii_is_hashed_or_dropped_per_destination() -> None:
    config = workspace(
        [
            {"pattern": "*email*", "action": "hash"},
            {"path": "context.ip", "action": "drop"},
            {"path": "context.traits.phone", "action": "hash"},
        ],
        [
            destination("analytics"),
            destination("crm", pii=["*email*"]),
            destination("warehouse", pii="allow"),
        ],
    )
    sent = copy.deepcopy(EVENT)
    outputs = by_destination(run(config, [sent]))
    assert sent == EVENT  # never changed in place

    analytics = outputs["analytics"][0]
    assert analytics["traits"] == {
        "email": digest("a@example.com"),
        "workEmail": digest("b@example.com"),  # a pattern matches any case, any depth
        "plan": "pro",
    }
    assert analytics["context"] == {
        "traits": {"Email": digest("a@example.com"), "phone": digest("+33 6 00 00 00 00")}
    }
    assert analytics["properties"]["items"] == [
        {"email": digest("c@example.com"), "sku": "s1"},  # lists fan out
        {"sku": "s2"},
    ]
    assert analytics["userId"] == "u1" and analytics["messageId"] == "m1"

    crm = outputs["crm"][0]  # emails in clear, the other rules still in force
    assert crm["traits"] == EVENT["traits"]
    assert crm["context"] == {
        "traits": {"Email": "a@example.com", "phone": digest("+33 6 00 00 00 00")}
    }

    assert outputs["warehouse"][0]["traits"] == EVENT["traits"]
    assert outputs["warehouse"][0]["context"] == EVENT["context"]


def test_hashes_follow_the_middleware_convention_for_other_values() -> None:
    config = workspace([{"pattern": "secret*"}], [destination("a")])
    event = {
        "type": "track",
        "event": "E",
        "userId": "u1",
        "properties": {"secretNumber": 42, "secretFlag": True, "secretObj": {"b": 1, "a": 2}},
        "traits": {"secretNull": None},
    }
    out = by_destination(run(config, [event]))["a"][0]
    assert out["properties"] == {
        "secretNumber": digest("42"),
        "secretFlag": digest("true"),
        "secretObj": digest('{"a":2,"b":1}'),
    }
    assert out["traits"] == {"secretNull": None}


def test_pii_applies_after_the_destinations_transformations() -> None:
    config = workspace(
        [{"pattern": "*email*", "action": "drop"}],
        [
            destination(
                "a",
                transformations=[
                    {"type": "rename_properties", "fields": {"properties.mail": "properties.email"}}
                ],
            )
        ],
    )
    event = {"type": "track", "event": "E", "userId": "u1", "properties": {"mail": "x@y.z"}}
    assert by_destination(run(config, [event]))["a"][0]["properties"] == {}


def test_destinations_under_the_same_rules_share_one_result() -> None:
    rules = PiiRules(PrivacySettings(pii=[{"pattern": "*email*"}], hash_salt=SALT))
    config = workspace([{"pattern": "*email*"}], [destination("a"), destination("b")])
    first, second = (rules.for_destination(d) for d in config.destinations)
    assert first is second and first is not None
    event = {"traits": {"email": "a@b.c"}}
    assert first(event) is first(event)


def test_no_pii_declared_means_no_stage() -> None:
    config = validate_workspace(
        {"sources": [{"id": "web", "write_keys": ["wk"]}], "destinations": [destination("a")]}
    )
    compiled = compile_workspace(config, Topics())
    assert compiled.destinations["a"].pii is None
    event = {"type": "track", "event": "E", "userId": "u1", "properties": {"email": "x"}}
    assert by_destination(run(config, [event]))["a"][0]["properties"] == {"email": "x"}


def test_a_pii_rule_that_breaks_the_event_dead_letters_that_copy_alone() -> None:
    config = workspace(
        [{"path": "groupId", "action": "drop"}, {"path": "traits.name"}],
        [destination("crm"), destination("warehouse", pii="allow")],
    )
    compiled = compile_workspace(config, Topics())
    assert compiled.destinations["crm"].pii is not None
    assert compiled.destinations["crm"].pii.may_invalidate  # a group needs its groupId
    event = {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}}
    result = run(config, [event])
    outputs = by_destination(result)
    assert list(outputs) == ["warehouse", "events.dlq"]
    assert outputs["warehouse"][0]["groupId"] == "acme"
    (letter,) = outputs["events.dlq"]
    assert letter["details"]["destination"] == "crm"
    only_hashing = workspace([{"path": "traits.name"}], [destination("crm")])
    pii = compile_workspace(only_hashing, Topics()).destinations["crm"].pii
    assert pii is not None and not pii.may_invalidate  # no re-validation for hashing a trait


@pytest.mark.parametrize(
    ("privacy", "pii", "message"),
    [
        ({"pii": [{"pattern": "*email*"}]}, None, "hash_salt is required"),
        ({"pii": [{"path": "userId"}], "hash_salt": SALT}, None, "top-level id"),
        ({"pii": [{"path": "a", "pattern": "b"}], "hash_salt": SALT}, None, "exactly one"),
        ({"pii": [{"pattern": "*email*"}], "hash_salt": SALT}, ["*mail*"], "not a PII rule"),
        ({"pii": [{"pattern": "*x*"}], "hash_salt": "short"}, None, "at least 8"),
    ],
)
def test_invalid_pii_settings_are_reported(
    privacy: dict[str, Any], pii: list[str] | None, message: str
) -> None:
    document = {
        "sources": [{"id": "web", "write_keys": ["wk"]}],
        "destinations": [destination("a", **({"pii": pii} if pii else {}))],
        "privacy": privacy,
    }
    with pytest.raises(ConfigError) as caught:
        validate_workspace(document)
    assert message in str(caught.value)
    assert SALT not in str(caught.value)


def test_suppressed_users_stop_before_every_stage() -> None:
    config = workspace([], [destination("a"), destination("b")])
    events = [
        {"type": "track", "event": "E", "userId": "gone", "messageId": "m1"},
        {"type": "track", "event": "E", "userId": "kept", "messageId": "m2"},
        {"type": "track", "event": "E", "userId": 42, "messageId": "m3"},  # numbers as text
        {"type": "track", "event": "E", "anonymousId": "gone", "messageId": "m4"},  # by userId
    ]
    suppressed = {"gone", "42"}
    topics = Topics()
    pipeline = Pipeline(compile_workspace(config, topics), topics, None, {}, suppressed)
    records = [Record(orjson.dumps(e), i) for i, e in enumerate(events)]
    result = pipeline.process(records)
    outputs = by_destination(result)
    assert [e["messageId"] for e in outputs["a"]] == ["m2", "m4"]
    assert [e["messageId"] for e in outputs["b"]] == ["m2", "m4"]
    assert result.stats.dropped[(ALL_DESTINATIONS, "suppressed")] == 2

    suppressed.discard("gone")  # the set is read live: an unsuppression applies at once
    again = pipeline.process(records[:1])
    assert len(again.outputs) == 2
    assert not again.stats.dropped
