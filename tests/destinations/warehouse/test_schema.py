"""The schema engine alone (no database): names, flattening, types, evolution, folding."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from destinations.warehouse.naming import MAX_IDENTIFIER, name_for, snakecase
from destinations.warehouse.schema import (
    UNCASTABLE,
    ColumnType,
    TableRef,
    cast,
    evolve,
    infer,
    materialize,
    rows_for,
)

# Segment names with go-snakecase; these are that package's own test cases.
GO_SNAKECASE = [
    ("sample text", "sample_text"),
    ("sample-text", "sample_text"),
    ("sample_text", "sample_text"),
    ("sample___text", "sample_text"),
    ("sampleText", "sample_text"),
    ("inviteYourCustomersAddInvites", "invite_your_customers_add_invites"),
    ("sample 2 Text", "sample_2_text"),
    ("   sample   2    Text   ", "sample_2_text"),
    ("   $#$sample   2    Text   ", "sample_2_text"),
    ("SAMPLE 2 TEXT", "sample_2_text"),
    ("___$$Base64Encode", "base64_encode"),
    ("FOO:BAR$BAZ", "foo_bar_baz"),
    ("FOO#BAR#BAZ", "foo_bar_baz"),
    ("something.com", "something_com"),
    ("$something%", "something"),
    ("•¶§ƒ˚foo˙∆˚¬", "foo"),
]


@pytest.mark.parametrize(("text", "expected"), GO_SNAKECASE)
def test_names_are_snake_cased_like_segments_go_snakecase(text: str, expected: str) -> None:
    assert snakecase(text) == expected


def test_identifiers_are_legal_bounded_and_stable() -> None:
    assert name_for("Order Completed") == "order_completed"
    assert name_for("select") == "_select"  # Segment prepends _ to reserved words
    assert name_for("2fa Enabled") == "_2fa_enabled"
    assert len(name_for("x" * 200)) == MAX_IDENTIFIER
    no_ascii = name_for("注文")
    assert no_ascii.startswith("_") and len(no_ascii) == 9 and no_ascii == name_for("注文")
    assert name_for("注文") != name_for("購入")


def test_context_flattens_and_ids_become_text() -> None:
    event: dict[str, Any] = {
        "type": "track",
        "event": "Signed Up",
        "messageId": "m1",
        "userId": 42,
        "context": {"app": {"version": "1.0.0"}, "campaign": None, "ids": [1, 2]},
        "properties": {"plan": "Pro Annual", "accountType": "Facebook", "nothing": None},
    }
    tracks, own = rows_for(event, "web")
    assert tracks.table == TableRef("web", "tracks")
    assert own.table == TableRef("web", "signed_up")
    assert own.values["context_app_version"] == "1.0.0"
    assert own.values["context_ids"] == "[1,2]"
    assert "context_campaign" not in own.values and "nothing" not in own.values
    assert own.values["account_type"] == "Facebook"
    assert "plan" not in tracks.values
    state: dict[TableRef, dict[str, ColumnType]] = {}
    assert evolve([(tracks, own)], state).tables[own.table]["user_id"] is ColumnType.TEXT


def test_deep_objects_past_the_bound_are_kept_as_json() -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(40):
        deep = {"n": deep}
    [row] = rows_for({"type": "page", "messageId": "m", "properties": {"deep": deep}}, "web")
    [(column, value)] = [(k, v) for k, v in row.values.items() if k.startswith("deep")]
    assert isinstance(value, str) and value.endswith('{"leaf":1}' + "}" * 24)
    assert len(column) <= MAX_IDENTIFIER


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, ColumnType.BOOLEAN),
        (3, ColumnType.INTEGER),
        (2**70, ColumnType.FLOAT),
        (2.5, ColumnType.FLOAT),
        ("2026-11-23T10:00:00.123456789Z", ColumnType.TIMESTAMP),
        ("2026-11-23 10:00:00+02:00", ColumnType.TIMESTAMP),
        ("2026-11-23", ColumnType.TEXT),
        ("hello", ColumnType.TEXT),
    ],
)
def test_a_first_value_sets_one_of_segments_five_types(value: Any, kind: ColumnType) -> None:
    assert infer(value) is kind


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        ("12", ColumnType.INTEGER, 12),
        (12.9, ColumnType.INTEGER, 12),
        ("12.9", ColumnType.INTEGER, 12),
        (2**64, ColumnType.INTEGER, UNCASTABLE),
        ("twelve", ColumnType.INTEGER, UNCASTABLE),
        (3, ColumnType.FLOAT, 3.0),
        ("nan", ColumnType.FLOAT, UNCASTABLE),
        (12, ColumnType.TEXT, "12"),
        (False, ColumnType.TEXT, "false"),
        ("TRUE", ColumnType.BOOLEAN, True),
        (0, ColumnType.BOOLEAN, False),
        (2, ColumnType.BOOLEAN, UNCASTABLE),
        ("2026-01-01T00:00:00", ColumnType.TIMESTAMP, datetime(2026, 1, 1, tzinfo=UTC)),
        (1767225600, ColumnType.TIMESTAMP, UNCASTABLE),
    ],
)
def test_values_are_cast_to_the_columns_first_type(
    value: Any, kind: ColumnType, expected: Any
) -> None:
    result = cast(value, kind)
    if expected is UNCASTABLE:
        assert result is UNCASTABLE
    else:
        assert result == expected and type(result) is type(expected)


def test_users_rows_of_one_batch_fold_in_received_order() -> None:
    def identify(mid: str, received: str, **traits: Any) -> Any:
        event = {"type": "identify", "messageId": mid, "userId": "u1", "receivedAt": received}
        return rows_for({**event, "traits": traits}, "web")

    batch = [
        identify("b", "2026-01-02T00:00:00Z", plan="pro"),
        identify("a", "2026-01-01T00:00:00Z", plan="free", email="a@x.io"),
    ]
    state: dict[TableRef, dict[str, ColumnType]] = {}
    evolution = evolve(batch, state)
    state = {table: dict(columns) for table, columns in evolution.tables.items()}
    loads = materialize(batch, state, datetime(2026, 1, 3, tzinfo=UTC))
    users = next(load for load in loads.tables if load.table.name == "users")
    assert users.upsert
    [row] = users.rows
    values = dict(zip([name for name, _ in users.columns], row, strict=True))
    assert values["plan"] == "pro" and values["email"] == "a@x.io"
    assert values["received_at"] == datetime(2026, 1, 2, tzinfo=UTC)
