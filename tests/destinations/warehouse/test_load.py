"""Loads into both backends: Segment's warehouse schema, evolution, types, replays, users.

Test names cite the Segment "Warehouse Schemas" behaviour they check.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from destinations.warehouse import WarehouseDestination
from tests.contract.base import sample_events
from tests.destinations.warehouse.conftest import column_kinds, load, make_plugin, select

BASE: dict[str, Any] = {
    "receivedAt": "2026-11-23T10:00:00.123Z",
    "sentAt": "2026-11-23T10:00:00.110Z",
    "timestamp": "2026-11-23T10:00:00.100Z",
    "originalTimestamp": "2026-11-23T10:00:00.050Z",
    "context": {"library": {"name": "analytics.js", "version": "1.0"}, "ip": "10.0.0.1"},
}


def track(message_id: str, event: str = "Order Completed", **properties: Any) -> dict[str, Any]:
    return {
        **copy.deepcopy(BASE),
        "type": "track",
        "messageId": message_id,
        "userId": "u1",
        "anonymousId": "a1",
        "event": event,
        "properties": properties,
    }


def identify(message_id: str, user: str, received_at: str, **traits: Any) -> dict[str, Any]:
    return {
        **copy.deepcopy(BASE),
        "type": "identify",
        "messageId": message_id,
        "userId": user,
        "receivedAt": received_at,
        "traits": traits,
    }


async def count(plugin: WarehouseDestination, table: str) -> int:
    [(rows,)] = await select(plugin, f'SELECT count(*) FROM web."{table}"')
    return int(rows)


# ---------------------------------------------------------------- tables and columns


async def test_every_call_type_lands_in_its_segment_table(warehouse: WarehouseDestination) -> None:
    result, rejected = await load(warehouse, sample_events())
    assert rejected == {}
    for table in ("tracks", "order_completed", "identifies", "users", "pages", "screens"):
        assert await count(warehouse, table) == 1, table
    for table in ("groups", "accounts", "aliases"):
        assert await count(warehouse, table) == 1, table
    assert result.rows["web.tracks"] == 1

    common = {
        "id": "text",
        "received_at": "timestamp",
        "sent_at": "timestamp",
        "timestamp": "timestamp",
        "user_id": "text",
        "context_ip": "text",
        "context_library_name": "text",
        "context_library_version": "text",
        "uuid_ts": "timestamp",
    }
    tracks = await column_kinds(warehouse, "tracks")
    assert common.items() <= tracks.items()
    assert tracks["event"] == tracks["event_text"] == "text"
    assert "revenue" not in tracks  # the tracks table has no properties: the event's table has

    order = await column_kinds(warehouse, "order_completed")
    assert common.items() <= order.items()
    assert order["revenue"] == "float"
    assert order["currency"] == "text"
    assert order["products"] == "text"  # arrays are kept as JSON text
    assert (await column_kinds(warehouse, "identifies"))["email"] == "text"
    assert {"name", "path"} <= set(await column_kinds(warehouse, "pages"))
    assert "name" in await column_kinds(warehouse, "screens")
    assert {"group_id", "name"} <= set(await column_kinds(warehouse, "groups"))
    assert "previous_id" in await column_kinds(warehouse, "aliases")
    # users: latest state per user, keyed by the user id, without anonymous_id.
    users = await column_kinds(warehouse, "users")
    assert {"id", "email", "plan", "received_at", "uuid_ts"} <= set(users)
    assert "anonymous_id" not in users

    [(event, text, user)] = await select(
        warehouse, "SELECT event, event_text, user_id FROM web.tracks"
    )
    assert (event, text, user) == ("order_completed", "Order Completed", "u1")
    [(revenue, products, received)] = await select(
        warehouse, "SELECT revenue, products, received_at FROM web.order_completed"
    )
    assert revenue == 12.5
    assert products == '[{"sku":"a"}]'
    assert received == datetime(2026, 11, 23, 10, 0, 0, 123000, tzinfo=UTC)
    assert await select(warehouse, "SELECT id, email FROM web.users") == [("u1", "u1@example.com")]
    assert await select(warehouse, "SELECT id, name FROM web.accounts") == [("g1", "Acme")]


async def test_nested_objects_flatten_with_underscores_as_segment_documents(
    warehouse: WarehouseDestination,
) -> None:
    event = track("n-1", "Product Viewed", product_id={"sku": "G-32"}, tags=["507f1", "505bd"])
    event["context"]["app"] = {"version": "1.0.0"}
    profile = identify("n-2", "u9", BASE["receivedAt"], address={"street": "6th Street"})
    _, rejected = await load(warehouse, [event, profile])
    assert rejected == {}
    [(sku, tags, version)] = await select(
        warehouse, "SELECT product_id_sku, tags, context_app_version FROM web.product_viewed"
    )
    assert (sku, tags, version) == ("G-32", '["507f1","505bd"]', "1.0.0")
    assert await select(warehouse, "SELECT address_street FROM web.identifies") == [("6th Street",)]


async def test_names_are_snake_case_and_legal_as_segment_makes_them(
    warehouse: WarehouseDestination,
) -> None:
    long_name = "averyLongPropertyName" * 4
    event = track(
        "s-1",
        "Checkout Step 2 Completed",
        accountType="Facebook",
        order=3,
        user_id="spoofed",
        **{long_name: 1, "3dSecure": True},
    )
    _, rejected = await load(warehouse, [event, track("s-2", "Pages")])
    assert rejected == {}
    columns = await column_kinds(warehouse, "checkout_step_2_completed")
    assert columns["account_type"] == "text"
    assert columns["_order"] == "integer"  # a reserved word gets a leading underscore
    assert columns["_3d_secure"] == "boolean"  # so does a leading digit
    assert ("avery_long_property_name" * 4)[:63] in columns  # cut to 63 characters
    # Segment drops a property named like a reserved column: the row keeps the real user id.
    assert await select(warehouse, "SELECT user_id FROM web.checkout_step_2_completed") == [("u1",)]
    # An event named like one of the schema's own tables gets its own, prefixed table.
    assert await count(warehouse, "_pages") == 1
    assert await select(warehouse, "SELECT event FROM web.tracks WHERE id = 's-2'") == [("_pages",)]


# ---------------------------------------------------------------- evolution and types


async def test_a_new_property_adds_a_column(warehouse: WarehouseDestination) -> None:
    await load(warehouse, [track("c-1", total=10)])
    assert "coupon" not in await column_kinds(warehouse, "order_completed")
    _, rejected = await load(warehouse, [track("c-2", total=12, coupon="WINTER")])
    assert rejected == {}
    assert (await column_kinds(warehouse, "order_completed"))["coupon"] == "text"
    rows = await select(warehouse, "SELECT id, total, coupon FROM web.order_completed ORDER BY id")
    assert rows == [("c-1", 10, None), ("c-2", 12, "WINTER")]


async def test_a_new_column_takes_the_type_of_the_most_recent_value_in_its_batch(
    warehouse: WarehouseDestination,
) -> None:
    _, rejected = await load(warehouse, [track("r-1", size="large"), track("r-2", size=3)])
    assert rejected == {}
    assert (await column_kinds(warehouse, "order_completed"))["size"] == "integer"
    rows = await select(warehouse, "SELECT id, size FROM web.order_completed ORDER BY id")
    assert rows == [("r-1", None), ("r-2", 3)]  # "large" cannot be an integer: discarded
    discards = await select(
        warehouse, "SELECT id, table_name, column_name, column_type, value FROM web.discards"
    )
    assert discards == [("r-1", "order_completed", "size", "integer", "large")]


async def test_a_type_conflict_keeps_the_first_type_and_casts(
    warehouse: WarehouseDestination,
) -> None:
    await load(
        warehouse, [track("t-1", amount=10, label="a", paid=True, paid_at="2026-01-01T00:00:00Z")]
    )
    conflicting = [
        track("t-2", amount="12", label=5, paid="false", paid_at="2026-02-01 12:00:00"),
        track("t-3", amount=12.7, label=2.5, paid=1, paid_at="not a time"),
        track("t-4", amount="lots", label=True, paid="maybe", paid_at=7),
    ]
    result, rejected = await load(warehouse, conflicting)
    assert rejected == {}  # a type conflict never fails the load
    assert result.discarded == 4
    kinds = await column_kinds(warehouse, "order_completed")
    assert (kinds["amount"], kinds["label"], kinds["paid"], kinds["paid_at"]) == (
        "integer",
        "text",
        "boolean",
        "timestamp",
    )
    rows = await select(
        warehouse, "SELECT id, amount, label, paid, paid_at FROM web.order_completed ORDER BY id"
    )
    february = datetime(2026, 2, 1, 12, tzinfo=UTC)
    assert rows[1:] == [
        ("t-2", 12, "5", False, february),
        ("t-3", 12, "2.5", True, None),  # a float in an integer column loses its fraction
        ("t-4", None, "true", None, None),
    ]
    discards = await select(
        warehouse, "SELECT id, column_name, value FROM web.discards ORDER BY id, column_name"
    )
    assert discards == [
        ("t-3", "paid_at", "not a time"),
        ("t-4", "amount", "lots"),
        ("t-4", "paid", "maybe"),
        ("t-4", "paid_at", "7"),
    ]


# ---------------------------------------------------------------- idempotence and state


async def test_a_replayed_batch_adds_no_rows(warehouse: WarehouseDestination) -> None:
    batch = [*sample_events(), track("x-1"), track("x-1")]  # and a duplicate inside the batch
    first, _ = await load(warehouse, batch)
    assert first.rows["web.order_completed"] == 2
    replay, rejected = await load(warehouse, batch)
    assert rejected == {}
    assert replay.rows["web.tracks"] == replay.rows["web.order_completed"] == 0
    assert await count(warehouse, "tracks") == 2
    assert await count(warehouse, "identifies") == 1


async def test_users_hold_the_latest_traits_of_each_user(warehouse: WarehouseDestination) -> None:
    await load(
        warehouse,
        [
            identify("i-1", "u1", "2026-11-23T10:00:00Z", plan="free", email="a@x.io"),
            identify("i-2", "u1", "2026-11-23T11:00:00Z", plan="pro"),
            identify("i-3", "u2", "2026-11-23T10:00:00Z", plan="free"),
        ],
    )
    users = await select(
        warehouse, "SELECT id, plan, email, received_at FROM web.users ORDER BY id"
    )
    eleven = datetime(2026, 11, 23, 11, tzinfo=UTC)
    assert users[0] == ("u1", "pro", "a@x.io", eleven)
    # A newer identify in a later load updates the row; an older one arriving late only
    # fills the traits the user did not have.
    await load(warehouse, [identify("i-4", "u2", "2026-11-23T12:00:00Z", plan="team")])
    await load(
        warehouse,
        [identify("i-0", "u1", "2026-11-23T09:00:00Z", plan="trial", company="Initech")],
    )
    users = await select(
        warehouse, "SELECT id, plan, email, company, received_at FROM web.users ORDER BY id"
    )
    assert users[0] == ("u1", "pro", "a@x.io", "Initech", eleven)
    assert users[1][:2] == ("u2", "team")
    assert await count(warehouse, "users") == 2
    assert await count(warehouse, "identifies") == 5  # every call stays in identifies


async def test_accounts_hold_the_latest_traits_of_each_group(
    warehouse: WarehouseDestination,
) -> None:
    def group(message_id: str, received_at: str, **traits: Any) -> dict[str, Any]:
        return {
            **copy.deepcopy(BASE),
            "type": "group",
            "messageId": message_id,
            "userId": "u1",
            "groupId": "g1",
            "receivedAt": received_at,
            "traits": traits,
        }

    await load(warehouse, [group("g-1", "2026-11-23T10:00:00Z", name="Acme", employees=10)])
    await load(warehouse, [group("g-2", "2026-11-23T11:00:00Z", employees=12)])
    accounts = await select(warehouse, "SELECT id, name, employees FROM web.accounts")
    assert accounts == [("g1", "Acme", 12)]
    assert await count(warehouse, "groups") == 2


# ---------------------------------------------------------------- privacy, reading, metrics


async def test_delete_user_removes_every_row_of_that_user(warehouse: WarehouseDestination) -> None:
    other = track("keep-1")
    other["userId"] = "u2"
    alias = {
        **copy.deepcopy(BASE),
        "type": "alias",
        "messageId": "al-1",
        "userId": "u3",
        "previousId": "u1",
    }
    await load(
        warehouse,
        [*sample_events(), track("bad-type", amount="x"), other, alias, track("amount", amount=1)],
    )
    deleted = await warehouse.warehouse.delete_user("u1", warehouse.schemas)
    assert deleted["web.tracks"] == 3
    assert deleted["web.users"] == 1
    assert deleted["web.aliases"] == 2  # its own alias call and the one naming it as previous
    assert "web.accounts" not in deleted  # a group's state is not a user's row
    for table in ("tracks", "order_completed", "identifies", "groups", "discards"):
        rows = await select(warehouse, f"SELECT count(*) FROM web.{table} WHERE user_id = 'u1'")
        assert rows == [(0,)], table
    assert await select(warehouse, "SELECT count(*) FROM web.users WHERE id = 'u1'") == [(0,)]
    assert await select(warehouse, "SELECT user_id FROM web.tracks") == [("u2",)]


async def test_ddl_and_stats_describe_the_current_tables(warehouse: WarehouseDestination) -> None:
    await load(warehouse, [track("d-1", total=3), track("d-2", total=4)])
    statements = await warehouse.warehouse.ddl(warehouse.schemas)
    assert statements[0] == 'CREATE SCHEMA IF NOT EXISTS "web"'
    order = next(s for s in statements if '"web"."order_completed"' in s)
    assert '"total" ' in order and 'PRIMARY KEY ("id")' in order
    stats = {str(s.table): s for s in await warehouse.warehouse.stats(warehouse.schemas)}
    assert stats["web.order_completed"].rows == 2
    assert stats["web.order_completed"].newest == datetime(
        2026, 11, 23, 10, 0, 0, 123000, tzinfo=UTC
    )
    assert stats["web.discards"].rows == 0


async def test_metrics_count_rows_per_table_and_the_last_load(
    backend_settings: dict[str, Any],
) -> None:
    registry = CollectorRegistry()
    plugin = make_plugin(backend_settings, registry=registry)
    await plugin.start()
    try:
        await load(plugin, [track("m-1"), track("m-2"), track("m-3", total="x")])
        await load(plugin, [track("m-1")])
    finally:
        await plugin.stop()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"destination": "wh", **labels})

    assert value("router_warehouse_rows_loaded_total", table="web.order_completed") == 3
    assert value("router_warehouse_rows_loaded_total", table="web.tracks") == 3
    assert value("router_warehouse_load_seconds_count") == 2
    assert value("router_warehouse_loads_total", result="loaded") == 2
    last = value("router_warehouse_last_load_timestamp_seconds")
    assert last is not None and abs(last - datetime.now(UTC).timestamp()) < 60


async def test_a_duckdb_file_named_like_its_schema_still_loads(tmp_path: Path) -> None:
    # DuckDB names a file's catalog after the file: web.duckdb holds catalog "web" and
    # schema "web", so every statement the router runs names the catalog too.
    plugin = make_plugin({"backend": "duckdb", "path": str(tmp_path / "web.duckdb")})
    await plugin.start()
    try:
        _, rejected = await load(plugin, [track("f-1"), track("f-2")])
        assert rejected == {}
        assert await select(plugin, "SELECT count(*) FROM web.web.tracks") == [(2,)]
        stats = await plugin.warehouse.stats(plugin.schemas)
        assert {str(s.table): s.rows for s in stats}["web.tracks"] == 2
    finally:
        await plugin.stop()
