"""The per-event-shape path (shapes.py) gives exactly the rows of the reference path (schema.py).

Events are generated (seeded): every call type, type conflicts between batches and inside one,
nested objects past the flattening depth, arrays, nulls, names Segment drops or prefixes,
two keys naming one column, ids that are numbers or empty, values that cannot be cast,
duplicate messageIds. Many events share a shape with different values, so the compiled
plans and their guards are exercised as well as their compilation.
"""

from __future__ import annotations

import asyncio
import copy
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from destinations.warehouse import WarehouseDestination, shapes
from destinations.warehouse.schema import (
    MAX_DEPTH,
    ColumnType,
    Loads,
    TableRef,
    evolve,
    materialize,
    rows_for,
)
from tests.destinations.warehouse.conftest import load, select

STAMP = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEYS = [
    "plan",
    "total",
    "accountType",
    "account_type",  # the same column as accountType
    "id",  # named like the table's own columns: dropped
    "user_id",
    "event",
    "received_at",
    "uuid_ts",
    "context_ip",  # a property named like a flattened context column
    "order",  # reserved: _order
    "3dSecure",
    "Checkout Step 2",
    "注文",  # no ASCII letter: a hashed name
    "when",
    "flag",
    "tags",
    "nested",
    "name",
    "category",
    "group_id",
    "previous_id",
]
TEXTS = [
    "hello",
    "",
    "12",
    " 7 ",
    "12.5",
    "true",
    "No",
    "2026-11-23T10:00:00.123Z",
    "2026-11-23 10:00:00+02:00",
    "2026-11-23",
    "2026-11-23T10:00:00.123456789Z",
    "not a date",
    "nan",
]
EVENT_NAMES: list[Any] = ["Order Completed", "Signed Up", "Pages", "select", "", None, 5, "注文"]


def leaf(rng: random.Random, kind: str) -> Any:
    if kind == "mixed":  # a type per event: one key, values of several types in one batch
        if rng.random() < 0.1:
            return {"sku": leaf(rng, "text")}
        kind = rng.choice(["none", "bool", "int", "float", "text", "list"])
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        # What JSON decoding gives: orjson reads integers from -2**63 to 2**64 - 1.
        return rng.choice([0, 1, 2, 42, -7, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)])
    if kind == "float":
        return rng.choice([1.5, -0.0, 12.9, 1e300, 3.0])
    if kind == "list":
        return rng.choice([[], [1, "a"], [{"sku": "x"}, None]])
    return rng.choice(TEXTS)


KINDS = ["none", "bool", "int", "float", "text", "text", "text", "list", "mixed", "mixed"]


def template(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """An object structure: key -> a leaf kind, or a nested structure."""
    shape: dict[str, Any] = {}
    for key in rng.sample(KEYS, rng.randint(0, 5)):
        if key == "nested" and depth < MAX_DEPTH + 3:
            shape[key] = template(rng, depth + 1) if rng.random() < 0.8 else {"n": "int"}
        else:
            shape[key] = rng.choice(KINDS)
    if depth == 0 and rng.random() < 0.1:  # deeper than flatten goes
        deep: Any = {"leaf": "int"}
        for _ in range(MAX_DEPTH + 2):
            deep = {"n": deep}
        shape["deep"] = deep
    return shape


def fill(rng: random.Random, structure: dict[str, Any]) -> dict[str, Any]:
    return {
        key: fill(rng, kind) if isinstance(kind, dict) else leaf(rng, kind)
        for key, kind in structure.items()
    }


def event_template(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["track", "track", "identify", "page", "screen", "group", "alias"])
    found: dict[str, Any] = {
        "type": kind,
        "context": rng.choice(
            [
                {"ip": "text", "library": {"name": "text", "version": "text"}},
                {"ip": "text", "page": {"path": "text", "url": "text"}, "campaign": "none"},
                {"app": {"build": "int"}, "ids": "list"},
                {"ip": "mixed", "library": {"name": "text", "version": "mixed"}},
                # The same value types under other keys, at both levels:
                {"ip": "text", "page": {"path": "text", "referrer": "text"}, "campaign": "none"},
                {"locale": "text", "page": {"path": "text", "url": "text"}, "campaign": "none"},
            ]
        ),
        "receivedAt": rng.choice(["ts"] * 9 + ["text", "int", "none"]),
        "sentAt": rng.choice(["ts", "none", "absent"]),
        "timestamp": rng.choice(["ts", "absent"]),
        "userId": rng.choice(["id", "id", "id", "empty", "int", "none", "bool"]),
        "anonymousId": rng.choice(["id", "absent"]),
    }
    if rng.random() < 0.1:
        found["context"] = rng.choice(["absent", "list", "none"])
    own = "properties" if kind in ("track", "page", "screen") else "traits"
    found[own] = template(rng) if rng.random() < 0.9 else rng.choice(["none", "list", "text"])
    if kind == "track":
        found["event"] = rng.choice(EVENT_NAMES)
    if kind in ("page", "screen"):
        found["name"] = rng.choice(["text", "none", "int"])
        found["category"] = rng.choice(["text", "absent"])
    if kind == "group":
        found["groupId"] = rng.choice(["id", "id", "empty", "int", "none"])
    if kind == "alias":
        found["previousId"] = rng.choice(["id", "int", "none"])
    return found


def realize(rng: random.Random, structure: dict[str, Any], message_id: str) -> dict[str, Any]:
    event: dict[str, Any] = {"messageId": message_id}
    for field, kind in structure.items():
        if field in ("type", "event") or kind == "absent":
            event[field] = kind if field == "type" else copy.deepcopy(kind)
        elif isinstance(kind, dict):
            event[field] = fill(rng, kind)
        elif kind == "ts":
            event[field] = rng.choice(["2026-11-23T10:00:00.100Z", "2026-11-24T08:00:00Z"])
        elif kind == "id":
            event[field] = rng.choice(["u1", "u2", "user-3", "g1"])
        elif kind == "empty":
            event[field] = ""
        else:
            event[field] = leaf(rng, kind)
    return {k: v for k, v in event.items() if v != "absent"}


def generated(seed: int, count: int, templates: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    structures = [event_template(rng) for _ in range(templates)]
    events = []
    for i in range(count):
        # Some events repeat an earlier messageId: the first of an id stays.
        repeat = i and rng.random() < 0.1
        message_id = f"m-{seed}-{rng.randrange(i) if repeat else i}"
        events.append(realize(rng, rng.choice(structures), message_id))
    return events


def unplanned(event: dict[str, Any]) -> bool:
    """Events the plans leave to the reference path: a users or accounts id made text from
    a number or a boolean."""
    field = {"identify": "userId", "group": "groupId"}.get(event["type"])
    return field is not None and type(event.get(field)) not in (str, type(None))


def summary(loads: Loads) -> tuple[Any, ...]:
    tables = {
        load.table: (
            load.key,
            load.columns,
            [[(type(v), v) for v in row] for row in load.rows],
            load.upsert,
        )
        for load in loads.tables
    }
    return tables, loads.discarded, loads.incomplete


def state_after(events: list[dict[str, Any]]) -> dict[TableRef, dict[str, ColumnType]]:
    batch = [rows_for(event, "web") for event in events]
    return {table: dict(columns) for table, columns in evolve(batch, {}).tables.items()}


def both_paths(
    events: list[dict[str, Any]], state: dict[TableRef, dict[str, ColumnType]]
) -> tuple[Any, Any, shapes.Materializer]:
    fused = shapes.Materializer(state, STAMP)
    fused.add(events, ["web"] * len(events))
    reference = materialize([rows_for(event, "web") for event in events], state, STAMP)
    return summary(fused.loads()), summary(reference), fused


@pytest.mark.parametrize("seed", range(4))
def test_shaped_rows_are_the_reference_rows(seed: int) -> None:
    first = generated(seed, 400, templates=60)
    later = generated(seed + 100, 1200, templates=60)  # other types for the same names
    # Tables as the first events made them; then also with every column the later ones need.
    for state in (state_after(first), state_after(first + later)):
        fused, reference, run = both_paths(later, state)
        assert fused == reference
        assert run.unplanned == sum(map(unplanned, later)), "the others take the per-shape path"
        assert run.uncastable > 0  # those go through the reference path, for their discards
        assert len(later) - run.unplanned - run.uncastable > 0.2 * len(later)
        assert reference[1] > 0, "some values cannot be cast: discards must be exercised"
        # Again, with every shape known: recognized by the top level, the same rows.
        again, _, rerun = both_paths(later, state)
        assert again == reference
        assert rerun.unplanned == run.unplanned


def test_objects_alike_but_for_keys_or_types_are_told_apart() -> None:
    """Events of one call type and name (what picks the functions to try) whose objects
    differ in a key, a key more, the order of keys naming one column, or a value's type."""
    contexts: list[dict[str, Any]] = [
        {"ip": "1.2.3.4", "page": {"path": "/a", "url": "https://x/a"}},
        {"ip": "1.2.3.4", "page": {"path": "/a", "referrer": "https://x/a"}},
        {"locale": "de", "page": {"path": "/a", "url": "https://x/a"}},
        {"ip": "1.2.3.4", "page": {"path": "/a", "url": "https://x/a", "title": "A"}},
        {"ip": "1.2.3.4", "page": {"path": "/a", "url": "https://x/a"}, "locale": "de"},
        {"page": {"path": "/a", "url": "https://x/a"}, "ip": "1.2.3.4"},
        {"ip": "1.2.3.4", "page": {"url": "https://x/a", "path": "/a"}},
        {"ip": 1234, "page": {"path": "/a", "url": "https://x/a"}},
        {"ip": "1.2.3.4", "page": {"path": ["/a"], "url": "https://x/a"}},
        {"ip": "1.2.3.4", "page": {"path": {"full": "/a"}, "url": "https://x/a"}},
    ]
    properties: list[dict[str, Any]] = [
        {"accountType": 1, "account_type": "one"},  # one column: the later key wins
        {"account_type": "one", "accountType": 1},
        {"accountType": 1, "account_type": "one", "plan": "pro"},
        {"accountType": 1},
    ]
    events = [
        {
            "type": "track",
            "event": "Viewed",
            "messageId": f"k-{i}",
            "userId": "u1",
            # Each context with each of the properties in turn, then the other way round.
            "context": copy.deepcopy(contexts[(i // len(properties)) % len(contexts)]),
            "properties": dict(properties[i % len(properties)]),
        }
        for i in range(2 * len(contexts) * len(properties))
    ]
    events += [{**event, "messageId": f"r-{i}"} for i, event in enumerate(reversed(events))]
    for state in (state_after(events[:1]), state_after(events)):
        fused, reference, run = both_paths(events, state)
        assert fused == reference
        assert run.unplanned == 0


def test_missing_tables_and_columns_are_left_out_alike() -> None:
    events = generated(7, 1000, templates=40)
    state = state_after(events)
    # A table missing, and columns missing from others: the rows need DDL first.
    dropped = sorted(state)[::3]
    for table in dropped:
        state.pop(table)
    for table in sorted(state)[::2]:
        for column in list(state[table])[3::4]:
            del state[table][column]
    fused, reference, _ = both_paths(events, state)
    assert fused == reference
    assert reference[2], "incomplete: the batch needs DDL"
    whole = shapes.materialize(events, ["web"] * len(events), state_after(events), STAMP)
    assert not whole.incomplete


def test_a_cache_that_starts_over_gives_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shapes, "SHAPES_LIMIT", 5)
    events = generated(8, 600, templates=30)
    fused, reference, _ = both_paths(events, state_after(events))
    assert fused == reference


async def test_loads_in_flight_together_land_every_row_once(
    warehouse: WarehouseDestination,
) -> None:
    """Several loads at once (PostgreSQL runs two transactions): new columns, a replay, and
    the same users in both, in opposite orders; every row once, each user's latest traits."""

    def order(message_id: str, **properties: Any) -> dict[str, Any]:
        return {
            "type": "track",
            "event": "Order Completed",
            "messageId": message_id,
            "userId": "u1",
            "receivedAt": "2026-11-23T10:00:00Z",
            "context": {"ip": "10.0.0.1"},
            "properties": properties,
        }

    def identify(message_id: str, user: int, received: str, plan: str) -> dict[str, Any]:
        return {
            "type": "identify",
            "messageId": message_id,
            "userId": f"user-{user}",
            "receivedAt": received,
            "traits": {"plan": plan, f"seen_{message_id[0]}": True},
        }

    first = [order(f"a-{i}", total=i) for i in range(1200)]  # more than one slice
    first += [identify(f"a-u{i}", i, "2026-11-23T10:00:00Z", "free") for i in range(300)]
    await load(warehouse, first[:10])  # the tables exist: the next loads cast before waiting
    second = [order(f"b-{i}", total=str(i), coupon="x") for i in range(1200)]  # a new column
    second += [identify(f"b-u{i}", i, "2026-11-24T10:00:00Z", "pro") for i in reversed(range(300))]

    async def send(events: list[dict[str, Any]]) -> None:
        [request] = warehouse.encode(events).requests
        result = await warehouse.send(request)
        assert not warehouse.check(request, result)

    await asyncio.gather(send(first), send(second), send(first[:700]))  # and a replay
    [(orders, coupons, total)] = await select(
        warehouse, "SELECT count(*), count(coupon), sum(total) FROM web.order_completed"
    )
    assert (orders, coupons) == (2400, 1200)
    assert total == 2 * sum(range(1200))  # the text totals were cast to the integer column
    [(tracks,)] = await select(warehouse, "SELECT count(*) FROM web.tracks")
    assert tracks == 2400
    [(identifies,)] = await select(warehouse, "SELECT count(*) FROM web.identifies")
    assert identifies == 600
    users = await select(
        warehouse, "SELECT plan, seen_a, seen_b, count(*) FROM web.users GROUP BY 1, 2, 3"
    )
    assert users == [("pro", True, True, 300)]  # the newer identify's plan, both traits kept
